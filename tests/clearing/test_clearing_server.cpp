// The ISO 8583 server on loopback: framing, malformed frames, limits; the daemon keeps serving others.
#include "clearing_fixture.hpp"

#include <coconut/clearing/scheduling.hpp>
#include <coconut/clearing/server.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <thread>

using namespace clearing_test;
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// The daemon with one ISO 8583 listener; its destructor drains as coconut-clearingd does: the writer
// finishes and drops its requests (each holds its session) while the io_context the sessions' sockets
// and timers belong to still exists.
struct ServerRig {
    Rig rig;
    asio::io_context& io;
    Server* server;

    explicit ServerRig(ServerOptions options = {}, EngineOptions engine_options = {})
        : rig(std::move(engine_options), {std::move(options)}), io(rig.daemon->io()), server(&rig.daemon->terminal_server()) {}
};

struct Client {
    asio::io_context io;
    tcp::socket socket{io};
    explicit Client(std::uint16_t port) { socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port)); }

    void send_raw(ByteView bytes) { asio::write(socket, asio::buffer(bytes.data(), bytes.size())); }
    void send(const Message& m) {
        auto encoded = iso8583::encode(m, iso8583::coconut_dictionary());
        REQUIRE(encoded.ok());
        send_raw(*iso8583::frame(*encoded));
    }
    // The next answer, or nullopt when the server closed the connection.
    std::optional<Message> receive() {
        std::array<std::uint8_t, 2> header{};
        boost::system::error_code ec;
        asio::read(socket, asio::buffer(header), ec);
        if (ec) return std::nullopt;
        Bytes body((header[0] << 8) | header[1]);
        asio::read(socket, asio::buffer(body), ec);
        if (ec) return std::nullopt;
        auto m = iso8583::parse(body, iso8583::coconut_dictionary());
        REQUIRE(m.ok());
        return *m;
    }
};

}  // namespace

TEST_CASE("server: sign-on and an upload over TCP, answers matched by STAN") {
    ServerRig s;
    Client c(s.server->port());
    c.send(network_message(1, 1));
    auto signed_on = c.receive();
    REQUIRE(signed_on);
    CHECK(*signed_on->get(39) == "00");
    // Many in flight on one connection.
    std::uint32_t balance = 5000;
    for (std::uint16_t atc = 0; atc < 20; ++atc) {
        Tap tap;
        tap.atc = atc;
        tap.amount_fen = 100;
        tap.balance_before_fen = balance;
        balance -= 100;
        c.send(upload_message(tap, 100 + atc));
    }
    std::set<std::string> stans;
    for (int i = 0; i < 20; ++i) {
        auto answer = c.receive();
        REQUIRE(answer);
        CHECK(*answer->get(39) == "00");
        stans.insert(std::string(*answer->get(11)));
    }
    CHECK(stans.size() == 20);
    CHECK(s.rig.payable(bus_operator) == 2000);
}

TEST_CASE("server: a non-numeric numeric field gets 30 and the connection keeps working") {
    ServerRig s;
    Client c(s.server->port());
    c.send(network_message(1, 1));
    REQUIRE(c.receive());
    auto bytes = iso8583::encode(upload_message(Tap{}, 9), iso8583::coconut_dictionary());
    REQUIRE(bytes.ok());
    Bytes broken = *bytes;
    broken[4 + 8 + 18 + 6 + 3] = 'A';
    c.send_raw(*iso8583::frame(broken));
    auto answer = c.receive();
    REQUIRE(answer);
    CHECK(answer->mti() == "0330");
    CHECK(*answer->get(39) == "30");
    CHECK(*answer->get(11) == "000009");
    c.send(upload_message(Tap{}, 10));
    auto booked = c.receive();
    REQUIRE(booked);
    CHECK(*booked->get(39) == "00");
    CHECK(s.server->stats().format_errors == 1);
}

TEST_CASE("server: bad bitmap, unknown field, truncated message: 30 when 11 and 41 are readable, else closed") {
    ServerRig s;
    SUBCASE("bit 65 set (tertiary bitmap): closed, nothing readable past the bitmap") {
        Client c(s.server->port());
        Bytes m = {'0', '8', '0', '0', 0x80, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0};
        c.send_raw(*iso8583::frame(m));
        CHECK_FALSE(c.receive().has_value());
    }
    SUBCASE("a field outside our profile after 41: 30") {
        Message m = network_message(1, 5);
        m.set(43, "SOME MERCHANT NAME AND PLACE            ");
        auto bytes = iso8583::encode(m, iso8583::iso87_dictionary());
        REQUIRE(bytes.ok());
        Client c(s.server->port());
        c.send_raw(*iso8583::frame(*bytes));
        auto answer = c.receive();
        REQUIRE(answer);
        CHECK(*answer->get(39) == "30");
        CHECK(*answer->get(11) == "000005");
    }
    SUBCASE("truncated inside field 11: closed") {
        auto bytes = iso8583::encode(network_message(1, 5), iso8583::coconut_dictionary());
        Client c(s.server->port());
        c.send_raw(*iso8583::frame(ByteView(*bytes).first(4 + 16 + 10 + 3)));
        CHECK_FALSE(c.receive().has_value());
    }
    SUBCASE("a response MTI from a terminal: closed") {
        Message m = network_message(1, 5);
        m.set_mti("0810");
        Client c(s.server->port());
        c.send(m);
        CHECK_FALSE(c.receive().has_value());
    }
}

TEST_CASE("server: an oversize or zero-length frame header closes that connection only") {
    ServerRig s;
    Client good(s.server->port());
    good.send(network_message(1, 1));
    REQUIRE(good.receive());
    {
        Client bad(s.server->port());
        const std::uint8_t header[] = {0xFF, 0xFF, '0', '8'};
        bad.send_raw(header);
        CHECK_FALSE(bad.receive().has_value());
    }
    {
        Client bad(s.server->port());
        const std::uint8_t header[] = {0x00, 0x00};
        bad.send_raw(header);
        CHECK_FALSE(bad.receive().has_value());
    }
    good.send(network_message(301, 2));
    auto echo = good.receive();
    REQUIRE(echo);
    CHECK(*echo->get(39) == "00");
    CHECK(s.server->stats().closed_bad_frame == 2);
}

TEST_CASE("server: connections above the limit are closed at once; a stalled frame times out") {
    ServerOptions options;
    options.connections_max = 2;
    options.frame_timeout = std::chrono::milliseconds(200);
    ServerRig s(options);
    Client a(s.server->port()), b(s.server->port());
    a.send(network_message(301, 1));
    b.send(network_message(301, 1));
    REQUIRE(a.receive());
    REQUIRE(b.receive());
    Client c(s.server->port());
    CHECK_FALSE(c.receive().has_value());
    CHECK(s.server->stats().connections_refused == 1);
    // Half a frame, then silence: closed after frame_timeout.
    const std::uint8_t partial[] = {0x00, 0x20, '0', '8'};
    a.send_raw(partial);
    CHECK_FALSE(a.receive().has_value());
    CHECK(s.server->stats().timeouts == 1);
}

TEST_CASE("server: the sign-on deadline closes a connection that never signs on, unless the engine requires no sign-on") {
    ServerOptions options;
    options.sign_on_timeout = std::chrono::milliseconds(300);
    SUBCASE("sign-on required: an echo does not keep the connection past the deadline") {
        ServerRig s(options);
        Client c(s.server->port());
        c.send(network_message(301, 1));
        REQUIRE(c.receive());
        std::this_thread::sleep_for(std::chrono::milliseconds(600));
        CHECK_FALSE(c.receive().has_value());
        CHECK(s.server->stats().sign_on_timeouts == 1);
    }
    SUBCASE("no sign-on required (serve --allow-without-sign-on): uploads past the deadline are answered") {
        EngineOptions engine_options;
        engine_options.require_sign_on = false;
        ServerRig s(options, engine_options);
        Client c(s.server->port());
        std::uint32_t balance = 5000;
        for (std::uint16_t atc = 0; atc < 3; ++atc) {
            if (atc > 0) std::this_thread::sleep_for(std::chrono::milliseconds(400));  // 800 ms in all: past the deadline
            Tap tap;
            tap.atc = atc;
            tap.amount_fen = 100;
            tap.balance_before_fen = balance;
            balance -= 100;
            c.send(upload_message(tap, 100 + atc));
            auto answer = c.receive();
            REQUIRE(answer);
            CHECK(*answer->get(39) == "00");
        }
        CHECK(s.server->stats().sign_on_timeouts == 0);
        CHECK(s.rig.payable(bus_operator) == 300);
    }
}

TEST_CASE("server: shutdown answers the requests in hand before closing") {
    auto s = std::make_unique<ServerRig>();
    Client c(s->server->port());
    c.send(network_message(1, 1));
    REQUIRE(c.receive());
    std::uint32_t balance = 5000;
    for (std::uint16_t atc = 0; atc < 10; ++atc) {
        Tap tap;
        tap.atc = atc;
        tap.amount_fen = 100;
        tap.balance_before_fen = balance;
        balance -= 100;
        c.send(upload_message(tap, 100 + atc));
    }
    // Wait until all ten were read by the server, then shut down.
    for (int i = 0; i < 200 && s->rig.engine->stats().requests < 11; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    REQUIRE(s->rig.engine->stats().requests == 11);
    std::promise<void> drained;
    asio::post(s->io, [&] { s->server->shutdown([&] { drained.set_value(); }); });
    int answered = 0;
    while (auto answer = c.receive()) {
        CHECK(*answer->get(39) == "00");
        ++answered;
    }
    CHECK(answered == 10);
    CHECK(drained.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready);
    CHECK(s->rig.payable(bus_operator) == 1000);
}

// ---- scheduling: the ledger writer's own CPU (serve --writer-cpu) ----------------------------------------

namespace {
std::vector<int> affinity_of(std::thread::native_handle_type thread) {
    cpu_set_t set;
    CPU_ZERO(&set);
    REQUIRE(::pthread_getaffinity_np(thread, sizeof set, &set) == 0);
    std::vector<int> out;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (CPU_ISSET(cpu, &set)) out.push_back(cpu);
    }
    return out;
}
}  // namespace

TEST_CASE("writer CPU layout: off, auto and a CPU number against the allowed CPUs; bad values name what is wrong") {
    const std::vector<int> allowed = allowed_cpus();
    REQUIRE_FALSE(allowed.empty());
    CHECK(allowed == affinity_of(::pthread_self()));

    auto off = plan_cpu_layout("off");
    REQUIRE(off.ok());
    CHECK_FALSE(off->has_value());
    REQUIRE(plan_cpu_layout(writer_cpu_default).ok());

    for (std::string_view bad : {"", "on", "-1", "1x", " 1", "0x1", "auto "}) {
        auto planned = plan_cpu_layout(bad);
        REQUIRE_MESSAGE(!planned.ok(), bad);
        CHECK(planned.error().code == ErrorCode::bad_input);
        CHECK(planned.error().message.find("not off, auto or a CPU number") != std::string::npos);
    }
    auto absent = plan_cpu_layout(std::to_string(CPU_SETSIZE - 1));
    REQUIRE_FALSE(absent.ok());
    CHECK(absent.error().message ==
          "--writer-cpu: CPU " + std::to_string(CPU_SETSIZE - 1) + " is not one this process may use (" + format_cpus(allowed) + ")");

    // Restricted to one CPU: auto plans nothing, and that CPU cannot be the writer's alone.
    std::thread([&] {
        REQUIRE(pin_thread(::pthread_self(), std::array{allowed.front()}).ok());
        auto automatic = plan_cpu_layout("auto");
        REQUIRE(automatic.ok());
        CHECK_FALSE(automatic->has_value());
        auto only = plan_cpu_layout(std::to_string(allowed.front()));
        REQUIRE_FALSE(only.ok());
        CHECK(only.error().message.find("the only one") != std::string::npos);
    }).join();

    if (allowed.size() >= 2) {
        auto automatic = plan_cpu_layout("auto");
        REQUIRE(automatic.ok());
        REQUIRE(automatic->has_value());
        CHECK((*automatic)->writer == allowed.back());
        CHECK((*automatic)->others == std::vector<int>(allowed.begin(), allowed.end() - 1));
        auto first = plan_cpu_layout(std::to_string(allowed.front()));
        REQUIRE(first.ok());
        CHECK((**first).writer == allowed.front());
        CHECK((**first).others == std::vector<int>(allowed.begin() + 1, allowed.end()));
    }
}

TEST_CASE("writer CPU layout: CPU lists print as ranges") {
    CHECK(format_cpus(std::vector<int>{}).empty());
    CHECK(format_cpus(std::vector<int>{3}) == "3");
    CHECK(format_cpus(std::vector<int>{0, 1}) == "0-1");
    CHECK(format_cpus(std::vector<int>{0, 1, 2, 5, 7, 8}) == "0-2,5,7-8");
}

TEST_CASE("writer CPU layout: pin_thread moves only that thread; the pinned ledger writer still commits") {
    const std::vector<int> allowed = allowed_cpus();
    const std::vector<int> before = affinity_of(::pthread_self());
    std::thread([&] {
        REQUIRE(pin_thread(::pthread_self(), std::array{allowed.back()}).ok());
        CHECK(affinity_of(::pthread_self()) == std::vector<int>{allowed.back()});
    }).join();
    CHECK(affinity_of(::pthread_self()) == before);
    auto out_of_range = pin_thread(::pthread_self(), std::array{CPU_SETSIZE});
    REQUIRE_FALSE(out_of_range.ok());
    CHECK(out_of_range.error().message == "CPU " + std::to_string(CPU_SETSIZE) + " is out of range");
    CHECK(affinity_of(::pthread_self()) == before);

    Rig rig;
    ledger::Writer& writer = *rig.writer;
    REQUIRE(pin_thread(writer.native_handle(), std::array{allowed.back()}).ok());
    CHECK(affinity_of(writer.native_handle()) == std::vector<int>{allowed.back()});
    ledger::Account account;
    account.id = ledger::make_id(990001);
    account.ledger = ledgers::purse;
    account.code = 1;
    auto reply = writer.submit({account}).get();
    REQUIRE(reply.ok());
    CHECK(reply->front().code == ledger::ResultCode::ok);
    // Named once running (it has answered): what top -H and /proc/PID/task/TID/comm show.
    char name[16] = {};
    REQUIRE(::pthread_getname_np(writer.native_handle(), name, sizeof name) == 0);
    CHECK(std::string_view(name) == "ledger-writer");
}

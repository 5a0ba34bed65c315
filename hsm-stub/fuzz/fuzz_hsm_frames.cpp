// libFuzzer target for the HSM's request frames on the server side (protocol.hpp, server.hpp): the
// length prefix, the request envelope, the client binding, the MAC check, the sequence rule, the
// command dispatch and every request payload decoder — through a real coconut::hsm::Server on loopback
// (the per-connection logic lives in the server's connection object; a socket is its only door).
//
// Input: a list of operations on one connection, after the server's hello:
//   op % 4 = 0  raw bytes: length (2, BE, mod 2048) ‖ bytes, sent as they are
//   op % 4 = 1  an authentic request from "issuance" (every permission): command (1) ‖ payload length (2)
//               ‖ payload, with the connection's nonce and the next sequence number
//   op % 4 = 2  the same from "clearing" (TAC verification only)
//   op % 4 = 3  an authentic request from "issuance" with the sequence number given: seq (8) ‖ command ‖ …
// Then the client half-closes and reads until the server closes.
// Properties: nothing crashes; the server always closes after the client's half-close (no hang, within
// close_wait_max); every frame it sends is a response that authenticates under the connection's client key
// or a fatal notice.
#include <coconut/hsm/audit.hpp>
#include <coconut/hsm/protocol.hpp>
#include <coconut/hsm/server.hpp>

#include <fuzz_support.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>

#include <thread>

namespace {

using namespace coconut;
using namespace coconut::hsm;

constexpr std::string_view target = "fuzz_hsm_frames";
constexpr std::size_t raw_bytes_max = 2048;
constexpr int close_wait_max_s = 5;
// The audit log gains a line per request; emptied this often so a long run does not fill /dev/shm.
constexpr std::uint64_t audit_truncate_every = 4096;

crypto::Key16 key(std::uint8_t seed) {
    Bytes k(16);
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(seed + 17 * i);
    return crypto::Key16(k);
}

struct HsmProcess {
    fuzz::ScratchDir dir{target};
    std::shared_ptr<const KeyStore> store;
    std::unique_ptr<AuditLog> audit;
    boost::asio::io_context io;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work = boost::asio::make_work_guard(io);
    std::unique_ptr<Server> server;
    std::thread thread;
    std::uint16_t port = 0;
    std::map<std::string, ClientKey> clients;
    std::uint64_t inputs = 0;

    HsmProcess() {
        const auto path = dir / "store";
        if (!KeyStore::init(path)) fuzz::fail(target, "store init");
        auto opened = KeyStore::open(path);
        if (!opened) fuzz::fail(target, "store open");
        KeyStore& s = opened.value();
        std::uint8_t seed = 1;
        for (const auto& [label, usage] :
             {std::pair{"mk-purchase", KeyUsage::purchase}, std::pair{"mk-load", KeyUsage::load}, std::pair{"mk-tac", KeyUsage::tac},
              std::pair{"mk-internal-auth", KeyUsage::internal_auth}, std::pair{"mk-maintenance", KeyUsage::maintenance},
              std::pair{"mk-ssse-auth", KeyUsage::ssse_auth}, std::pair{"kek-issuance", KeyUsage::transport}}) {
            if (!s.add_key(label, 1, KeyType::tdes2, usage, key(seed++))) fuzz::fail(target, "add key");
        }
        for (const auto& [id, permissions] :
             {std::pair{"issuance", std::uint32_t{permit_all}}, std::pair{"clearing", std::uint32_t{permit_tac}}}) {
            auto k = s.add_client(id, permissions);
            if (!k) fuzz::fail(target, "add client");
            clients.emplace(id, k.value());
        }
        if (!s.save()) fuzz::fail(target, "store save");
        auto log = AuditLog::open(s.paths().audit_log(), s.audit_key());
        if (!log) fuzz::fail(target, "audit log");
        audit = std::move(log).value();
        store = std::make_shared<const KeyStore>(std::move(s));
        ServerConfig config;
        config.listen = {"127.0.0.1", 0};
        server = std::make_unique<Server>(io, store, *audit, config);
        auto bound = server->start();
        if (!bound) fuzz::fail(target, "server start");
        port = bound.value();
        thread = std::thread([this] { io.run(); });
    }
    ~HsmProcess() {
        server->stop();
        work.reset();
        io.stop();
        thread.join();
    }

    // Empties the audit log under its flock: the log sees another size and starts a new chain.
    void truncate_audit() {
        const int fd = ::open(store->paths().audit_log().c_str(), O_WRONLY);
        if (fd < 0) return;
        ::flock(fd, LOCK_EX);
        (void)::ftruncate(fd, 0);
        ::flock(fd, LOCK_UN);
        ::close(fd);
    }
};

HsmProcess& hsm_in_process() {
    static HsmProcess process;
    return process;
}

class Link {
public:
    explicit Link(std::uint16_t port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        timeval timeout{close_wait_max_s, 0};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
        // From 127.0.0.2 … 127.0.0.251 in turn: each closed connection keeps its source port in TIME_WAIT for
        // a minute, and at a few hundred connections a second one source address runs out of ports.
        static std::uint32_t next_source = 0;
        sockaddr_in source{};
        source.sin_family = AF_INET;
        source.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 + next_source++ % 250);
        if (::bind(fd_, reinterpret_cast<sockaddr*>(&source), sizeof source) != 0) fuzz::fail(target, "bind");
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(port);
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        while (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
            if (errno != EINTR) fuzz::fail(target, std::string("connect: ") + std::strerror(errno));
        }
    }
    ~Link() { ::close(fd_); }
    Link(const Link&) = delete;
    Link& operator=(const Link&) = delete;

    // False when the server has closed (EPIPE / reset): the rest of the input is moot.
    bool send(ByteView bytes) {
        std::size_t done = 0;
        while (done < bytes.size()) {
            const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;  // libFuzzer's timeout alarm
            if (n <= 0) return false;
            done += static_cast<std::size_t>(n);
        }
        return true;
    }
    // Exactly n bytes, or nullopt at the end of the stream; a timeout is a hang.
    std::optional<Bytes> receive(std::size_t n) {
        Bytes out(n);
        std::size_t done = 0;
        while (done < n) {
            const ssize_t got = ::recv(fd_, out.data() + done, n - done, 0);
            if (got < 0 && errno == EINTR) continue;  // libFuzzer's timeout alarm
            if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) fuzz::fail(target, "the server neither answered nor closed");
            if (got < 0) last_error_ = errno;
            if (got <= 0) return std::nullopt;
            done += static_cast<std::size_t>(got);
        }
        return out;
    }
    std::optional<Bytes> frame() {
        auto prefix = receive(wire::length_prefix_bytes);
        if (!prefix) return std::nullopt;
        const std::uint32_t length = read_be32(*prefix);
        if (length == 0 || length > wire::max_frame_bytes) fuzz::fail(target, "the server sent a frame outside the protocol's bounds");
        auto body = receive(length);
        if (!body) fuzz::fail(target, "the server closed mid-frame");
        return body;
    }
    void half_close() { ::shutdown(fd_, SHUT_WR); }
    // What ended the stream: 0 for the server's close, else the errno of the failed read.
    int last_error() const { return last_error_; }

private:
    int fd_ = -1;
    int last_error_ = 0;
};

Bytes request_op(fuzz::Reader& input, const ClientKey& key, const wire::Nonce& nonce, std::uint64_t seq, std::string_view client) {
    const std::uint8_t command = input.byte();
    const ByteView payload = input.take(input.be16());
    return wire::encode_request(key, nonce, seq, client, command, payload);
}

// Seeds: each command with a payload its encoder wrote, as issuance; and the rule breakers.
void write_seeds(const std::filesystem::path& dir) {
    const auto op = [](std::uint8_t kind, wire::Command command, ByteView payload) {
        Bytes b{kind, static_cast<std::uint8_t>(command)};
        append_be(b, payload.size(), 2);
        append(b, payload);
        return b;
    };
    CardIdentity card{{0x46, 0, 0, 0, 0, 0, 0, 1}, {0x46, 0x01, 0, 0, 0, 0, 0x11, 0x11, 0x22, 0x22}};
    const KeyRef tac{"mk-tac", 1};
    PurchaseTac item;
    item.card = card;
    item.key_version = 1;
    item.amount_fen = 250;
    item.type = 0x06;
    item.terminal_id = {0x46, 0x01, 0, 0, 0, 0x42};
    item.terminal_serial = 7;
    const Bytes tacs = wire::encode(wire::PurchaseTacBatch{"mk-tac", {item, item}});
    const auto seed = [&](std::string_view name, const Bytes& input) { fuzz::write_seed(dir, name, input); };
    seed("key-info", op(1, wire::Command::key_info, wire::encode(tac)));
    seed("derive-card-keys", op(1, wire::Command::derive_card_keys,
                                wire::encode(wire::DeriveCardKeys{card, {"kek-issuance", 1}, {{"mk-purchase", 1}, {"mk-load", 1}, tac}})));
    seed("export-issuer-key", op(1, wire::Command::export_issuer_key,
                                 wire::encode(wire::ExportIssuerKey{card.issuer_id, {"mk-purchase", 1}, {"kek-issuance", 1}})));
    seed("verify-tacs-clearing", op(2, wire::Command::verify_purchase_tacs, tacs));
    LoadRequest load;
    load.card = card;
    load.key = {"mk-load", 1};
    load.amount_fen = 1000;
    seed("load-mac2", op(1, wire::Command::load_mac2, wire::encode(load)));
    LoadTac load_tac;
    load_tac.card = card;
    load_tac.key = tac;
    seed("verify-load-tac", op(1, wire::Command::verify_load_tac, wire::encode(load_tac)));
    InternalAuth auth;
    auth.card = card;
    auth.key = {"mk-ssse-auth", 1};
    seed("internal-auth", op(1, wire::Command::verify_internal_auth, wire::encode(auth)));
    seed("ca-certificate", op(1, wire::Command::ca_certificate, {}));
    Bytes two = op(2, wire::Command::verify_purchase_tacs, tacs);
    append(two, op(2, wire::Command::key_info, wire::encode(tac)));  // not permitted: an error answer
    seed("clearing-two-requests", two);
    Bytes replayed = op(1, wire::Command::key_info, wire::encode(tac));
    Bytes again = op(1, wire::Command::key_info, wire::encode(tac));
    again[0] = 3;
    const Bytes seq_one = be_bytes(1, 8);
    again.insert(again.begin() + 1, seq_one.begin(), seq_one.end());  // sequence 1 again: a replay
    append(replayed, again);
    seed("replayed-sequence", replayed);
    seed("raw-short-frame", Bytes{0, 0, 8, 0, 0, 0, 4, 1, 2, 9, 9});
    seed("raw-oversized-length", Bytes{0, 0, 4, 0xFF, 0xFF, 0xFF, 0xFF});
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    fuzz::write_seeds_if_requested(write_seeds);
    hsm_in_process();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    HsmProcess& server = hsm_in_process();
    if (++server.inputs % audit_truncate_every == 0) server.truncate_audit();
    Link link(server.port);
    auto hello_body = link.frame();
    if (!hello_body) fuzz::fail(target, std::string("no hello: ") + (link.last_error() ? std::strerror(link.last_error()) : "closed"));
    auto hello = wire::decode_hello(*hello_body);
    if (!hello) fuzz::fail(target, "a hello that does not decode");
    const wire::Nonce nonce = hello->nonce;

    fuzz::Reader input({data, size});
    std::uint64_t seq = 0;
    std::optional<std::string> bound;  // the client of the first authentic request
    bool open = true;
    while (open && !input.empty()) {
        const std::uint8_t op = input.byte() % 4;
        Bytes bytes;
        if (op == 0) {
            const ByteView raw = input.take(input.be16() % raw_bytes_max);
            bytes.assign(raw.begin(), raw.end());
        } else {
            const std::string client = op == 2 ? "clearing" : "issuance";
            if (op == 3) {
                const ByteView given = input.take(8);
                seq = given.size() == 8 ? read_be(given) : seq + 1;
            } else {
                ++seq;
            }
            if (!bound) bound = client;
            bytes = request_op(input, server.clients.at(client), nonce, seq, client);
        }
        open = link.send(bytes);
    }
    link.half_close();
    while (auto body = link.frame()) {
        if (body->size() >= 2 && (*body)[1] == static_cast<std::uint8_t>(wire::FrameKind::fatal)) continue;
        if (!bound) fuzz::fail(target, "a response on a connection no client bound");
        auto response = wire::decode_response(server.clients.at(*bound), nonce, *body);
        if (!response) fuzz::fail(target, "a response that does not authenticate: " + response.error().message);
    }
    return 0;
}

// A scripted clearing host for the SDK's online flows: a TCP listener on 127.0.0.1 (ephemeral port) that
// parses each ISO 8583 request and answers what the test's handler returns — or nothing, to make the
// client time out. Connections are served one at a time, in order (the client has one).
#pragma once

#include <coconut/iso8583/card_data.hpp>
#include <coconut/iso8583/iso8583.hpp>

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace sdk_test {

using coconut::iso8583::Message;

// The challenge this host hands out for 0800 70 = 201 (a real host's is single-use and tagged).
inline constexpr coconut::iso8583::HostChallenge fake_challenge = {0xC0, 0xC0, 0x0A, 0x55, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

// The answer a real host gives: the response MTI, 11 and 41 echoed, 39 set; an approval of a record the
// terminal queues (0320, a 0220 load confirmation) names it with DF10 (ISO8583.md §4.8), a challenge
// request gets fake_challenge.
inline Message reply(const Message& request, std::string_view code) {
    namespace iso = coconut::iso8583;
    std::string mti = request.mti();
    mti[2] = static_cast<char>(mti[2] + 1);
    mti[3] = '0';
    Message m(mti);
    for (int field : {2, 3, 4, 11, 41, 60, 70}) {
        if (auto v = request.get(field)) m.set(field, *v);
    }
    m.set(39, code);
    if (code != "00") return m;
    const auto amount = static_cast<std::uint32_t>(request.get_number(4).value_or(0));
    if (request.mti().starts_with("032")) {
        auto t = iso::parse_purse_transaction(request.get(62).value_or(""));
        REQUIRE(t.ok());
        m.set(62, iso::encode_record_digest(iso::purchase_digest(*t, amount)));
    } else if (request.mti().starts_with("022") && request.get(3) != "003000" && !iso::is_cash_refund(request.get(62).value_or(""))) {
        // A credit's confirmation (210000, 280000, 200000): the load confirmation's digest.
        auto c = iso::parse_load_confirmation(request.get(62).value_or(""));
        REQUIRE(c.ok());
        m.set(62, iso::encode_record_digest(iso::load_confirmation_digest(*c, amount)));
    } else if (request.mti().starts_with("080") && request.get(70) == "201") {
        auto card = iso::parse_challenge_request(request.get(62).value_or(""));
        REQUIRE(card.ok());
        m.set(62, iso::encode_challenge_answer({card->asn, fake_challenge}));
    }
    return m;
}

class FakeHost {
public:
    using Handler = std::function<std::optional<Message>(const Message&)>;

    explicit FakeHost(Handler handler) : handler_(std::move(handler)) {
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(listen_fd_ >= 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
        REQUIRE(::listen(listen_fd_, 8) == 0);
        socklen_t size = sizeof address;
        REQUIRE(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &size) == 0);
        port_ = ntohs(address.sin_port);
        thread_ = std::thread([this] { serve(); });
    }
    ~FakeHost() {
        stop_ = true;
        thread_.join();
        ::close(listen_fd_);
    }
    FakeHost(const FakeHost&) = delete;
    FakeHost& operator=(const FakeHost&) = delete;

    std::uint16_t port() const { return port_; }
    std::vector<Message> received() const {
        std::lock_guard lock(mutex_);
        return received_;
    }
    std::vector<Message> received(std::string_view mti) const {
        std::vector<Message> out;
        for (const auto& m : received())
            if (m.mti() == mti) out.push_back(m);
        return out;
    }
    void set_handler(Handler handler) {
        std::lock_guard lock(mutex_);
        handler_ = std::move(handler);
    }

private:
    // Waits up to 50 ms for `fd` to be readable (so the thread notices stop_).
    static bool readable(int fd) {
        pollfd p{fd, POLLIN, 0};
        return ::poll(&p, 1, 50) > 0;
    }
    static bool read_exact(int fd, std::uint8_t* out, std::size_t size, const std::atomic<bool>& stop) {
        std::size_t done = 0;
        while (done < size) {
            if (stop) return false;
            if (!readable(fd)) continue;
            const ssize_t n = ::read(fd, out + done, size - done);
            if (n <= 0) return false;
            done += static_cast<std::size_t>(n);
        }
        return true;
    }

    void serve() {
        while (!stop_) {
            if (!readable(listen_fd_)) continue;
            const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) continue;
            serve_connection(fd);
            ::close(fd);
        }
    }

    void serve_connection(int fd) {
        std::vector<std::uint8_t> buffer(coconut::iso8583::frame_size_max);
        for (;;) {
            if (!read_exact(fd, buffer.data(), 2, stop_)) return;
            const std::size_t size = (std::size_t{buffer[0]} << 8) | buffer[1];
            if (size == 0 || size > coconut::iso8583::message_size_max) return;
            if (!read_exact(fd, buffer.data(), size, stop_)) return;
            auto parsed = coconut::iso8583::parse(coconut::ByteView(buffer.data(), size), coconut::iso8583::coconut_dictionary());
            if (!parsed) return;
            Handler handler;
            {
                std::lock_guard lock(mutex_);
                received_.push_back(*parsed);
                handler = handler_;
            }
            const std::optional<Message> answer = handler(*parsed);
            if (!answer) continue;  // silence: the client times out
            auto encoded = coconut::iso8583::encode(*answer, coconut::iso8583::coconut_dictionary());
            if (!encoded) return;  // the test's handler built a bad answer: the client sees a closed link
            auto framed = coconut::iso8583::frame(*encoded);
            if (::write(fd, framed->data(), framed->size()) != static_cast<ssize_t>(framed->size())) return;
        }
    }

    Handler handler_;
    int listen_fd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    mutable std::mutex mutex_;
    std::vector<Message> received_;
    std::thread thread_;
};

}  // namespace sdk_test

// Private: the byte stream under ClearingClient — plain TCP, or mutual TLS over it (coconut::tls) — with
// the read/write members of an Asio stream, so the client's framing code reads and writes it like a
// socket. One connection at a time: reopen() starts a new one (a TLS stream cannot be reused after a
// close; the context's session cache carries the session over, so the new handshake resumes).
#pragma once

#include <coconut/tls/tls.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>

#include <memory>
#include <optional>
#include <string>

namespace coconut::sdk::detail {

class ClearingLink {
public:
    using executor_type = boost::asio::ip::tcp::socket::executor_type;
    using TlsStream = boost::asio::ssl::stream<boost::asio::ip::tcp::socket>;

    explicit ClearingLink(boost::asio::io_context& io) : io_(io), plain_(io) {}

    // TLS from now on: every connection verifies the server against the context's CA and shows its
    // certificate.
    void use_tls(std::shared_ptr<tls::ClientContext> context) { context_ = std::move(context); }
    bool tls() const { return context_ != nullptr; }

    // Closes the current connection and returns the TCP socket of a new one to connect; with TLS the
    // stream is prepared to check `server_host` and to offer the cached session.
    Result<boost::asio::ip::tcp::socket*, std::string> reopen(const std::string& server_host) {
        boost::system::error_code ignored;
        close(ignored);
        if (!context_) {
            plain_ = boost::asio::ip::tcp::socket(io_);
            return &plain_;
        }
        tls_ = std::make_unique<TlsStream>(io_, context_->context());
        if (auto prepared = context_->prepare(tls_->native_handle(), server_host); !prepared)
            return Unexpected<std::string>{prepared.error().message};
        return &tls_->next_layer();
    }

    // After the TCP connect, with TLS: the client handshake.
    template <class Handler>
    void async_handshake(Handler&& handler) {
        tls_->async_handshake(boost::asio::ssl::stream_base::client, std::forward<Handler>(handler));
    }
    bool resumed() const { return tls_ && tls::ClientContext::resumed(tls_->native_handle()); }

    boost::asio::ip::tcp::socket& lowest_layer() { return tls_ ? tls_->next_layer() : plain_; }
    bool is_open() { return lowest_layer().is_open(); }
    void close(boost::system::error_code& ec) { lowest_layer().close(ec); }
    executor_type get_executor() { return lowest_layer().get_executor(); }

    // AsyncReadStream / SyncWriteStream: asio::async_read and asio::write work on the link.
    template <class MutableBuffers, class Handler>
    void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
        if (tls_) {
            tls_->async_read_some(buffers, std::forward<Handler>(handler));
        } else {
            plain_.async_read_some(buffers, std::forward<Handler>(handler));
        }
    }
    template <class ConstBuffers>
    std::size_t write_some(const ConstBuffers& buffers, boost::system::error_code& ec) {
        return tls_ ? tls_->write_some(buffers, ec) : plain_.write_some(buffers, ec);
    }

private:
    boost::asio::io_context& io_;
    std::shared_ptr<tls::ClientContext> context_;
    boost::asio::ip::tcp::socket plain_;
    std::unique_ptr<TlsStream> tls_;
};

}  // namespace coconut::sdk::detail

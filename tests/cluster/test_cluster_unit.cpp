// The NATS layer's pieces that need no server: the lease value, option checks, an absent server.
#include <coconut/cluster/connection.hpp>
#include <coconut/cluster/lease.hpp>
#include <coconut/cluster/nats_server_env.hpp>

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

using namespace coconut::cluster;

TEST_CASE("the lease value is one JSON object with node and address, and parses back") {
    const LeaseValue value{"clearing-2", "10.1.0.2:8583"};
    const std::string text = lease_value(value);
    CHECK(text == R"({"address":"10.1.0.2:8583","node":"clearing-2"})");
    CHECK(parse_lease_value(text) == value);
}

TEST_CASE("a lease value that is not exactly {node, address} strings parses to nothing") {
    CHECK_FALSE(parse_lease_value("").has_value());
    CHECK_FALSE(parse_lease_value("clearing-2").has_value());
    CHECK_FALSE(parse_lease_value(R"({"node":"a"})").has_value());
    CHECK_FALSE(parse_lease_value(R"({"node":"a","address":7})").has_value());
    CHECK_FALSE(parse_lease_value(R"({"node":"a","address":"b","extra":1})").has_value());
    CHECK_FALSE(parse_lease_value(R"(["a","b"])").has_value());
}

TEST_CASE("nats-servers sharing a machine get their share of the CPUs and the collector setting") {
    using Env = std::vector<std::string>;
    CHECK(shared_machine_nats_env(2, 3) == Env{"GOMAXPROCS=1", "GOGC=1000", "GOMEMLIMIT=512MiB"});
    CHECK(shared_machine_nats_env(8, 3) == Env{"GOMAXPROCS=2", "GOGC=1000", "GOMEMLIMIT=512MiB"});
    CHECK(shared_machine_nats_env(6, 1).front() == "GOMAXPROCS=6");
    CHECK(shared_machine_nats_env(4, 0).front() == "GOMAXPROCS=4");  // no servers: not a division by 0
}

TEST_CASE("options that cannot work are refused before connecting") {
    NatsOptions none;
    auto refused = Connection::connect(none);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == ErrorCode::invalid_options);
    CHECK(refused.error().message == "NATS: no server URL");

    NatsOptions half;
    half.urls = {"tls://127.0.0.1:4222"};
    half.ca = "/nonexistent/ca.pem";
    half.certificate = "/nonexistent/client.pem";
    refused = Connection::connect(half);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == ErrorCode::invalid_options);
    CHECK(refused.error().message.find("needs its private key") != std::string::npos);

    NatsOptions no_ca;
    no_ca.urls = {"tls://127.0.0.1:4222"};
    no_ca.certificate = "client.pem";
    no_ca.private_key = "client.key";
    refused = Connection::connect(no_ca);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == ErrorCode::invalid_options);

    NatsOptions missing_ca;
    missing_ca.urls = {"tls://127.0.0.1:4222"};
    missing_ca.ca = "/nonexistent/ca.pem";
    refused = Connection::connect(missing_ca);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == ErrorCode::invalid_options);
    CHECK(refused.error().message.find("/nonexistent/ca.pem") != std::string::npos);
}

TEST_CASE("no server listening is `unavailable`, promptly") {
    // A port that was free a moment ago (bound, then closed).
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    ::close(fd);
    NatsOptions options;
    options.urls = {"nats://127.0.0.1:" + std::to_string(ntohs(address.sin_port))};
    const auto started = std::chrono::steady_clock::now();
    auto refused = Connection::connect(options);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == ErrorCode::unavailable);
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds{3});
}

// libFuzzer target for the clearing daemon's HTTP API from raw request bytes: Beast's request parser
// with the server's head and body limits, then the API in process (http_api.hpp) — routing, token
// extraction and lookup, role checks, query strings, the JSON bodies of the clerk API, and the changes
// they commit through the ledger writer. No socket: the transport's only other work is moving bytes.
//
// Input: one or more HTTP/1.1 requests back to back (pipelined), at most requests_max. Before parsing,
// placeholders become real tokens of this process (tokens are random per process, so a corpus file can
// only name them): {all} a clerk with every role, {read} {hotlist} {registry} {settlement} a clerk with
// that role only, {card0} {card1} the cards' own tokens (clearing_world.hpp's cards 0 and 1).
// The ledger, registry and tokens are made once per process and keep what earlier inputs changed.
// Properties: nothing crashes; every request the parser takes gets exactly one answer, within
// answer_wait_max, with a status 100–599, and a JSON answer's body parses as JSON.
// FUZZ_HTTP_TRACE=1 in the environment prints each request line and its answer's status (to check what
// a corpus file reaches).
#include "clearing_world.hpp"
#include "http_api.hpp"

#include <coconut/clearing/daemon.hpp>

#include <boost/beast/http.hpp>

#include <nlohmann/json.hpp>

#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>

namespace {

using namespace coconut;
using namespace coconut::clearing;
namespace bhttp = boost::beast::http;

constexpr std::string_view target = "fuzz_clearing_http";
constexpr std::size_t requests_max = 8;
// A change is answered after its commit on the writer's thread: on /dev/shm within milliseconds.
constexpr std::chrono::seconds answer_wait_max{10};

// The daemon (coconut::clearing::Daemon: ledger, registry, tokens, writer; no listener, an HSM in process
// that nothing here asks) and the API over it, without its transport.
struct InProcess {
    fuzz::ScratchDir dir{target};
    std::unique_ptr<LocalHsm> no_hsm;
    std::unique_ptr<Daemon> daemon;
    http::HttpOptions options;
    http::HttpStats stats;
    std::unique_ptr<http::Api> api;
    std::map<std::string, std::string, std::less<>> placeholders;

    InProcess() {
        if (!hsm::KeyStore::init(dir / "hsm")) fuzz::fail(target, "key store");
        auto store = hsm::KeyStore::open(dir / "hsm");
        if (!store) fuzz::fail(target, "key store");
        no_hsm =
            std::make_unique<LocalHsm>(std::make_shared<const hsm::Hsm>(std::make_shared<const hsm::KeyStore>(std::move(store).value())),
                                       "mk-tac");
        DaemonOptions daemon_options;
        daemon_options.data = dir / "data";
        daemon_options.ledger.map_size_bytes = fuzz_world::map_size_bytes;
        daemon_options.local_hsm = no_hsm.get();
        auto opened = Daemon::open(std::move(daemon_options));
        if (!opened) fuzz::fail(target, "daemon: " + opened.error().message);
        daemon = std::move(opened).value();
        if (!load_registry(daemon->ledger(), daemon->registry(), fuzz_world::registry_json)) fuzz::fail(target, "registry file");
        add_tokens();
        if (!daemon->start()) fuzz::fail(target, "daemon start");
        // Rate limits would turn most inputs into 429 after the first few: out of the way.
        options.token_requests_per_s = options.token_burst = 1e12;
        options.address_failures_per_s = options.address_failure_burst = 1e12;
        api = std::make_unique<http::Api>(http::Services{daemon->ledger(), &daemon->writer(), daemon->registry(), daemon->tokens()},
                                          options, stats);
    }

    // A clerk per role and two cards' tokens, as placeholders.
    void add_tokens() {
        for (const auto& [name, roles] :
             {std::pair{"all", http::roles::all}, std::pair{"read", http::roles::read}, std::pair{"hotlist", http::roles::hotlist},
              std::pair{"registry", http::roles::registry}, std::pair{"settlement", http::roles::settlement}}) {
            auto token = http::add_clerk(daemon->ledger(), daemon->tokens(), std::string("fuzz-") + name, roles);
            if (!token) fuzz::fail(target, "clerk: " + token.error().message);
            placeholders[std::string("{") + name + "}"] = *token;
        }
        std::vector<http::CardNumber> cards;
        for (std::string_view digits : {fuzz_world::card_numbers[0], fuzz_world::card_numbers[1]})
            cards.push_back(*http::parse_card_number(digits));
        if (!http::issue_card_tokens(daemon->ledger(), daemon->registry(), daemon->tokens(), cards, dir / "tokens"))
            fuzz::fail(target, "card tokens");
        for (std::size_t i = 0; i < cards.size(); ++i) {
            std::ifstream in(dir / "tokens" / (http::to_string(cards[i]) + ".token"));
            std::string token;
            std::getline(in, token);
            placeholders["{card" + std::to_string(i) + "}"] = token;
        }
    }

    std::string substituted(std::string_view input) const {
        std::string out;
        out.reserve(input.size() + 64);
        while (!input.empty()) {
            const auto open = input.find('{');
            out.append(input.substr(0, open));
            if (open == std::string_view::npos) break;
            input.remove_prefix(open);
            const auto close = input.find('}');
            const auto found = close == std::string_view::npos ? placeholders.end() : placeholders.find(input.substr(0, close + 1));
            if (found == placeholders.end()) {
                out += '{';
                input.remove_prefix(1);
            } else {
                out += found->second;
                input.remove_prefix(close + 1);
            }
        }
        return out;
    }
};

InProcess& daemon_in_process() {
    static InProcess daemon;
    return daemon;
}

// The API's answer to one request, waited for (it may come from the writer's thread).
http::ApiResponse answer(InProcess& daemon, const http::ApiRequest& request) {
    struct Slot {
        std::mutex mutex;
        std::condition_variable done;
        std::optional<http::ApiResponse> response;
        int calls = 0;
    };
    auto slot = std::make_shared<Slot>();
    daemon.api->handle(request, [slot](http::ApiResponse response) {
        std::lock_guard lock(slot->mutex);
        ++slot->calls;
        slot->response = std::move(response);
        slot->done.notify_all();
    });
    std::unique_lock lock(slot->mutex);
    if (!slot->done.wait_for(lock, answer_wait_max, [&] { return slot->response.has_value(); }))
        fuzz::fail(target, "no answer within the wait");
    if (slot->calls != 1) fuzz::fail(target, "answered more than once");
    return std::move(*slot->response);
}

void check(const http::ApiResponse& response) {
    if (response.status < 100 || response.status > 599) fuzz::fail(target, "status outside 100–599");
    if (response.content_type == "application/json" && !response.body.empty() && !nlohmann::json::accept(response.body))
        fuzz::fail(target, "a JSON answer whose body is not JSON: " + response.body.substr(0, 200));
}

std::string http_request(std::string_view method, std::string_view path, std::string_view token, std::string_view body = {}) {
    std::string r = std::string(method) + " " + std::string(path) + " HTTP/1.1\r\nHost: clearing\r\n";
    if (!token.empty()) r += "Authorization: Bearer " + std::string(token) + "\r\n";
    if (!body.empty() || method != "GET") {
        r += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    }
    return r + "\r\n" + std::string(body);
}

void write_seeds(const std::filesystem::path& dir) {
    const std::string card0 = std::string(fuzz_world::card_numbers[0]);
    const std::string card1 = std::string(fuzz_world::card_numbers[1]);
    const auto seed = [&](std::string_view name, const std::string& text) { fuzz::write_seed(dir, name, fuzz::bytes_of(text)); };
    seed("page-healthz-openapi",
         http_request("GET", "/", "") + http_request("GET", "/healthz", "") + http_request("GET", "/v1/openapi.json", ""));
    seed("metrics", http_request("GET", "/metrics", "{read}"));
    seed("cardholder", http_request("GET", "/v1/cards/" + card0, "{card0}") +
                           http_request("GET", "/v1/cards/" + card0 + "/transactions?limit=5&before=99999999999999999", "{card0}"));
    seed("cardholder-other-card", http_request("GET", "/v1/cards/" + card1, "{card0}"));
    seed("clerk-card", http_request("GET", "/v1/clerk/cards/" + card1, "{read}"));
    seed("hotlist", http_request("PUT", "/v1/clerk/cards/" + card0 + "/status", "{hotlist}", R"({"status":"lost","reason":"phoned in"})") +
                        http_request("PUT", "/v1/clerk/cards/" + card0 + "/status", "{hotlist}", R"({"status":"active"})"));
    seed("card-token", http_request("POST", "/v1/clerk/cards/" + card1 + "/token", "{registry}"));
    seed("register", http_request("POST", "/v1/clerk/participants", "{registry}",
                                  R"({"id":4004,"name":"Night Market","kind":"shop","bank_account":"6222000077778888","fee_rate_bp":10})") +
                         http_request("POST", "/v1/clerk/terminals", "{registry}",
                                      R"({"terminal_id":"SHOP0043","psam_terminal_id":"460100000046","participant_id":4004})") +
                         http_request("POST", "/v1/clerk/cards", "{registry}",
                                      R"({"asn":"46010000000099990000","issuer_id":"4600000000000001","purse_balance_fen":100})"));
    seed("terminal-status", http_request("PUT", "/v1/clerk/terminals/SHOP0042/status", "{registry}", R"({"status":"suspended"})"));
    seed("lists", http_request("GET", "/v1/clerk/risk?limit=2", "{read}") + http_request("GET", "/v1/clerk/suspense", "{read}") +
                      http_request("GET", "/v1/clerk/journal?after=0&limit=3", "{read}"));
    // A settlement posting as coconut-settle's poster writes it (settlement/src/posting.cpp).
    constexpr std::string_view transfer =
        R"({"id":"0000000000000000000000000134dcb6","debit_account_id":"00000000000000000000000000000001",)"
        R"("credit_account_id":"00000000000000000000000000000002","amount":831,"ledger":1,"code":40,"flags":[],)"
        R"("user_data_128":"0134dcb6000000000000000000000000"})";
    seed("transfers", http_request("POST", "/v1/clerk/transfers", "{settlement}",
                                   R"({"cycle":{"id":20261206,"window_start_ns":1796400000000000000,"window_end_ns":1796486400000000000},)"
                                   R"("transfers":[)" +
                                       std::string(transfer) + "]}"));
    seed("adjustments", http_request("GET", "/v1/clerk/adjustments", "{all}"));
    seed("unknown-token-and-garbage",
         http_request("GET", "/v1/clerk/cards/" + card0, "clerk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA") + "GET /%zz HTTP/1.0\r\n\r\n");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    fuzz::write_seeds_if_requested(write_seeds);
    daemon_in_process();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    InProcess& daemon = daemon_in_process();
    const std::string bytes = daemon.substituted({reinterpret_cast<const char*>(data), size});
    std::string_view rest = bytes;
    http::PeerAddress peer{};
    peer[10] = peer[11] = 0xFF;
    peer[12] = 127;
    peer[15] = 1;
    for (std::size_t n = 0; n < requests_max && !rest.empty(); ++n) {
        bhttp::request_parser<bhttp::string_body> parser;
        parser.header_limit(static_cast<std::uint32_t>(daemon.options.header_bytes_max));
        parser.body_limit(daemon.options.body_bytes_max);
        parser.eager(true);
        boost::beast::error_code ec;
        const std::size_t used = parser.put(boost::asio::buffer(rest.data(), rest.size()), ec);
        rest.remove_prefix(std::min(used, rest.size()));
        if (ec == bhttp::error::need_more) parser.put_eof(ec);  // the input ends: the connection closed
        if (ec || !parser.is_done()) return 0;                  // the server answers 400/413/431 and closes
        const auto& request = parser.get();
        const auto field = [](boost::beast::string_view s) { return std::string_view(s.data(), s.size()); };
        const http::ApiRequest api_request{field(request.method_string()), field(request.target()),
                                           field(request[bhttp::field::authorization]), request.body(), peer};
        const http::ApiResponse response = answer(daemon, api_request);
        static const bool trace = std::getenv("FUZZ_HTTP_TRACE") != nullptr;
        if (trace) {
            std::fprintf(stderr, "%.*s %.*s -> %u %.120s\n", static_cast<int>(api_request.method.size()), api_request.method.data(),
                         static_cast<int>(api_request.target.size()), api_request.target.data(), response.status, response.body.c_str());
        }
        check(response);
        if (!request.keep_alive()) return 0;
    }
    return 0;
}

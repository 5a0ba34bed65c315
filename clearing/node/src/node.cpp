#include <coconut/clearing/node.hpp>

#include <coconut/clearing/card_returns.hpp>
#include <coconut/clearing/lifecycle.hpp>

#include <coconut/core/assert.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <array>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <pthread.h>
#include <fstream>
#include <mutex>
#include <optional>
#include <ostream>
#include <span>
#include <thread>

namespace coconut::clearing {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::atomic<bool> stop_requested{false};
// How long a starting node retries creating or opening the stream and the lease bucket.
constexpr std::chrono::seconds setup_wait{60};
// How long a node that took the lease may take to apply the stream up to its end before it gives the
// lease back (the stream's leader may be moving: 4–8 s here).
constexpr std::chrono::seconds catch_up_wait{30};
extern "C" void request_stop(int) { stop_requested = true; }

// SIGINT / SIGTERM while standby: finish the message in hand, then stop (the primary's Daemon handles
// them itself while it runs).
void catch_stop_signals() {
    struct sigaction action {};
    action.sa_handler = request_stop;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, nullptr);
    ::sigaction(SIGTERM, &action, nullptr);
}

Unexpected<NodeError> failure(NodeError::Kind kind, std::string message) { return Unexpected{NodeError{kind, std::move(message)}}; }

std::string lease_value(const NodeOptions& o) {
    return nlohmann::json{{"node", o.name}, {"advertise", o.advertise}, {"http", o.advertise_http}}.dump();
}

// The HTTP address in a lease value ("" when it has none).
std::string http_of(const std::string& value) {
    const auto parsed = nlohmann::json::parse(value, nullptr, false);
    if (!parsed.is_object() || !parsed.contains("http") || !parsed["http"].is_string()) return {};
    return parsed["http"].get<std::string>();
}

// The shared state of one node: its NATS objects and where its copy stands.
struct Node {
    Node(const NodeOptions& options_in, std::ostream& log_in, cluster::Connection nats_in)
        : options(options_in), log(log_in), nats(std::move(nats_in)) {}
    const NodeOptions& options;
    std::ostream& log;
    cluster::Connection nats;  // the lease and the readers keep its address: opened after it stopped moving
    std::optional<cluster::Lease> lease_slot;
    cluster::Lease& lease() { return *lease_slot; }
    std::atomic<std::uint64_t> position{0};                               // the stream sequence of the last commit in this node's ledger
    http::PublishDurations publishes{http::publish_duration_buckets_us};  // every reign's, for the primary's /metrics
    mutable std::mutex primary_mutex;
    std::string primary_http;  // the lease holder's HTTP address, for a standby's 503 answers
    std::string role = "standby";
    std::string primary;  // the lease holder's value as last read

    std::string last_note;  // note(): the last repeated condition said, so it is said once

    void say(const std::string& line) { log << fmt::format("coconut-clearingd: node {}: {}\n", options.name, line) << std::flush; }
    void note(const std::string& line) {
        if (line == last_note) return;
        last_note = line;
        say(line);
    }

    void write_status(const ledger::Ledger& ledger) {
        if (options.status_file.empty()) return;
        const nlohmann::json status = {{"node", options.name},
                                       {"role", role},
                                       {"position", position.load()},
                                       {"journal_sequence", ledger.head().sequence},
                                       {"primary", primary}};
        const auto temporary = options.status_file.string() + ".tmp";
        {
            std::ofstream out(temporary, std::ios::trunc);
            out << status.dump() << '\n';
        }
        std::error_code ignored;
        std::filesystem::rename(temporary, options.status_file, ignored);
    }

    // Applies journal messages (consecutive, the first at position + 1) to `ledger`, several per durable
    // transaction: up to apply_commits_max commits or apply_bytes_max bytes of change sets each.
    coconut::Status<NodeError> apply(ledger::Ledger& ledger, std::span<const cluster::JournalMessage> messages) {
        std::vector<JournalEnvelope> opened;
        std::size_t bytes = 0;
        for (std::size_t i = 0; i < messages.size(); ++i) {
            auto envelope = open_message(messages[i], position + opened.size() + 1);
            if (!envelope) return Unexpected{envelope.error()};
            bytes += envelope->changes.size();
            opened.push_back(std::move(envelope).value());
            if (opened.size() == apply_commits_max || bytes >= apply_bytes_max || i + 1 == messages.size()) {
                if (auto applied = apply_opened(ledger, opened, messages[i].sequence - opened.size() + 1); !applied) return applied;
                opened.clear();
                bytes = 0;
            }
        }
        return Ok{};
    }

private:
    static constexpr std::size_t apply_commits_max = 64;
    static constexpr std::size_t apply_bytes_max = std::size_t{32} << 20;

    // The envelope of `message`, which must be at stream position `expected`: authenticated and fenced.
    coconut::Result<JournalEnvelope, NodeError> open_message(const cluster::JournalMessage& message, std::uint64_t expected) const {
        if (message.sequence > expected)
            return failure(NodeError::Kind::journal,
                           fmt::format("the journal stream no longer holds position {} (its first message now is {}: older ones are past "
                                       "--stream-keep-days): this node's copy is too old to catch up; join again from a snapshot "
                                       "(coconut-clearingd join --replace)",
                                       expected, message.sequence));
        auto envelope = open_sealed(message.payload, options.key);
        if (!envelope)
            return failure(NodeError::Kind::journal, fmt::format("journal message {} refused: {}", message.sequence, envelope.error()));
        if (envelope->follows + 1 != message.sequence)
            return failure(NodeError::Kind::journal, fmt::format("journal message {} was published after {}, not after {}: not fenced",
                                                                 message.sequence, envelope->follows, message.sequence - 1));
        return std::move(envelope).value();
    }

    // Applies the opened commits, the first at stream position `first`, in one transaction.
    coconut::Status<NodeError> apply_opened(ledger::Ledger& ledger, const std::vector<JournalEnvelope>& opened, std::uint64_t first) {
        std::vector<ledger::Ledger::ReplicatedCommit> commits;
        commits.reserve(opened.size());
        for (std::size_t i = 0; i < opened.size(); ++i) commits.push_back({opened[i].changes, first + i});
        auto applied = ledger.apply_replicated(commits);
        if (!applied)
            return failure(NodeError::Kind::journal,
                           fmt::format("journal messages {}–{}: {}", first, commits.back().position, applied.error().message));
        position = commits.back().position;
        return Ok{};
    }
};

// ---- standby ------------------------------------------------------------------------------------------

// A standby's data directory and, with DaemonOptions::http, its HTTP API on a thread of its own: the
// cardholder's reads from this copy, 503 naming the primary for the rest (http::StandbyInfo).
struct Standby {
    explicit Standby(DirectoryLock lock_in) : lock(std::move(lock_in)) {}
    Standby(const Standby&) = delete;
    Standby& operator=(const Standby&) = delete;
    ~Standby() {
        if (http) http->shutdown();
        if (io) io->stop();
        if (thread.joinable()) thread.join();
    }
    DirectoryLock lock;
    std::unique_ptr<ledger::Ledger> ledger;
    std::unique_ptr<Registry> registry;
    std::unique_ptr<Lifecycle> lifecycle;
    std::unique_ptr<CardReturns> card_returns;
    std::unique_ptr<http::Tokens> tokens;
    http::StandbyInfo info;
    std::unique_ptr<boost::asio::io_context> io;
    std::unique_ptr<http::HttpServer> http;
    std::thread thread;
};

coconut::Status<NodeError> serve_standby_http(Standby& standby, const DaemonOptions& d, const Node& node) {
    if (!d.http) return Ok{};
    auto tokens = http::Tokens::open(standby.ledger->env(), d.data);
    if (!tokens) return failure(NodeError::Kind::daemon, tokens.error().message);
    standby.tokens = std::move(tokens).value();
    auto returns = CardReturns::open(standby.ledger->env());
    if (!returns) return failure(NodeError::Kind::daemon, returns.error().message);
    standby.card_returns = std::move(returns).value();
    standby.info.applied_position = [&node] { return node.position.load(); };
    standby.info.primary_http = [&node] {
        std::lock_guard lock(node.primary_mutex);
        return node.primary_http;
    };
    http::HttpOptions options = *d.http;
    options.io_threads = 1;
    standby.io = std::make_unique<boost::asio::io_context>(1);
    http::Services services{*standby.ledger, nullptr, *standby.registry, *standby.tokens, nullptr,
                            nullptr,         nullptr, nullptr,           &standby.info,   d.data};
    // The cardholder's reads show a lost, replaced or returned card as the primary would.
    services.lifecycle = standby.lifecycle.get();
    services.lost_wait_s = d.engine.lost_wait_s;
    services.card_returns = standby.card_returns.get();
    try {
        standby.http = std::make_unique<http::HttpServer>(*standby.io, services, options);
    } catch (const std::exception& e) {
        return failure(NodeError::Kind::daemon, fmt::format("cannot serve HTTP on {}:{}: {}", options.host, options.port, e.what()));
    }
    standby.thread = std::thread([io = standby.io.get()] {
        auto work = boost::asio::make_work_guard(*io);
        io->run();
    });
    return Ok{};
}

enum class LastCommit { kept, roll_back };

// Whether this ledger's last commit may stay. A primary commits locally while the stream acknowledges
// (Reign::publish), so its last commit may be one the stream refused (another primary had published
// there) or never received (the node died first). That commit answered nobody as approved; it must go
// before this copy follows the stream. Commits applied from the stream always stay.
coconut::Result<LastCommit, NodeError> settle_last_commit(Node& node, const ledger::Ledger& ledger) {
    auto published = ledger.last_published();
    auto position = ledger.replicated_position();
    if (!published || !position) return failure(NodeError::Kind::daemon, (!published ? published.error() : position.error()).message);
    if (!*published || (*published)->position != *position) return LastCommit::kept;  // from the stream
    const std::uint64_t at = *position;
    const auto deadline = Clock::now() + setup_wait;
    for (;;) {
        auto last = cluster::last_sequence(node.nats, node.options.stream.name);
        if (last && *last < at) return LastCommit::roll_back;  // never stored: not yet, or not at all
        auto id = last ? cluster::message_id_at(node.nats, node.options.stream.name, at) : Unexpected{last.error()};
        if (id && *id) return **id == (*published)->message_id ? LastCommit::kept : LastCommit::roll_back;
        if (id)
            return failure(NodeError::Kind::journal,
                           fmt::format("this copy's last commit (position {}) is no longer in the stream (past --stream-keep-days): "
                                       "whether the stream took it cannot be told; join again from a snapshot "
                                       "(coconut-clearingd join --replace)",
                                       at));
        if (id.error().code != cluster::ErrorCode::unavailable || Clock::now() > deadline)
            return failure(NodeError::Kind::nats, fmt::format("cannot read position {} of the journal stream: {}", at, id.error().message));
        std::this_thread::sleep_for(250ms);
    }
}

coconut::Status<NodeError> open_ledger(Standby& standby, const DaemonOptions& d) {
    auto data = open_data_directory(d.data, d.ledger);
    if (!data) return failure(NodeError::Kind::daemon, data.error().message);
    standby.ledger = std::move(data->ledger);
    standby.registry = std::move(data->registry);
    standby.lifecycle = std::move(data->lifecycle);
    return Ok{};
}

// Rolls back the standby's last commit (settle_last_commit): closes the ledger, makes its previous
// commit the latest (lmdb::rollback_last_commit, under the directory's lock) and opens it again.
coconut::Status<NodeError> roll_back_last_commit(Standby& standby, const DaemonOptions& d, Node& node) {
    const std::uint64_t dropped = node.position;
    standby.lifecycle.reset();
    standby.registry.reset();
    standby.ledger.reset();
    if (auto rolled = lmdb::rollback_last_commit(d.data.string()); !rolled)
        return failure(NodeError::Kind::daemon, "cannot roll back the last commit: " + rolled.error().message());
    if (auto opened = open_ledger(standby, d); !opened) return opened;
    auto position = standby.ledger->replicated_position();
    if (!position || *position + 1 != dropped)
        return failure(NodeError::Kind::journal,
                       fmt::format("rolling back the commit at position {} left the ledger at position {}, not {}: join again from a "
                                   "snapshot (coconut-clearingd join --replace)",
                                   dropped, position ? *position : 0, dropped - 1));
    node.position = *position;
    node.say(
        fmt::format("rolled back its last commit (position {}), which the journal stream does not hold: it answered no terminal", dropped));
    return Ok{};
}

coconut::Result<std::unique_ptr<Standby>, NodeError> open_standby(const DaemonOptions& d, Node& node) {
    std::error_code ec;
    std::filesystem::create_directories(d.data, ec);
    auto locked = lock_data_directory(d.data);
    if (!locked) return failure(NodeError::Kind::daemon, locked.error().message);
    auto standby = std::make_unique<Standby>(std::move(locked).value());
    if (auto opened = open_ledger(*standby, d); !opened) return Unexpected{opened.error()};
    auto position = standby->ledger->replicated_position();
    if (!position) return failure(NodeError::Kind::daemon, position.error().message);
    node.position = *position;
    auto last = settle_last_commit(node, *standby->ledger);
    if (!last) return Unexpected{last.error()};
    if (*last == LastCommit::roll_back) {
        if (auto rolled = roll_back_last_commit(*standby, d, node); !rolled) return Unexpected{rolled.error()};
    }
    if (auto served = serve_standby_http(*standby, d, node); !served) return Unexpected{served.error()};
    return standby;
}

// Applies what the reader has until the stream's last sequence (read now) is in the ledger. A NATS
// error is Kind::nats (transient: the caller gives the lease back and stays a standby); a message that
// cannot be applied is Kind::journal (fatal).
coconut::Status<NodeError> catch_up(Node& node, ledger::Ledger& ledger, cluster::JournalReader& reader, std::uint64_t& revision) {
    const auto deadline = Clock::now() + catch_up_wait;
    auto next_renewal = Clock::now() + node.options.lease.ttl / 3;
    auto renew_when_due = [&]() -> coconut::Status<NodeError> {  // the lease is held from the moment it was taken
        if (Clock::now() < next_renewal) return Ok{};
        next_renewal = Clock::now() + node.options.lease.ttl / 3;
        auto renewed = node.lease().renew(revision, lease_value(node.options));
        if (renewed) revision = *renewed;
        else if (renewed.error().code == cluster::LeaseErrorCode::lost)
            return failure(NodeError::Kind::nats, "lost the lease while applying the stream: " + renewed.error().message);
        return Ok{};
    };
    auto last = cluster::last_sequence(node.nats, node.options.stream.name);
    while (!last && last.error().code == cluster::ErrorCode::unavailable && Clock::now() < deadline) {
        if (auto renewed = renew_when_due(); !renewed) return renewed;
        std::this_thread::sleep_for(100ms);
        last = cluster::last_sequence(node.nats, node.options.stream.name);
    }
    if (!last) return failure(NodeError::Kind::nats, "the stream's last sequence: " + last.error().message);
    while (node.position < *last) {
        if (Clock::now() > deadline)
            return failure(NodeError::Kind::nats, fmt::format("could not read the stream up to {} within {} s (at {})", *last,
                                                              catch_up_wait.count(), node.position.load()));
        if (auto renewed = renew_when_due(); !renewed) return renewed;
        auto batch = reader.next_batch(250ms);
        if (!batch) continue;  // unavailable: the reader resumes where it was
        if (auto applied = node.apply(ledger, *batch); !applied) return applied;
    }
    return Ok{};
}

enum class StandbyEnd { promoted, stopped };

// Follows the stream until this node holds the lease and has applied everything (promoted) or a signal.
coconut::Result<StandbyEnd, NodeError> follow(Node& node, ledger::Ledger& ledger, std::uint64_t& revision) {
    auto reader = cluster::JournalReader::open(node.nats, node.options.stream, node.position + 1);
    if (!reader) return failure(NodeError::Kind::nats, "cannot read the journal stream: " + reader.error().message);
    auto next_lease_check = Clock::now();
    while (!stop_requested) {
        auto batch = reader->next_batch(250ms);
        if (batch) {
            if (auto applied = node.apply(ledger, *batch); !applied) return Unexpected{applied.error()};
            if (!batch->empty()) node.write_status(ledger);
        }
        if (Clock::now() < next_lease_check) continue;
        next_lease_check = Clock::now() + node.options.lease.ttl / 3;
        auto holder = node.lease().read();
        if (!holder) {
            node.note("cannot read the lease: " + holder.error().message);
            continue;
        }
        if (*holder) {
            if ((*holder)->value != node.primary) {
                node.primary = (*holder)->value;
                {
                    std::lock_guard lock(node.primary_mutex);
                    node.primary_http = http_of(node.primary);
                }
                node.write_status(ledger);
            }
            continue;
        }
        auto acquired = node.lease().acquire(lease_value(node.options));
        if (!acquired) {  // another node was quicker (held), or NATS did not answer
            node.note("cannot take the lease: " + acquired.error().message);
            continue;
        }
        revision = *acquired;
        node.say(fmt::format("took the lease (revision {}); applying the stream up to its end", revision));
        if (auto caught = catch_up(node, ledger, *reader, revision); !caught) {
            (void)node.lease().release(revision);
            if (caught.error().kind != NodeError::Kind::nats) return Unexpected{caught.error()};
            node.say("gave the lease back: " + caught.error().message);  // NATS is failing over: stay a standby
            continue;
        }
        return StandbyEnd::promoted;
    }
    return StandbyEnd::stopped;
}

// ---- primary ------------------------------------------------------------------------------------------

// Publishes sealed commits on a thread of its own, one at a time, so that the writer's local commit
// (its fsync) runs while the stream acknowledges: the commit hook hands a commit over and returns, the
// commit's AfterCommit step waits for the outcome. A transient failure (timeout, no stream leader) is
// retried with the same message id until the node's publish deadline.
class Publisher {
public:
    struct Job {
        Bytes sealed;
        std::string id;
        std::uint64_t after = 0;  // the stream position the message must follow (the fence)
    };
    using Outcome = coconut::Result<cluster::PublishAck, std::string>;

    explicit Publisher(Node& node) : node_(node), thread_([this] { run(); }) {}
    Publisher(const Publisher&) = delete;
    Publisher& operator=(const Publisher&) = delete;
    ~Publisher() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        changed_.notify_all();
        thread_.join();
    }

    void send(Job job) {
        {
            std::lock_guard lock(mutex_);
            COCONUT_ASSERT(!job_ && !outcome_, "one commit in flight at a time");
            job_ = std::move(job);
        }
        changed_.notify_all();
    }
    Outcome wait() {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] { return outcome_.has_value(); });
        Outcome outcome = std::move(*outcome_);
        outcome_.reset();
        return outcome;
    }
    // Read once the writer has stopped: the round trips' sum and the slowest one.
    Clock::duration round_trips() const { return round_trips_; }
    Clock::duration slowest() const { return slowest_; }
    // How many round trips took longer than each of slow_ms.
    static constexpr std::array<int, 3> slow_ms{5, 10, 20};
    const std::array<std::uint64_t, 3>& slow_counts() const { return slow_counts_; }

private:
    void run() {
        ::pthread_setname_np(::pthread_self(), "journal-publish");
        std::unique_lock lock(mutex_);
        for (;;) {
            changed_.wait(lock, [&] { return stopping_ || job_.has_value(); });
            if (!job_) return;
            Job job = std::move(*job_);
            job_.reset();
            lock.unlock();
            const auto started = Clock::now();
            Outcome outcome = publish(job);
            lock.lock();
            const auto took = Clock::now() - started;
            round_trips_ += took;
            slowest_ = std::max(slowest_, took);
            for (std::size_t i = 0; i < slow_ms.size(); ++i) slow_counts_[i] += took > std::chrono::milliseconds(slow_ms[i]) ? 1 : 0;
            node_.publishes.observe(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(took).count()));
            outcome_ = std::move(outcome);
            changed_.notify_all();
        }
    }

    Outcome publish(const Job& job) const {
        const NodeOptions& o = node_.options;
        const auto deadline = Clock::now() + o.publish_deadline;
        for (;;) {
            auto ack = cluster::publish(node_.nats, o.stream, job.sealed, job.id, job.after, o.publish_attempt_wait);
            if (ack) return *ack;
            const bool transient =
                ack.error().code == cluster::PublishErrorCode::timeout || ack.error().code == cluster::PublishErrorCode::no_responders;
            if (!transient || Clock::now() >= deadline)
                return Unexpected{fmt::format("the journal stream did not take the commit after position {}: {} ({})", job.after,
                                              cluster::to_string(ack.error().code), ack.error().message)};
            std::this_thread::sleep_for(100ms);
        }
    }

    Node& node_;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::optional<Job> job_;
    std::optional<Outcome> outcome_;
    bool stopping_ = false;
    Clock::duration round_trips_{}, slowest_{};
    std::array<std::uint64_t, 3> slow_counts_{};
    std::thread thread_;  // last: it starts once the members it uses exist
};

// What the commit hook and the lease keeper share while this node is primary.
struct Reign {
    Reign(Node& node_in, std::uint64_t revision_in) : node(node_in), revision(revision_in), publisher(node_in) {}
    Node& node;
    std::atomic<std::uint64_t> revision;
    std::atomic<bool> deposed{false};
    std::string why;
    std::mutex why_mutex;
    ledger::Ledger* ledger = nullptr;
    Publisher publisher;
    // Where the commit hook's time goes (the writer thread's alone; read once the daemon has stopped):
    // sealing (MAC, message id), and waiting for the stream's acknowledgement once the local commit was
    // written (the publisher's round trips overlap the local commits), summed over the reign.
    std::uint64_t published = 0, published_bytes = 0;
    Clock::duration sealing{}, waiting{};

    void depose(const std::string& reason) {
        {
            std::lock_guard lock(why_mutex);
            if (why.empty()) why = reason;
        }
        deposed = true;
    }

    // The commit hook: seal, record the position the fence gives the commit (and its message id) in
    // it, hand it to the publisher, and leave the wait for its acknowledgement until after the local
    // commit (acknowledged). A commit the stream then refuses is in this ledger but not in the stream:
    // the node rolls it back when it reopens as a standby (settle_last_commit).
    lmdb::Status publish(lmdb::Txn& txn, ByteView changes) {
        if (deposed) return refuse("this node is no longer the primary");
        // A commit the stream took but this ledger did not write (a storage error after the publish)
        // leaves the ledger behind the stream: only a standby's apply can bring it back.
        if (auto held = ledger->replicated_position(); !held || *held != node.position) {
            depose(fmt::format("the ledger holds position {} but the stream is at {}: a published commit failed to write here",
                               held ? *held : 0, node.position.load()));
            return refuse(why);
        }
        const auto started = Clock::now();
        const std::uint64_t after = node.position;
        Bytes sealed = seal({node.options.name, revision.load(), after, Bytes(changes.begin(), changes.end())}, node.options.key);
        std::string id = journal_message_id(sealed);
        sealing += Clock::now() - started;
        if (auto recorded = ledger->record_position(txn, after + 1, id); !recorded) return recorded;
        const std::size_t bytes = sealed.size();
        publisher.send({std::move(sealed), std::move(id), after});
        txn.after_commit([this, after, bytes](bool) { return acknowledged(after, bytes); });
        return Ok{};
    }

private:
    static Unexpected<lmdb::Error> refuse(const std::string& what) {
        return Unexpected{lmdb::Error{lmdb::commit_refused_rc, "publish", what}};
    }

    // After the local commit (written or not): the stream's answer. Refused: this node steps down, and
    // the commit fails — nobody is answered as approved. Accepted but not written here: the next hook
    // finds the ledger behind the stream.
    lmdb::Status acknowledged(std::uint64_t after, std::size_t bytes) {
        const auto started = Clock::now();
        auto outcome = publisher.wait();
        waiting += Clock::now() - started;
        if (!outcome) {
            depose(outcome.error());
            return refuse(outcome.error());
        }
        ++published;
        published_bytes += bytes;
        COCONUT_ASSERT(outcome->sequence == after + 1, "a fenced publish lands right after the fence");
        node.position = outcome->sequence;
        return Ok{};
    }
};

// How often the primary renews its lease (NodeOptions::lease_renew_every).
Clock::duration renewal_interval(const NodeOptions& o) {
    return o.lease_renew_every.count() > 0 ? Clock::duration(o.lease_renew_every) : Clock::duration(o.lease.ttl / 3);
}

// Renews the lease every ttl/3 from the moment it was taken until the reign ends (opening the daemon may
// take longer than the ttl on a loaded machine); a lost lease, or ttl without a renewal, deposes — and
// stops the daemon once it runs.
void keep_lease(Reign& reign, const std::atomic<Daemon*>& running, const std::atomic<bool>& stopping) {
    const auto ttl = reign.node.options.lease.ttl;
    const auto every = renewal_interval(reign.node.options);
    auto last_renewal = Clock::now();
    auto next = Clock::now() + every;
    while (!stopping) {
        std::this_thread::sleep_for(20ms);
        if (reign.deposed) {
            if (Daemon* daemon = running.load()) {
                daemon->shutdown();
                return;
            }
            continue;  // the daemon is still opening: serve_as_primary sees `deposed` once it has
        }
        if (Clock::now() < next) continue;
        next = Clock::now() + every;
        auto renewed = reign.node.lease().renew(reign.revision.load(), lease_value(reign.node.options));
        if (renewed) {
            reign.revision = *renewed;
            last_renewal = Clock::now();
            if (running.load() != nullptr && reign.ledger != nullptr) reign.node.write_status(*reign.ledger);  // the position moves on
        } else if (renewed.error().code == cluster::LeaseErrorCode::lost) {
            reign.depose("the lease was lost: " + renewed.error().message);
        } else if (Clock::now() - last_renewal > std::max<Clock::duration>(ttl, every)) {
            reign.depose("the lease could not be renewed within its ttl: " + renewed.error().message);
        }
    }
}

enum class ReignEnd { deposed, stopped };

// The daemon as primary, from the lease taken at `revision` until it is deposed (ReignEnd::deposed) or
// stopped by a signal. A daemon that cannot open or start because the stream refused its first commits
// (another node has written meanwhile) is a deposition too, not an error.
coconut::Result<ReignEnd, NodeError> serve_as_primary(Node& node, DaemonOptions options, std::uint64_t revision) {
    Reign reign(node, revision);
    options.handle_signals = true;
    options.commit_hook = [&reign](ledger::Ledger& ledger) -> lmdb::CommitHook {
        reign.ledger = &ledger;
        return [&reign](lmdb::Txn& txn, ByteView changes) { return reign.publish(txn, changes); };
    };
    options.publishes = &node.publishes;
    std::atomic<Daemon*> running{nullptr};
    std::atomic<bool> stopping{false};
    std::thread keeper([&] { keep_lease(reign, running, stopping); });
    auto stop_keeper = [&] {
        stopping = true;
        if (keeper.joinable()) keeper.join();
    };
    auto end_reign = [&](std::optional<NodeError> error) -> coconut::Result<ReignEnd, NodeError> {
        stop_keeper();
        node.role = "standby";
        const auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
        node.say(fmt::format(
            "published {} commits ({} bytes sealed): {:.1f} ms sealing, {:.1f} ms waiting for the stream after the "
            "local commits, {:.1f} ms the stream's round trips (the slowest {:.1f} ms; {} over 5 ms, {} over 10 ms, {} over 20 ms)",
            reign.published, reign.published_bytes, ms(reign.sealing), ms(reign.waiting), ms(reign.publisher.round_trips()),
            ms(reign.publisher.slowest()), reign.publisher.slow_counts()[0], reign.publisher.slow_counts()[1],
            reign.publisher.slow_counts()[2]));
        if (reign.deposed) {
            node.say("stepped down: " + reign.why);
            return ReignEnd::deposed;
        }
        if (error) return Unexpected{*error};
        (void)node.lease().release(reign.revision.load());  // a clean hand-over: the next primary need not wait for the ttl
        return ReignEnd::stopped;
    };
    auto daemon = Daemon::open(std::move(options));
    if (!daemon) return end_reign(NodeError{NodeError::Kind::daemon, daemon.error().message});
    if (auto started = (*daemon)->start(); !started) {
        daemon->reset();
        return end_reign(NodeError{NodeError::Kind::daemon, started.error().message});
    }
    node.role = "primary";
    node.primary = lease_value(node.options);
    node.write_status((*daemon)->ledger());
    node.say(fmt::format("primary at position {} (lease revision {}), terminals on port {}", node.position.load(), revision,
                         (*daemon)->terminal_port()));
    running = daemon->get();
    if (reign.deposed) (*daemon)->shutdown();  // deposed while opening: the keeper may not have seen it running
    // A SIGTERM that came while the lease was being taken or the daemon opened went to the standby's
    // handler, not the daemon's (installed by start()): honour it now.
    if (stop_requested) (*daemon)->shutdown();
    (*daemon)->run();
    stop_keeper();  // before the daemon goes: the keeper may be calling its shutdown()
    running = nullptr;
    daemon->reset();  // the writer has committed (or refused) everything queued; the directory is unlocked
    return end_reign(std::nullopt);
}

}  // namespace

coconut::Status<NodeError> run_node(DaemonOptions daemon, const NodeOptions& options, std::ostream& log) {
    COCONUT_ASSERT(!options.name.empty(), "a cluster node has a name");
    auto connected = cluster::Connection::connect(options.nats);
    if (!connected) return failure(NodeError::Kind::nats, "cannot connect to NATS: " + connected.error().message);
    if (auto ready = cluster::wait_for_jetstream(*connected, 30s); !ready)
        return failure(NodeError::Kind::nats, "NATS JetStream is not available: " + ready.error().message);
    Node node(options, log, std::move(connected).value());
    // Nodes starting together race to create the stream and the bucket; creating an R3 stream takes
    // longer than one request's timeout while the servers elect its leader: retry what is transient.
    const auto deadline = Clock::now() + setup_wait;
    for (;;) {
        auto stream = cluster::ensure_stream(node.nats, options.stream);
        if (stream) break;
        if (stream.error().code != cluster::ErrorCode::unavailable || Clock::now() > deadline)
            return failure(NodeError::Kind::nats, "the journal stream: " + stream.error().message);
        std::this_thread::sleep_for(250ms);
    }
    for (;;) {
        auto lease = cluster::Lease::open(node.nats, options.lease);
        if (lease) {
            node.lease_slot.emplace(std::move(lease).value());
            break;
        }
        if (lease.error().code != cluster::ErrorCode::unavailable || Clock::now() > deadline)
            return failure(NodeError::Kind::nats, "the leadership lease: " + lease.error().message);
        std::this_thread::sleep_for(250ms);
    }
    for (;;) {
        catch_stop_signals();
        std::uint64_t revision = 0;
        {
            auto standby = open_standby(daemon, node);
            if (!standby) return Unexpected{standby.error()};
            node.write_status(*(*standby)->ledger);
            node.say(fmt::format("standby at position {} (journal entry {}){}", node.position.load(), (*standby)->ledger->head().sequence,
                                 (*standby)->http ? fmt::format(", cardholder API on port {}", (*standby)->http->port()) : ""));
            auto followed = follow(node, *(*standby)->ledger, revision);
            if (!followed) return Unexpected{followed.error()};
            if (*followed == StandbyEnd::stopped) return Ok{};
            if (stop_requested) {  // stopped while taking the lease: hand it back rather than serve
                (void)node.lease().release(revision);
                return Ok{};
            }
        }  // the standby's ledger and lock are released: the daemon takes them
        auto reign = serve_as_primary(node, daemon, revision);
        if (!reign) return Unexpected{reign.error()};
        if (*reign == ReignEnd::stopped) return Ok{};
    }
}

}  // namespace coconut::clearing

// A clearing node of a cluster (docs/DESIGN.md §10, clearing/README.md "Cluster"): coconut-clearingd
// serve with --cluster-node. Every node runs the same loop:
//
//   standby   holds its data directory, follows the journal stream in order and applies each message
//             (Ledger::apply_replicated: the change set with its stream position in one durable
//             transaction, the hash chain verified entry by entry), after checking the message's MAC
//             (journal_envelope.hpp). Serves no terminal. Watches the leadership lease; when nobody
//             holds it, takes it, applies everything up to the stream's last sequence, and becomes
//   primary   the whole Daemon (daemon.hpp) with a commit hook: each commit's change set is sealed
//             and published to the stream with the expected last sequence (fencing) and a message id
//             (de-dup); LMDB writes and syncs the commit while the stream acknowledges it, and the
//             commit is answered only once both are done. The lease is renewed every ttl/3. A refused publish (another primary has written:
//             JetStream 10071), a commit the stream did not take within publish_deadline, or a lost
//             lease deposes it: every commit from then on is refused (nothing is answered as approved),
//             the daemon drains, and the node is a standby again, re-applying from the stream what it
//             may have missed.
//
// A commit the stream refused (or never received, the node having died) is in this node's ledger
// but in no other's: it answered nobody as approved, and the node rolls it back when it opens as a
// standby, before it follows the stream (the ledger records which commit it published last and under
// which message id; lmdb::rollback_last_commit). A primary waits for each commit's acknowledgement
// before it begins the next, so at most one commit is ever in that state.
//
// The stream's fencing, not the lease, keeps the history single: whoever publishes after sequence N
// first wins, the other is refused and steps down; the lease only keeps nodes from racing.
#pragma once

#include <coconut/clearing/daemon.hpp>
#include <coconut/clearing/journal_envelope.hpp>
#include <coconut/cluster/connection.hpp>
#include <coconut/cluster/journal.hpp>
#include <coconut/cluster/lease.hpp>

#include <chrono>
#include <filesystem>
#include <iosfwd>
#include <string>

namespace coconut::clearing {

struct NodeOptions {
    std::string name;            // unique in the cluster (the lease names its holder by it)
    std::string advertise;       // where terminals reach this node when it is primary ("host:port"), for the lease
    std::string advertise_http;  // its HTTP API ("host:port"): a standby's 503 answers name the primary's
    cluster::NatsOptions nats;
    cluster::StreamConfig stream;
    cluster::LeaseConfig lease;
    ClusterKey key{};
    // How long one commit may wait for the stream's acknowledgement, resending with the same message id
    // (a NATS stream-leader election takes 5–7 s on this kind of machine: clearing/cluster/README.md).
    std::chrono::milliseconds publish_deadline{9000};
    std::chrono::milliseconds publish_attempt_wait{2000};
    // How often the primary renews its lease; 0: lease.ttl / 3. At or above the ttl the primary loses the
    // lease between renewals and learns it only from a refused publish: for tests of that case alone.
    std::chrono::milliseconds lease_renew_every{0};
    // Rewritten (through a rename) whenever the role or the applied position changes: JSON with
    // "node", "role" (standby / primary), "position", "journal_sequence", "primary" (the lease value).
    std::filesystem::path status_file;
};

// Why the node stopped on its own.
struct NodeError {
    enum class Kind : std::uint8_t { nats, daemon, journal };
    Kind kind = Kind::nats;
    std::string message;
};

// Runs the node until SIGINT / SIGTERM (returns ok) or a fatal error: NATS unreachable at start, the
// daemon unable to open or start, or a journal message this node cannot apply (a MAC that fails, a
// message out of order, a change set that does not apply: the copies would diverge — never skipped).
// Progress goes to `log` (one line per event).
coconut::Status<NodeError> run_node(DaemonOptions daemon, const NodeOptions& node, std::ostream& log);

}  // namespace coconut::clearing

// The cluster's clerk routes (clearing/README.md "Joining a node"):
//   GET /v1/clerk/cluster/snapshot   role cluster: the data directory's snapshot (snapshot.hpp), one at a
//                                    time (503 busy meanwhile), taken on a thread of its own in an LMDB
//                                    read transaction (the ledger writer goes on), streamed from its file;
//   GET /v1/clerk/cluster/position   role settlement, read or cluster: the replicated stream position and
//                                    journal head this node's ledger holds now.
// On a primary both are journaled like every clerk read. A standby serves them too (it writes nothing
// but the journal stream, so there they are answered without a clerk journal entry): a node joins from a
// standby's snapshot without loading the primary.
#include "api_internal.hpp"

#include <coconut/clearing/snapshot.hpp>

#include <boost/asio/post.hpp>
#include <fmt/format.h>

namespace coconut::clearing::http::api {

void cluster_snapshot(Call& call) {
    Api::State& api = call.api;
    if (api.s.data_directory.empty()) return call.answer(error_response(503, "unavailable", "this server takes no snapshots"));
    if (api.snapshot_busy->exchange(true)) return call.answer(busy("a snapshot is being taken or sent (one at a time)"));
    boost::asio::post(api.snapshot_worker, [&api, clerk = call.who(), respond = std::move(call.respond)]() mutable {
        auto busy_flag = api.snapshot_busy;
        auto snapshot = take_snapshot(api.s.ledger.env(), api.s.data_directory);
        if (!snapshot) {
            busy_flag->store(false);
            return respond(storage_failure(snapshot.error().message));
        }
        const SnapshotManifest& m = snapshot->manifest();
        ApiResponse response;
        response.content_type = snapshot_content_type;
        response.body = manifest_json(m) + "\n";
        response.file = std::make_shared<ResponseFile>(snapshot->release(), m.lmdb_bytes, [busy_flag] { busy_flag->store(false); });
        if (api.s.writer == nullptr) return respond(std::move(response));  // a standby
        api.journaled_read(std::move(response),
                           action_of(clerk, "snapshot", "", fmt::format("position {}, journal entry {}", m.position, m.journal_sequence)),
                           std::move(respond));
    });
}

void cluster_position(Call& call) {
    const Services& s = call.s();
    auto position = s.ledger.replicated_position();
    if (!position) return call.answer(storage_failure(position.error().message));
    const ledger::JournalHead head = s.ledger.head();
    const json body{{"position", *position},
                    {"journal_sequence", head.sequence},
                    {"journal_hash", to_hex(ByteView(head.hash.data(), head.hash.size()))}};
    if (s.writer == nullptr) return call.answer(json_response(200, body));  // a standby
    call.api.journaled_read(json_response(200, body), action_of(call.who(), "position", "", fmt::format("position {}", *position)),
                            std::move(call.respond));
}

}  // namespace coconut::clearing::http::api

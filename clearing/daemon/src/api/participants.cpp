// POST /v1/clerk/participants (role registry): a participant and its payable accounts in one commit,
// checked by the registry validator as `admin load` checks the registry file.
#include "api_internal.hpp"

#include <coconut/clearing/registry_validator.hpp>

namespace coconut::clearing::http::api {

void register_participant(Call& call) {
    const auto body = object_body(call.request.body);
    if (!body) return call.answer(bad_request("body must be a JSON object"));
    auto read = read_participant(*body);
    if (!read) return call.answer(bad_request(read.error()));
    const Participant p = std::move(read).value();
    std::vector<ledger::Event> events;
    append_participant_opening(events, p.id);
    const Registry& registry = call.s().registry;
    auto write = [&registry, p](lmdb::Txn& txn, std::span<const ledger::EventResult> results, ClerkAction& action) -> lmdb::Status {
        if (auto failed = first_failure(results)) {
            action.outcome = "payable account: " + *failed;
            return Ok{};
        }
        return registry.put_participant(txn, p);
    };
    json answer{{"id", p.id}, {"name", p.name}, {"kind", p.kind}, {"bank_account", p.bank_account}, {"fee_rate_bp", p.fee_rate_bp}};
    call.api.commit(Change{std::move(events), write, [answer](const ClerkAction& done) { return refused_or(done, 201, answer); },
                           action_of(call.who(), "participant", std::to_string(p.id), p.kind + " " + p.name)},
                    std::move(call.respond));
}

}  // namespace coconut::clearing::http::api

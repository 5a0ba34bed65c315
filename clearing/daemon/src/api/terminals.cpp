// The clerk's terminals (role registry): POST /v1/clerk/terminals registers one (checked by the registry
// validator as `admin load` checks the registry file); PUT /v1/clerk/terminals/{id}/status
// {"status":"active"|"suspended"|"retired","reason":"…"}: a suspended or retired terminal is refused
// (58) on every request from the next one on.
#include "api_internal.hpp"

#include <coconut/clearing/registry_validator.hpp>

#include <fmt/format.h>

namespace coconut::clearing::http::api {

void register_terminal(Call& call) {
    const auto body = object_body(call.request.body);
    if (!body) return call.answer(bad_request("body must be a JSON object"));
    auto read = read_terminal(*body);
    if (!read) return call.answer(bad_request(read.error()));
    const TerminalRecord t = std::move(read).value();
    auto participant = call.s().registry.participant(t.participant_id);
    if (!participant) return call.answer(storage_failure(participant.error().message));
    if (!*participant) return call.answer(bad_request("participant " + std::to_string(t.participant_id) + " is not registered"));
    const Registry& registry = call.s().registry;
    auto write = [&registry, t](lmdb::Txn& txn, auto, ClerkAction&) -> lmdb::Status {
        auto stored = registry.terminal_in(txn, t.terminal_id);
        if (!stored) return Unexpected{stored.error()};
        TerminalRecord r = t;
        if (*stored) {  // a re-registration keeps the runtime fields (STAN, batch)
            r.last_stan = (*stored)->last_stan;
            r.batch_number = (*stored)->batch_number;
            r.uploads = (*stored)->uploads;
            r.batch_debits_count = (*stored)->batch_debits_count;
            r.batch_debits_fen = (*stored)->batch_debits_fen;
        }
        return registry.put_terminal(txn, r);
    };
    json answer{{"terminal_id", t.terminal_id},
                {"psam_terminal_id", bcd_to_digits(t.psam_terminal_id)},
                {"participant_id", t.participant_id},
                {"merchant_id", t.merchant_id}};
    call.api.commit(Change{{},
                           write,
                           [answer](const ClerkAction& done) { return refused_or(done, 201, answer); },
                           action_of(call.who(), "terminal", t.terminal_id, "participant " + std::to_string(t.participant_id))},
                    std::move(call.respond));
}

void set_terminal_status(Call& call) {
    const std::string terminal_id(call.params[0]);
    std::optional<TerminalStatus> status;
    std::string reason;
    if (auto bad = read_status_body(call.request, parse_terminal_status, {"active", "suspended", "retired"}, status, reason)) {
        return call.answer(std::move(*bad));
    }
    const Registry& registry = call.s().registry;
    auto known = registry.terminal(terminal_id);
    if (!known) return call.answer(storage_failure(known.error().message));
    if (!*known) return call.answer(not_found("terminal " + terminal_id + " is not registered"));
    auto write = [&registry, terminal_id, status = *status](lmdb::Txn& txn, auto, ClerkAction& action) -> lmdb::Status {
        auto stored = registry.terminal_in(txn, terminal_id);
        if (!stored) return Unexpected{stored.error()};
        if (!*stored) {
            action.outcome = "terminal not registered";
            return Ok{};
        }
        TerminalRecord terminal = **stored;
        terminal.status = status;
        return registry.put_terminal(txn, terminal);
    };
    json answer{{"terminal_id", terminal_id}, {"status", to_string(*status)}};
    call.api.commit(Change{{},
                           write,
                           [answer](const ClerkAction& done) { return refused_or(done, 200, answer); },
                           action_of(call.who(), "terminal_status", terminal_id, fmt::format("{} {}", to_string(*status), reason))},
                    std::move(call.respond));
}

}  // namespace coconut::clearing::http::api

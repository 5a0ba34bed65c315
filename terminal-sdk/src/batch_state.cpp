// The terminal's batch state and its encodings (batch_state.hpp).
#include <coconut/core/assert.hpp>
#include <coconut/sdk/batch_state.hpp>
#include <coconut/sdk/queue.hpp>

#include <fmt/format.h>

#include <array>
#include <fstream>

namespace coconut::sdk {
namespace {

// The totals in payload order (batch_state.hpp).
std::array<std::uint64_t*, 8> fields(BatchTotals& t) {
    return {&t.credits_count, &t.credit_reversals_count, &t.debits_count, &t.debit_reversals_count,
            &t.credits_fen,   &t.credit_reversals_fen,   &t.debits_fen,   &t.debit_reversals_fen};
}

bool is_load_link(LinkKind link) { return link == LinkKind::load_confirmation || link == LinkKind::load_reversal; }

bool valid_stan(std::uint64_t stan) { return stan >= 1 && stan <= stan_max; }
bool valid_batch(std::uint64_t batch) { return batch >= 1 && batch <= iso8583::batch_number_max; }

}  // namespace

std::uint32_t advance_stan(std::uint32_t stan, std::uint32_t count) {
    COCONUT_ASSERT(valid_stan(stan));
    return static_cast<std::uint32_t>((std::uint64_t{stan} - 1 + count) % stan_max) + 1;
}

void BatchState::count(const TransactionRecord& r) {
    switch (r.link) {
        case LinkKind::offline_purchase:
        case LinkKind::clinic_completion: totals.debits_count++, totals.debits_fen += r.amount_fen; break;
        case LinkKind::load_confirmation: totals.credits_count++, totals.credits_fen += r.amount_fen; break;
        case LinkKind::load_reversal:
        case LinkKind::clinic_reversal: count_reversal(r.link, r.amount_fen); break;
        case LinkKind::clinic_hold: break;
    }
}

// A medical refund is booked by its 0200 alone (ISO8583.md §4.10) and counted in the credits as answered:
// once per STAN answered 00, on both sides (a repeat after a lost answer goes under the same STAN).
void BatchState::count_credit(std::uint32_t amount_fen) { totals.credits_count++, totals.credits_fen += amount_fen; }

// A reversal counts when the host answered it 00, with the amount the terminal sent in its field 4 —
// the host counts the same (ISO8583.md §4.7), whatever it found (a partial hold, nothing at all).
void BatchState::count_reversal(LinkKind original, std::uint32_t amount_fen) {
    if (is_load_link(original)) {
        totals.credit_reversals_count++, totals.credit_reversals_fen += amount_fen;
    } else {
        totals.debit_reversals_count++, totals.debit_reversals_fen += amount_fen;
    }
}

void BatchState::close() {
    batch_number = batch_number == iso8583::batch_number_max ? 1 : batch_number + 1;
    totals = {};
}

Bytes encode_batch_state(const BatchState& state) {
    COCONUT_ASSERT(valid_batch(state.batch_number) && valid_stan(state.next_stan), "batch state in range");
    Bytes out{batch_state_version};
    append_be(out, state.batch_number, 4);
    append_be(out, state.reserved_end(), 4);
    BatchTotals totals = state.totals;
    for (const std::uint64_t* field : fields(totals)) append_be(out, *field, 8);
    COCONUT_ASSERT(out.size() == batch_state_size);
    return out;
}

std::optional<BatchState> decode_batch_state(ByteView in) {
    if (in.size() != batch_state_size || in[0] != batch_state_version) return std::nullopt;
    BatchState state;
    const std::uint32_t batch = read_be32(in.subspan(1, 4));
    const std::uint32_t stan = read_be32(in.subspan(5, 4));
    if (!valid_batch(batch) || !valid_stan(stan)) return std::nullopt;
    state.batch_number = batch;
    state.next_stan = stan;
    std::size_t pos = 9;
    for (std::uint64_t* field : fields(state.totals)) *field = read_be(in.subspan(pos, 8)), pos += 8;
    COCONUT_ASSERT(pos == batch_state_size && state.reserved_left == 0);
    return state;
}

Result<std::optional<BatchState>, std::string> read_legacy_batch_file(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) {
        if (std::filesystem::exists(path)) return Unexpected<std::string>{path.string() + ": cannot read the batch state"};
        return std::optional<BatchState>{};
    }
    const auto damaged = [&](std::string_view why) {
        return Unexpected<std::string>{fmt::format("{}: damaged batch state ({})", path.string(), why)};
    };
    std::string magic;
    std::getline(in, magic);
    if (magic != "coconut-terminal-batch 1") return damaged("not a coconut terminal batch file");
    BatchState state;
    BatchTotals& t = state.totals;
    std::string key;
    std::uint64_t batch = 0, stan = 0;
    const auto pair = [&](std::string_view name, std::uint64_t& count, std::uint64_t& fen) {
        return static_cast<bool>(in >> key >> count >> fen) && key == name;
    };
    if (!(in >> key >> batch) || key != "batch" || !valid_batch(batch)) return damaged("batch");
    if (!(in >> key >> stan) || key != "stan" || !valid_stan(stan)) return damaged("stan");
    if (!pair("debits", t.debits_count, t.debits_fen) || !pair("credits", t.credits_count, t.credits_fen) ||
        !pair("credit_reversals", t.credit_reversals_count, t.credit_reversals_fen) ||
        !pair("debit_reversals", t.debit_reversals_count, t.debit_reversals_fen))
        return damaged("totals");
    state.batch_number = static_cast<std::uint32_t>(batch);
    state.next_stan = static_cast<std::uint32_t>(stan);  // every STAN before it may have been used
    return std::optional<BatchState>{state};
}

}  // namespace coconut::sdk

// The cycle's steps, resumable after a crash at any point: each step is idempotent (positions are
// recomputed and compared, files are verified or written, postings answer `exists`), and the state
// is saved atomically after each.
#include "internal.hpp"

#include <fmt/format.h>

#include <ctime>

namespace coconut::settlement {

namespace {

std::uint64_t realtime_ns() {
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    return static_cast<std::uint64_t>(now.tv_sec) * ns_per_s + static_cast<std::uint64_t>(now.tv_nsec);
}

const File* find_file(const std::vector<File>& files, std::string_view name) {
    for (const auto& f : files) {
        if (f.name == name) return &f;
    }
    return nullptr;
}

// Every participant paid must have a bank account, every pain.001 must be valid against the XSD:
// checked before anything is written.
Status check_files(const Positions& positions, const std::vector<File>& files, const std::filesystem::path& schemas_dir) {
    for (const Refund& r : positions.refunds) {
        if (r.account.bank_account.empty() || r.account.account_holder.empty()) {
            return Unexpected{Error{ErrorCode::bad_input,
                                    fmt::format("card {} is owed a refund of {} by bank, but the clearing's returns "
                                                "table names no bank account for it",
                                                bcd_to_digits(r.asn).substr(4), format_fen(static_cast<std::int64_t>(r.amount_fen)))}};
        }
    }
    for (const Payment& p : payments(positions)) {
        for (const auto& position : positions.participants) {
            if (position.participant.id == p.participant_id && position.participant.bank_account.empty()) {
                return Unexpected{
                    Error{ErrorCode::bad_input, fmt::format("participant {} is owed {} but has no bank_account in the registry",
                                                            p.participant_id, format_fen(static_cast<std::int64_t>(p.amount_fen)))}};
            }
        }
    }
    for (const File& f : files) {
        if (f.name.rfind("pain001-", 0) != 0) continue;
        const std::string problems = validate_xml(f.contents, schemas_dir / "pain.001.001.09.xsd");
        if (!problems.empty()) {
            return Unexpected{
                Error{ErrorCode::bad_input, fmt::format("{} is not valid against pain.001.001.09.xsd: {}", f.name, problems)}};
        }
    }
    return Ok{};
}

Status step(const RunOptions& options, CycleRecord& record, CycleState reached) {
    record.state = reached;
    if (auto saved = save_cycle(options.out, record); !saved) return saved;
    if (options.after_step) options.after_step(reached);
    return Ok{};
}

}  // namespace

Result<RunReport> run_cycle(const ledger::Ledger& ledger, const std::vector<clearing::Participant>& participants, Poster* poster,
                            const RunOptions& options) {
    const std::uint32_t cycle = cycle_id(options.date);
    RunReport report;
    COCONUT_TRY(stored, load_cycle(options.out, cycle));
    report.resumed = stored.has_value();
    CycleRecord record;
    if (stored) {
        record = std::move(*stored);  // the window is fixed once the cycle exists
    } else {
        COCONUT_TRY(window, cycle_window(options.out, options.date, options.config.cutoff_seconds));
        record.cycle = cycle;
        record.window = window;
        record.cutoff_seconds = options.config.cutoff_seconds;
    }
    const std::uint64_t now_ns = options.now_ns != 0 ? options.now_ns : realtime_ns();
    const std::uint64_t ready_ns = record.window.end_ns + static_cast<std::uint64_t>(options.margin.count()) * ns_per_s;
    if (now_ns < ready_ns) {
        return Unexpected{Error{ErrorCode::too_early, fmt::format("cycle {} closes at its cut-off {} (UTC+8) and can run {} s after it",
                                                                  cycle, format_cutoff(record.cutoff_seconds), options.margin.count())}};
    }
    if (!options.dry_run && poster == nullptr)
        return Unexpected{Error{ErrorCode::bad_input, "no way to post: give --clearingd or --direct"}};

    COCONUT_TRY(positions, compute_positions(ledger, participants, cycle, record.window, options.progress));
    for (Refund& r : positions.refunds) {
        const auto account = options.refund_accounts.find(r.asn);
        if (account != options.refund_accounts.end()) r.account = account->second;
    }
    auto files = render_files(positions, options.config);
    if (auto checked = check_files(positions, files, options.schemas_dir); !checked) return Unexpected{checked.error()};
    const File* summary = find_file(files, "summary.json");
    COCONUT_ASSERT(summary != nullptr);
    const std::string digest = sha256_hex(summary->contents);
    if (!record.positions_sha256.empty() && record.positions_sha256 != digest) {
        return Unexpected{Error{ErrorCode::conflict, fmt::format("cycle {}: the positions differ from those computed before (summary.json "
                                                                 "sha256 {} then, {} now): the ledger or the registry changed",
                                                                 cycle, record.positions_sha256, digest)}};
    }
    report.positions = std::move(positions);
    report.files = std::move(files);
    if (options.dry_run) {
        record.first_sequence = report.positions.first_sequence;
        record.last_sequence = report.positions.last_sequence;
        report.record = std::move(record);
        return report;
    }

    if (record.state < CycleState::computed) {
        record.first_sequence = report.positions.first_sequence;
        record.last_sequence = report.positions.last_sequence;
        record.positions_sha256 = digest;
        if (auto s = step(options, record, CycleState::computed); !s) return Unexpected{s.error()};
    }
    // Always: writes what is missing, verifies what exists (a conflict stops before any posting).
    if (auto written = write_files(cycle_directory(options.out, cycle), report.files); !written) return Unexpected{written.error()};
    if (record.state < CycleState::files_written) {
        for (const auto& f : report.files) record.files[f.name] = sha256_hex(f.contents);
        if (auto s = step(options, record, CycleState::files_written); !s) return Unexpected{s.error()};
    }
    if (auto written = write_report_html(options.out, cycle); !written) return Unexpected{written.error()};  // so far
    if (record.state < CycleState::posted) {
        const CycleWindow cycle{report.positions.cycle, report.positions.window};
        COCONUT_TRY(outcome, post_all(*poster, cycle, settlement_transfers(report.positions)));
        report.posting = outcome;
        record.transfers_posted = outcome.created + outcome.existed;
        if (auto s = step(options, record, CycleState::posted); !s) return Unexpected{s.error()};
    }
    if (auto written = write_report_html(options.out, record.cycle); !written) return Unexpected{written.error()};  // as posted
    report.record = std::move(record);
    return report;
}

}  // namespace coconut::settlement

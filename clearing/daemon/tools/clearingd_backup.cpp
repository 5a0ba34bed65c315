// coconut-clearingd backup / restore (clearingd_backup.hpp; docs/OPERATIONS.md "Backup and restore").
#include "clearingd_backup.hpp"

#include <fmt/format.h>

namespace coconut::clearing {

void add_backup_commands(CLI::App& app, BackupCommands& c) {
    c.backup = app.add_subcommand("backup", "copy a data directory (and an HSM store) while the daemon serves it, consistently");
    c.backup->add_option("--data", c.backup_options.data, "the data directory")->required();
    c.backup->add_option("--to", c.backup_options.to, "the backup directory to create (missing or empty)")->required();
    c.backup->add_option("--hsm-store", c.backup_options.hsm_store,
                         "coconut-hsmd's store directory: keys.sealed and audit.log are copied (never master.key)");
    c.backup->add_flag("--compact", c.backup_options.compact, "compact the ledger copy (smaller, slower)");
    c.restore = app.add_subcommand("restore", "create a data directory (and an HSM store) from a backup, verified and checked");
    c.restore->add_option("--from", c.restore_options.from, "a directory made by backup")->required();
    c.restore->add_option("--data", c.restore_options.data, "the data directory to create (missing or empty)")->required();
    c.restore->add_option("--hsm-store", c.restore_options.hsm_store,
                          "also restore the backup's HSM store here (missing or empty; add master.key from the custodians)");
    c.restore->add_flag("--force", c.restore_options.force, "replace a non-empty data directory (no daemon may serve it)");
}

Result<std::string> run_backup_command(const BackupCommands& c) {
    if (c.backup->parsed()) {
        const BackupOptions& o = c.backup_options;
        COCONUT_TRY(report, take_backup(o));
        return fmt::format("coconut-clearingd: backup of {} in {}: journal entry {} (stream position {}), {} files, {} bytes{}\n",
                           o.data.string(), o.to.string(), report.ledger.journal_sequence, report.ledger.position, report.files,
                           report.bytes, o.hsm_store.empty() ? "" : "; the HSM store without master.key");
    }
    const RestoreOptions& o = c.restore_options;
    COCONUT_TRY(report, restore_backup(o));
    return fmt::format(
        "coconut-clearingd: restored {} from {}: journal entry {} (stream position {}), {} accounts, {} journal "
        "entries; check ok{}\n",
        o.data.string(), o.from.string(), report.manifest.journal_sequence, report.manifest.position, report.accounts,
        report.journal_entries,
        o.hsm_store.empty() ? "" : fmt::format(". HSM store in {}: put master.key into it before serving", o.hsm_store.string()));
}

}  // namespace coconut::clearing

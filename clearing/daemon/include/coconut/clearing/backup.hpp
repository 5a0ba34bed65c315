// coconut-clearingd backup / restore: a single node's data directory copied while the daemon serves it,
// and put back into a fresh directory (docs/OPERATIONS.md "Backup and restore").
//
// A backup is a directory (0700, files 0600):
//   backup.json      what it holds: format, when it was taken, from which directory, the journal head and
//                    replicated stream position of the copy, and each file's size and SHA-256
//   data.mdb         the ledger's LMDB environment (the registries and the card lifecycle live in it too),
//                    copied by copy_data_directory (snapshot.hpp) inside a read transaction of the backup
//                    process: consistent, and the daemon's writer is never blocked
//   http-token.key   the HTTP token-hashing key (the clerk and card tokens stored in the ledger need it)
//   hsm/keys.sealed, hsm/audit.log
//                    with an HSM store: coconut-hsmd's sealed key store (keys.sealed is replaced by rename,
//                    so the copy is one whole generation; the audit log up to its last complete line).
//                    Never master.key: the key that unseals the store is kept by its custodians, apart
//                    from the backup (hsm-stub/README.md "Copying the store").
//
// The backup is staged next to its target and renamed into place once complete, so a target that exists
// is a whole backup. restore checks every file against backup.json before it uses any, stages the copy
// next to the new data directory, runs `check` on it and compares its journal head with backup.json
// (verify_copy), and only then renames it into place.
#pragma once

#include <coconut/clearing/plan.hpp>
#include <coconut/clearing/snapshot.hpp>

#include <cstdint>
#include <filesystem>
#include <string>

namespace coconut::clearing {

inline constexpr std::uint32_t backup_format = 1;
inline constexpr std::string_view backup_manifest_file = "backup.json";
inline constexpr std::string_view backup_hsm_directory = "hsm";

struct BackupOptions {
    std::filesystem::path data;       // the data directory (a daemon may be serving it)
    std::filesystem::path to;         // the backup to create: missing or an empty directory
    std::filesystem::path hsm_store;  // coconut-hsmd's store directory; empty: none
    bool compact = false;             // MDB_CP_COMPACT: smaller, slower
};

struct BackupReport {
    SnapshotManifest ledger;  // head and position of the copy
    std::uint64_t files = 0;
    std::uint64_t bytes = 0;
};

// Errors: bad_input (no ledger in `data`, a store without keys.sealed), conflict (`to` not empty),
// storage (copying or writing, naming the step).
Result<BackupReport> take_backup(const BackupOptions& options);

struct RestoreOptions {
    std::filesystem::path from;       // a backup
    std::filesystem::path data;       // the data directory to create: missing or empty
    std::filesystem::path hsm_store;  // where the backup's HSM store goes (missing or empty); empty: not restored
    bool force = false;               // replace a non-empty `data` no daemon serves
};

// Errors: bad_input (`from` is not a backup), conflict (a non-empty target without force; an HSM store
// target that is not empty), locked (a daemon serves `data`), storage (a file differs from backup.json —
// the backup is damaged — or the copy fails its check).
Result<JoinReport> restore_backup(const RestoreOptions& options);

}  // namespace coconut::clearing

// replicate_store (hsm.hpp): a copy of the sealed store for a second coconut-hsmd (README.md "Two HSMs").
#include <coconut/core/assert.hpp>
#include <coconut/hsm/hsm.hpp>

#include "file_io.hpp"
#include "secure_buffer.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <optional>

namespace coconut::hsm {

std::string_view replication_kind_name(Replication::Kind kind) {
    switch (kind) {
        case Replication::Kind::created: return "created";
        case Replication::Kind::updated: return "updated";
        case Replication::Kind::current: return "current";
    }
    return "unknown";
}

namespace {

namespace fs = std::filesystem;

// The bytes of a store's two files; the master key is wiped when this goes.
struct StoreFiles {
    Bytes master;
    Bytes sealed;
    StoreFiles() = default;
    StoreFiles(StoreFiles&&) = default;
    StoreFiles& operator=(StoreFiles&&) = default;
    StoreFiles(const StoreFiles&) = delete;
    StoreFiles& operator=(const StoreFiles&) = delete;
    ~StoreFiles() { sodium_memzero(master.data(), master.size()); }
};

Outcome<StoreFiles> read_store_files(const StorePaths& paths) {
    StoreFiles files;
    COCONUT_TRY(master, detail::read_small_file(paths.master_key(), master_key_bytes));
    files.master = std::move(master);
    COCONUT_TRY(sealed, detail::read_small_file(paths.sealed(), max_sealed_bytes));
    files.sealed = std::move(sealed);
    return files;
}

bool same_bytes(const Bytes& a, const Bytes& b) { return a.size() == b.size() && sodium_memcmp(a.data(), b.data(), a.size()) == 0; }

// A new copy in an absent or empty directory.
Outcome<Replication> create_copy(const StorePaths& to, const StoreFiles& files, std::uint64_t generation) {
    std::error_code ec;
    fs::create_directories(to.dir, ec);
    if (ec) return fail(Errc::io_error, fmt::format("cannot create {}: {}", to.dir.string(), ec.message()));
    fs::permissions(to.dir, fs::perms::owner_all, fs::perm_options::replace, ec);
    if (ec) return fail(Errc::io_error, fmt::format("cannot set {} to mode 0700: {}", to.dir.string(), ec.message()));
    if (auto written = detail::write_new_private_file(to.master_key(), files.master); !written) return Unexpected<Failure>{written.error()};
    if (auto written = detail::write_new_private_file(to.sealed(), files.sealed); !written) return Unexpected<Failure>{written.error()};
    return Replication{Replication::Kind::created, generation, 0};
}

// An existing copy brought to the source's generation, never backwards or across a fork.
Outcome<Replication> update_copy(const StorePaths& from, const StorePaths& to, const StoreFiles& files, std::uint64_t generation) {
    COCONUT_TRY(lock, StoreLock::acquire(to));
    COCONUT_TRY(copy, KeyStore::open(to.dir));
    COCONUT_TRY(existing, read_store_files(to));
    if (!same_bytes(existing.master, files.master))
        return fail(Errc::store_exists,
                    fmt::format("{} holds another key store (another master key), not a copy of {}; give a new directory", to.dir.string(),
                                from.dir.string()));
    const std::uint64_t had = copy.generation();
    if (had > generation || (had == generation && !same_bytes(existing.sealed, files.sealed)))
        return fail(Errc::store_forked,
                    fmt::format("{} is at store generation {}, {} at {}: a ceremony was held on the copy and the two stores forked; "
                                "hold ceremonies on one store only, and copy it over a new directory",
                                to.dir.string(), had, from.dir.string(), generation));
    if (had == generation) return Replication{Replication::Kind::current, generation, had};
    if (auto replaced = detail::replace_file_atomically(to.sealed(), files.sealed); !replaced) return Unexpected<Failure>{replaced.error()};
    (void)lock;
    return Replication{Replication::Kind::updated, generation, had};
}

}  // namespace

Outcome<Replication> replicate_store(const fs::path& from_dir, const fs::path& to_dir) {
    detail::ensure_sodium();
    const StorePaths from{from_dir}, to{to_dir};
    std::error_code ec;
    if (fs::exists(to_dir, ec) && fs::equivalent(from_dir, to_dir, ec))
        return fail(Errc::store_exists, fmt::format("{} and {} are the same directory", from_dir.string(), to_dir.string()));
    COCONUT_TRY(lock, StoreLock::acquire(from));
    COCONUT_TRY(source, KeyStore::open(from_dir));  // refuses a tampered, truncated or too open store
    COCONUT_TRY(files, read_store_files(from));
    // The bytes read are those just opened (the lock keeps ceremonies out); checked, not assumed.
    COCONUT_ASSERT(files.master.size() == master_key_bytes, "the master key just opened is 32 bytes");
    (void)lock;
    if (fs::exists(to.sealed(), ec) || fs::exists(to.master_key(), ec)) return update_copy(from, to, files, source.generation());
    if (fs::exists(to_dir, ec) && (!fs::is_directory(to_dir, ec) || !fs::is_empty(to_dir, ec)))
        return fail(Errc::store_exists, fmt::format("{} exists and is neither empty nor a copy of {}; give a new directory",
                                                    to_dir.string(), from_dir.string()));
    return create_copy(to, files, source.generation());
}

}  // namespace coconut::hsm

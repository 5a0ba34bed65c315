// The leadership lease: one key in a replicated JetStream key-value bucket whose entries expire after
// `ttl` (the bucket's max age). Whoever created the key and keeps updating it at its revision holds
// the lease; a holder that stops renewing loses it about `ttl` later (plus the server's expiry delay,
// clearing/cluster/README.md "Measured"), and a rival's acquire then succeeds.
//
// Rules
//   - acquire succeeds only when the key is absent, expired or released; it returns the revision the
//     holder renews at. Anyone else gets `held` (naming the current holder).
//   - renew(revision) succeeds only if nobody wrote the key since that revision; it returns the new
//     revision. Otherwise `lost`: the lease expired and someone else may hold it. A holder must renew
//     well within ttl (every ttl/3, say) and stop acting as holder once `lost` or once ttl has passed
//     since its last successful renew, whichever comes first.
//   - The bucket's clock is the servers': a holder whose renewals stall (a pause, a partition) loses
//     the lease without being told; the journal stream's fencing (journal.hpp) is what stops a
//     deposed holder from writing.
//   - release(revision) deletes the key if the revision is still current (a clean hand-over, no
//     wait for ttl); `lost` otherwise, and then nothing changes.
#pragma once

#include <coconut/cluster/connection.hpp>
#include <coconut/core/result.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace coconut::cluster {

struct LeaseConfig {
    std::string bucket = "COCONUT_LEASE";
    std::string key = "primary";
    int replicas = 3;
    std::chrono::milliseconds ttl{3000};
};

enum class LeaseErrorCode {
    held,         // acquire: someone else holds the lease
    lost,         // renew/release: the revision is no longer current
    unavailable,  // no answer in time, no bucket leader: whether a write happened is unknown
    other,
};
const char* to_string(LeaseErrorCode code);

struct LeaseError {
    LeaseErrorCode code = LeaseErrorCode::other;
    std::string message;
};

struct LeaseHolder {
    std::string value;           // what the holder wrote (lease_value below)
    std::uint64_t revision = 0;  // the revision a renew must name
};

class Lease {
public:
    // Creates the bucket (history 1, max age = ttl, file storage) or checks an existing one's ttl and
    // replicas (`mismatch`).
    static Result<Lease, Error> open(Connection& connection, LeaseConfig config);
    Lease(Lease&&) noexcept;
    Lease& operator=(Lease&&) noexcept;
    ~Lease();

    Result<std::uint64_t, LeaseError> acquire(std::string_view value);
    Result<std::uint64_t, LeaseError> renew(std::uint64_t revision, std::string_view value);
    Result<std::optional<LeaseHolder>, LeaseError> read();
    Status<LeaseError> release(std::uint64_t revision);

    const LeaseConfig& config() const;

    struct State;

private:
    explicit Lease(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

// The lease's value: who holds it and where its service answers, as one line of JSON
// {"node":"…","address":"…"}. parse_lease_value returns nothing for anything else.
struct LeaseValue {
    std::string node;
    std::string address;
    friend bool operator==(const LeaseValue&, const LeaseValue&) = default;
};
std::string lease_value(const LeaseValue& value);
std::optional<LeaseValue> parse_lease_value(std::string_view text);

}  // namespace coconut::cluster

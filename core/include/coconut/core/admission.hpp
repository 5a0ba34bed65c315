// Admission of network peers — what every listener of every daemon does before it serves anyone:
// connection limits per address and in total (before authentication), per identity (after it), the
// process's open-file limit raised at start, and an accept loop that waits instead of spinning when
// the process runs out of descriptors.
//
//   coconut::core::AddressAdmission admission({.per_key = 64, .total = 256});
//   coconut::core::AcceptBackoff backoff(acceptor.get_executor());
//
//   void accept() {
//       acceptor.async_accept(executor, [this](const error_code& ec, tcp::socket socket) {
//           if (stopping) return;
//           if (!ec) {
//               auto ticket = admission.admit(peer_address(socket));
//               if (!ticket) refuse(std::move(socket), ticket.refusal());
//               else start_session(std::move(socket), std::move(ticket));   // the session holds the ticket
//           }
//           backoff.after(ec, [this] { accept(); });   // now, later (EMFILE…), or never (closed)
//       });
//   }
//
// Everything here is thread-safe unless it says otherwise. Nothing here logs: callers read the
// counters and log with their own context.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>

namespace coconut::core {

// ---- Connection limits ------------------------------------------------------------------------

// Limits of one admission control. Both must be ≥ 1; `unlimited` switches one off.
struct AdmissionLimits {
    static constexpr std::size_t unlimited = std::numeric_limits<std::size_t>::max();
    // Tickets one key may hold at once: one client address before authentication, one identity
    // (terminal, clerk token, HSM client) after it.
    std::size_t per_key = unlimited;
    // Tickets all keys together may hold at once.
    std::size_t total = unlimited;
};

// Why admit() refused. `per_key` is checked first: when one key is at its own limit, that key is the
// cause even if the total is reached as well.
enum class Refusal : std::uint8_t {
    none,     // admitted
    per_key,  // this key already holds AdmissionLimits::per_key tickets
    total,    // all keys together hold AdmissionLimits::total tickets
};
// "none", "per-key", "total".
const char* refusal_name(Refusal refusal) noexcept;

// Counters of one admission control, read at one instant.
struct AdmissionStats {
    std::size_t open = 0;               // tickets held now
    std::size_t keys = 0;               // distinct keys holding at least one ticket now
    std::uint64_t admitted = 0;         // tickets handed out since construction
    std::uint64_t refused_per_key = 0;  // admit() refused with Refusal::per_key since construction
    std::uint64_t refused_total = 0;    // admit() refused with Refusal::total since construction
};

namespace detail {
template <class Key>
struct AdmissionState;
}

template <class Key>
class BasicAdmissionControl;

// One admitted connection's slot: move-only, released when destroyed (or by release()). A refused
// admit() returns an empty ticket that holds nothing and says why. A ticket may outlive the control
// that issued it (the counters it releases into live as long as either).
template <class Key>
class Admission {
public:
    Admission() = default;
    Admission(Admission&& other) noexcept;
    Admission& operator=(Admission&& other) noexcept;
    Admission(const Admission&) = delete;
    Admission& operator=(const Admission&) = delete;
    ~Admission();

    // True while the ticket holds a slot.
    explicit operator bool() const noexcept { return state_ != nullptr; }
    // Refusal::none for a ticket that was admitted (also after release()).
    Refusal refusal() const noexcept { return refusal_; }
    // The key as counted (addresses in canonical form, see canonical_address()).
    const Key& key() const noexcept { return key_; }
    // Gives the slot back now; later calls and the destructor do nothing.
    void release() noexcept;

private:
    friend class BasicAdmissionControl<Key>;
    std::shared_ptr<detail::AdmissionState<Key>> state_;
    Key key_{};
    Refusal refusal_ = Refusal::none;
};

// Counts tickets per key and in total and refuses beyond AdmissionLimits. One mutex; admit() and a
// ticket's release are O(log keys).
template <class Key>
class BasicAdmissionControl {
public:
    // Throws std::invalid_argument if a limit is 0 (a listener that admits nobody is a mistake).
    explicit BasicAdmissionControl(AdmissionLimits limits);

    // A ticket holding one slot of `key`, or an empty ticket saying why not (the refusal is counted).
    Admission<Key> admit(const Key& key);

    AdmissionLimits limits() const noexcept { return limits_; }
    // Tickets `key` holds now.
    std::size_t held(const Key& key) const;
    AdmissionStats stats() const;

private:
    AdmissionLimits limits_;
    std::shared_ptr<detail::AdmissionState<Key>> state_;
};

// Before authentication: one key per client address. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d,
// what a dual-stack socket reports for an IPv4 peer) count as the IPv4 address.
using AddressAdmission = BasicAdmissionControl<boost::asio::ip::address>;
using AddressTicket = Admission<boost::asio::ip::address>;
// After authentication: one key per identity (a terminal id, a clerk token id, an HSM client id).
using IdentityAdmission = BasicAdmissionControl<std::string>;
using IdentityTicket = Admission<std::string>;

// The address a peer is counted and matched as: IPv4-mapped IPv6 → IPv4, anything else unchanged.
boost::asio::ip::address canonical_address(const boost::asio::ip::address& address);

extern template class Admission<boost::asio::ip::address>;
extern template class Admission<std::string>;
extern template class BasicAdmissionControl<boost::asio::ip::address>;
extern template class BasicAdmissionControl<std::string>;

// ---- Open-file limit --------------------------------------------------------------------------

// Raises the soft RLIMIT_NOFILE to the hard limit (an unlimited hard limit: to the kernel's
// fs.nr_open) and returns the soft limit in effect afterwards — unchanged if it could not be raised.
// Every connection costs a descriptor; the default soft limit (1,024 on most systems) is below the
// connection limits of the daemons. Call once at start, before threads are started; log the result.
std::uint64_t raise_open_file_limit() noexcept;

// ---- Accepting without spinning ---------------------------------------------------------------

struct AcceptBackoffConfig {
    // After the first accept that fails for lack of descriptors or memory, wait this long; double the
    // wait after each further failure up to `delay_max`; back to `delay_initial` after a success.
    // 10 ms is short enough that a burst of closed connections is used at once; 1 s keeps a process
    // that stays at its limit at a few wake-ups per second (a spinning loop costs a whole core).
    std::chrono::milliseconds delay_initial{10};
    std::chrono::milliseconds delay_max{1'000};
};

// What AcceptBackoff::after() did.
enum class AcceptStep : std::uint8_t {
    accept_now,    // success, or a failure of one pending connection (ECONNABORTED, EPROTO, …)
    accept_later,  // out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) or an unknown error
    stop,          // the acceptor was closed (operation_aborted, EBADF): accept no more
};

// The pacing of one acceptor's accept loop. after() and cancel() must be called on the acceptor's
// executor (from its accept completion handler, and from the code that closes the acceptor); the
// counters may be read from any thread.
class AcceptBackoff {
public:
    explicit AcceptBackoff(boost::asio::any_io_executor executor, AcceptBackoffConfig config = {});

    // Given the result of one accept, calls `accept_again` at once, after the current delay, or never,
    // and says which. The caller keeps itself alive in `accept_again` as it does in its accept handler.
    AcceptStep after(const boost::system::error_code& accept_error, std::function<void()> accept_again);
    // Drops a delayed accept_again (it will never run). Call when closing the acceptor.
    void cancel();

    // Accepts that failed for lack of descriptors or memory.
    std::uint64_t exhausted_count() const noexcept { return exhausted_.load(std::memory_order_relaxed); }
    // Accepts that failed for any other reason except the acceptor being closed.
    std::uint64_t failed_count() const noexcept { return failed_.load(std::memory_order_relaxed); }

    // The error classes after() acts on.
    static bool is_exhaustion(const boost::system::error_code& error) noexcept;
    static bool is_connection_error(const boost::system::error_code& error) noexcept;
    static bool is_closed(const boost::system::error_code& error) noexcept;

private:
    boost::asio::steady_timer timer_;
    AcceptBackoffConfig config_;
    std::chrono::milliseconds delay_;
    std::uint64_t generation_ = 0;  // bumped by cancel(): a timer completion from before is stale
    std::atomic<std::uint64_t> exhausted_{0};
    std::atomic<std::uint64_t> failed_{0};
};

}  // namespace coconut::core

#include <coconut/core/admission.hpp>

#include <boost/asio/error.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>

namespace coconut::core {

const char* refusal_name(Refusal refusal) noexcept {
    switch (refusal) {
        case Refusal::none: return "none";
        case Refusal::per_key: return "per-key";
        case Refusal::total: return "total";
    }
    return "unknown";
}

boost::asio::ip::address canonical_address(const boost::asio::ip::address& address) {
    if (address.is_v6() && address.to_v6().is_v4_mapped())
        return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, address.to_v6());
    return address;
}

namespace {

boost::asio::ip::address admission_key(const boost::asio::ip::address& address) { return canonical_address(address); }
const std::string& admission_key(const std::string& identity) { return identity; }

}  // namespace

namespace detail {

// The counters shared by a control and its tickets.
template <class Key>
struct AdmissionState {
    mutable std::mutex mutex;
    std::map<Key, std::size_t, std::less<>> held;  // only keys holding ≥ 1 ticket
    std::size_t open = 0;
    std::uint64_t admitted = 0;
    std::uint64_t refused_per_key = 0;
    std::uint64_t refused_total = 0;

    void release(const Key& key) noexcept {
        std::lock_guard lock(mutex);
        auto it = held.find(key);
        if (it == held.end() || it->second == 0 || open == 0) std::terminate();  // a ticket released twice: a bug
        if (--it->second == 0) held.erase(it);
        --open;
    }
};

}  // namespace detail

// ---- Admission ----

template <class Key>
Admission<Key>::Admission(Admission&& other) noexcept
    : state_(std::move(other.state_)), key_(std::move(other.key_)), refusal_(other.refusal_) {
    other.state_.reset();
}

template <class Key>
Admission<Key>& Admission<Key>::operator=(Admission&& other) noexcept {
    if (this != &other) {
        release();
        state_ = std::move(other.state_);
        other.state_.reset();
        key_ = std::move(other.key_);
        refusal_ = other.refusal_;
    }
    return *this;
}

template <class Key>
Admission<Key>::~Admission() {
    release();
}

template <class Key>
void Admission<Key>::release() noexcept {
    if (!state_) return;
    state_->release(key_);
    state_.reset();
}

// ---- BasicAdmissionControl ----

template <class Key>
BasicAdmissionControl<Key>::BasicAdmissionControl(AdmissionLimits limits)
    : limits_(limits), state_(std::make_shared<detail::AdmissionState<Key>>()) {
    if (limits.per_key == 0 || limits.total == 0)
        throw std::invalid_argument("an admission limit of 0 admits nobody; use AdmissionLimits::unlimited to switch a limit off");
}

template <class Key>
Admission<Key> BasicAdmissionControl<Key>::admit(const Key& key) {
    Admission<Key> ticket;
    ticket.key_ = admission_key(key);
    auto& state = *state_;
    std::lock_guard lock(state.mutex);
    auto it = state.held.find(ticket.key_);
    const std::size_t held = it == state.held.end() ? 0 : it->second;
    if (held >= limits_.per_key) {
        ++state.refused_per_key;
        ticket.refusal_ = Refusal::per_key;
        return ticket;
    }
    if (state.open >= limits_.total) {
        ++state.refused_total;
        ticket.refusal_ = Refusal::total;
        return ticket;
    }
    if (it == state.held.end()) it = state.held.emplace(ticket.key_, 0).first;
    ++it->second;
    ++state.open;
    ++state.admitted;
    ticket.state_ = state_;
    return ticket;
}

template <class Key>
std::size_t BasicAdmissionControl<Key>::held(const Key& key) const {
    std::lock_guard lock(state_->mutex);
    auto it = state_->held.find(admission_key(key));
    return it == state_->held.end() ? 0 : it->second;
}

template <class Key>
AdmissionStats BasicAdmissionControl<Key>::stats() const {
    std::lock_guard lock(state_->mutex);
    return {state_->open, state_->held.size(), state_->admitted, state_->refused_per_key, state_->refused_total};
}

template class Admission<boost::asio::ip::address>;
template class Admission<std::string>;
template class BasicAdmissionControl<boost::asio::ip::address>;
template class BasicAdmissionControl<std::string>;

// ---- Open-file limit ----

namespace {

// The most a process may set RLIMIT_NOFILE to on Linux; 2^20 (the kernel's default) if unreadable.
rlim_t kernel_open_file_max() {
    std::ifstream in("/proc/sys/fs/nr_open");
    rlim_t value = 0;
    if (in >> value && value > 0) return value;
    return rlim_t{1} << 20;
}

}  // namespace

std::uint64_t raise_open_file_limit() noexcept {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
    const rlim_t target = limit.rlim_max == RLIM_INFINITY ? kernel_open_file_max() : limit.rlim_max;
    if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < target) {
        rlimit raised = limit;
        raised.rlim_cur = target;
        if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
    }
    return limit.rlim_cur == RLIM_INFINITY ? std::numeric_limits<std::uint64_t>::max() : static_cast<std::uint64_t>(limit.rlim_cur);
}

// ---- AcceptBackoff ----

AcceptBackoff::AcceptBackoff(boost::asio::any_io_executor executor, AcceptBackoffConfig config)
    : timer_(executor), config_(config), delay_(config.delay_initial) {
    if (config.delay_initial.count() <= 0 || config.delay_max < config.delay_initial)
        throw std::invalid_argument("accept backoff: need 0 < delay_initial <= delay_max");
}

bool AcceptBackoff::is_exhaustion(const boost::system::error_code& error) noexcept {
    using boost::system::errc::errc_t;
    return error == errc_t::too_many_files_open || error == errc_t::too_many_files_open_in_system || error == errc_t::no_buffer_space ||
           error == errc_t::not_enough_memory;
}

// Errors of the one connection being accepted, which accept(2) reports in place of the next one
// (Linux accept(2), "Error handling"): the listening socket is fine, accept again at once.
bool AcceptBackoff::is_connection_error(const boost::system::error_code& error) noexcept {
    using boost::system::errc::errc_t;
    return error == errc_t::connection_aborted || error == errc_t::protocol_error || error == errc_t::operation_not_permitted ||
           error == errc_t::network_down || error == errc_t::no_protocol_option || error == errc_t::host_unreachable ||
           error == errc_t::network_unreachable || error == errc_t::operation_not_supported || error == errc_t::interrupted ||
           error == errc_t::resource_unavailable_try_again || error.value() == EHOSTDOWN || error.value() == ENONET;
}

bool AcceptBackoff::is_closed(const boost::system::error_code& error) noexcept {
    return error == boost::asio::error::operation_aborted || error == boost::asio::error::bad_descriptor;
}

AcceptStep AcceptBackoff::after(const boost::system::error_code& accept_error, std::function<void()> accept_again) {
    if (!accept_error) {
        delay_ = config_.delay_initial;
        accept_again();
        return AcceptStep::accept_now;
    }
    if (is_closed(accept_error)) return AcceptStep::stop;
    if (is_connection_error(accept_error)) {
        failed_.fetch_add(1, std::memory_order_relaxed);
        accept_again();
        return AcceptStep::accept_now;
    }
    // Out of descriptors or memory, or an error accept(2) does not document: accepting again at once
    // would fail again at once (the pending connection stays in the backlog), so wait.
    (is_exhaustion(accept_error) ? exhausted_ : failed_).fetch_add(1, std::memory_order_relaxed);
    const std::uint64_t generation = generation_;
    timer_.expires_after(delay_);
    delay_ = std::min(delay_ * 2, config_.delay_max);
    timer_.async_wait([this, generation, again = std::move(accept_again)](const boost::system::error_code& ec) {
        if (ec || generation != generation_) return;
        again();
    });
    return AcceptStep::accept_later;
}

void AcceptBackoff::cancel() {
    ++generation_;
    timer_.cancel();
}

}  // namespace coconut::core

// Private: libsodium guarded memory for key material (mlocked, guard pages, wiped and unlocked on free).
#pragma once

#include <coconut/core/assert.hpp>

#include <sodium.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

namespace coconut::hsm::detail {

// Calls sodium_init once; throws if libsodium cannot initialise (a start-up failure).
void ensure_sodium();

// A fixed-capacity buffer in sodium_malloc memory. Move-only; sodium_free zeroes it.
class SecureBuffer {
public:
    SecureBuffer() = default;
    explicit SecureBuffer(std::size_t capacity) : capacity_(capacity) {
        ensure_sodium();
        if (capacity_ == 0) return;
        data_ = static_cast<std::uint8_t*>(sodium_malloc(capacity_));
        if (data_ == nullptr) throw std::bad_alloc();
        sodium_memzero(data_, capacity_);
    }
    SecureBuffer(SecureBuffer&& other) noexcept { swap(other); }
    SecureBuffer& operator=(SecureBuffer&& other) noexcept {
        SecureBuffer(std::move(other)).swap(*this);
        return *this;
    }
    SecureBuffer(const SecureBuffer&) = delete;
    SecureBuffer& operator=(const SecureBuffer&) = delete;
    ~SecureBuffer() {
        if (data_ != nullptr) sodium_free(data_);
    }

    std::uint8_t* data() { return data_; }
    const std::uint8_t* data() const { return data_; }
    std::size_t capacity() const { return capacity_; }
    std::size_t size() const { return size_; }
    void resize(std::size_t size) {
        COCONUT_ASSERT(size <= capacity_);
        size_ = size;
    }

    // Appends `count` bytes, growing (copy to a larger guarded block) when needed. Returns the offset.
    std::size_t append(const void* bytes, std::size_t count) {
        if (size_ + count > capacity_) grow(size_ + count);
        std::memcpy(data_ + size_, bytes, count);
        const std::size_t offset = size_;
        size_ += count;
        return offset;
    }

    void swap(SecureBuffer& other) noexcept {
        std::swap(data_, other.data_);
        std::swap(capacity_, other.capacity_);
        std::swap(size_, other.size_);
    }

private:
    void grow(std::size_t needed) {
        std::size_t capacity = capacity_ == 0 ? 256 : capacity_;
        while (capacity < needed) capacity *= 2;
        SecureBuffer bigger(capacity);
        if (size_ > 0) std::memcpy(bigger.data_, data_, size_);
        bigger.size_ = size_;
        swap(bigger);
    }

    std::uint8_t* data_ = nullptr;
    std::size_t capacity_ = 0;
    std::size_t size_ = 0;
};

// A T (a crypto::Secret) constructed in its own sodium_malloc block: locked, between guard pages,
// destroyed (T wipes itself) and then zeroed and unlocked by sodium_free. For keys that live as long as
// a connection or a log: client link keys, the audit key.
template <class T, class... Args>
std::shared_ptr<T> make_guarded(Args&&... args) {
    ensure_sodium();
    void* raw = sodium_malloc(sizeof(T));
    if (raw == nullptr) throw std::bad_alloc();
    T* object = nullptr;
    try {
        object = new (raw) T(std::forward<Args>(args)...);
    } catch (...) {
        sodium_free(raw);
        throw;
    }
    return std::shared_ptr<T>(object, [](T* p) {
        p->~T();
        sodium_free(p);
    });
}

}  // namespace coconut::hsm::detail

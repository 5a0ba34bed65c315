// The registry's stored encodings (private to coconut::clearing_registry): each record and key as it
// lies in its LMDB table. Every encoder asserts that what it wrote has the layout's size; every decoder
// refuses a wrong size, version or out-of-range field (nullopt). encode_card / decode_card and
// encode_terminal / decode_terminal are public (registry.hpp).
#pragma once

#include <coconut/clearing/registry.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace coconut::clearing::codec {

// Leading byte of every stored record: a layout change gets a new version instead of a silent misread.
inline constexpr std::uint8_t record_version = 1;

ByteView text_view(std::string_view s);
Bytes id_bytes(const ledger::Id& id);
ledger::Id read_id(ByteView b);

Bytes encode_purchase_proof(const PurchaseProof& p);
std::optional<PurchaseProof> decode_purchase_proof(ByteView b);
Bytes purchase_key(const Registry::PurchaseKey& k);

std::string encode_participant(const Participant& p);
std::optional<Participant> decode_participant(ByteView b);

// Risk flags: key (kind, ASN, ATC, type) → value (timestamp BE8 ‖ detail).
inline constexpr std::size_t risk_key_size = 1 + 10 + 2 + 1;
Bytes risk_key(const RiskFlag& f);
Bytes encode_risk_value(const RiskFlag& f);
std::optional<RiskFlag> decode_risk(ByteView key, ByteView value);

Bytes load_key(const Asn& asn, std::uint16_t online_atc);
Bytes encode_load_attempt(const LoadAttempt& a);
std::optional<LoadAttempt> decode_load_attempt(ByteView b);
Bytes encode_hold(const HoldRecord& h);
std::optional<HoldRecord> decode_hold(ByteView b);
// Hotlist log: version BE8 → '+' (listed) / '-' (delisted) ‖ ASN.
Bytes encode_hotlist_entry(const HotlistEntry& e);
std::optional<HotlistEntry> decode_hotlist_entry(ByteView b);

}  // namespace coconut::clearing::codec

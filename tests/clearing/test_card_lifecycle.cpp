// The card lifecycle (clearing/README.md "Card lifecycle"; card_lifecycle.hpp): report lost, found,
// replacement with the medical balance moved at once and the purse balance carried after the waiting
// period, the 280000 load that collects it, late uploads after the carry, and the races between them.
// Every scenario ends with check(): the ledger's invariants and cards = shadows.
#include "clearing_fixture.hpp"

#include <coconut/clearing/card_lifecycle.hpp>
#include <coconut/settlement/settlement.hpp>

#include <nlohmann/json.hpp>

using namespace clearing_test;

namespace {

constexpr std::uint64_t wait_s = 100;
constexpr std::uint64_t ns_per_s = 1'000'000'000ULL;
constexpr std::uint64_t t0_ns = 1'800'000'000'000'000'000ULL;

template <std::size_t N>
std::array<std::uint8_t, N> bcd(const std::string& digits) {
    std::array<std::uint8_t, N> out{};
    const Bytes b = *digits_to_bcd(digits);
    std::copy(b.begin(), b.end(), out.begin());
    return out;
}

crypto::Key16 card_key(const std::string& master_hex, const std::string& asn) {
    crypto::Block issuer{};
    const Bytes issuer_bytes = hex(issuer_hex);
    std::copy(issuer_bytes.begin(), issuer_bytes.end(), issuer.begin());
    return crypto::diversify_card_key(crypto::Key16(hex(master_hex)), issuer, crypto::card_factor_from_asn(asn_of(asn)));
}

// One online load as the card computes it; `processing` 210000 (from the float) or 280000 (transfer in).
struct Load {
    std::string asn = card_b;
    std::string processing = "280000";
    std::uint32_t amount_fen = 1000;
    std::uint32_t old_balance_fen = 1000;
    std::uint16_t atc = 1;
    std::array<std::uint8_t, 4> random{0x01, 0x02, 0x03, 0x04};
    std::string terminal = psam_terminal;

    crypto::CardDateTime when() const {
        crypto::CardDateTime w;
        w.date = bcd<4>("20261206");
        w.time = bcd<3>("101500");
        return w;
    }
    crypto::Key8 session() const { return crypto::load_session_key(card_key(load_master_hex, asn), random, atc); }
    crypto::Mac4 mac2() const {
        return crypto::des_mac(session(), crypto::load_mac2_input(amount_fen, crypto::type_ep_load, bcd<6>(terminal), when()));
    }
    crypto::Mac4 tac() const {
        return crypto::des_mac(crypto::tac_key(card_key(tac_master_hex, asn)),
                               crypto::load_tac_input(old_balance_fen + amount_fen, atc, amount_fen, crypto::type_ep_load, bcd<6>(terminal),
                                                      when()));
    }
    Message message(const std::string& mti, std::uint32_t stan) const {
        Message m(mti);
        m.set(2, asn.substr(4));
        m.set(3, processing);
        m.set_number(4, amount_fen, 12);
        m.set(7, "1206101500");
        m.set_number(11, stan, 6);
        m.set(41, "BUS00001");
        m.set_number(60, 1, 6);
        return m;
    }
    template <class Data>
    Data data() const {
        Data d;
        d.asn = asn_of(asn);
        d.old_balance_fen = old_balance_fen;
        d.online_atc = atc;
        d.terminal_id = bcd<6>(terminal);
        d.when = when();
        return d;
    }
    Message request(std::uint32_t stan) const {
        Message m = message("0200", stan);
        auto d = data<iso8583::LoadRequestData>();
        d.card_random = random;
        d.mac1 = crypto::des_mac(session(), crypto::load_mac1_input(old_balance_fen, amount_fen, crypto::type_ep_load, d.terminal_id));
        m.set(62, iso8583::encode_load_request(d));
        return m;
    }
    Message confirmation(std::uint32_t stan) const {
        Message m = message("0220", stan);
        auto d = data<iso8583::LoadConfirmationData>();
        d.tac = tac();
        m.set(62, iso8583::encode_load_confirmation(d));
        return m;
    }
    Message reversal(std::uint32_t stan) const {
        Message m = message("0400", stan);
        m.set(62, iso8583::encode_load_reference({asn_of(asn), atc}));
        m.set(90, "0200" + *iso8583::digits(stan, 6) + "1206101500" + std::string(22, '0'));
        return m;
    }
};

Tap tap(std::uint32_t amount_fen, std::uint32_t balance_before_fen, std::uint16_t atc, const std::string& asn = card_a) {
    Tap t;
    t.asn = asn;
    t.amount_fen = amount_fen;
    t.balance_before_fen = balance_before_fen;
    t.atc = atc;
    return t;
}

SsnHash hash_of(std::uint8_t seed) {
    SsnHash h{};
    h.fill(seed);
    return h;
}

// The rig with the lifecycle: the card_a holder registered (SSN hash 0x11), the bus terminal signed on.
struct LifecycleRig : Rig {
    Lifecycle& lifecycle;
    LifecycleContext context;
    std::uint32_t stan = 100;

    LifecycleRig() : Rig(), lifecycle(daemon->lifecycle()), context{*ledger, *registry, lifecycle, wait_s} {
        sign_on();
        REQUIRE(commit(person_change(hash_of(0x11), PersonRecord{"Li Na", "1980-02-03", {asn_of(card_a)}})) == "ok");
    }

    // check() and the lifecycle's own check: every scenario ends with both clean.
    void require_check() const {
        Rig::require_check();
        auto problems = check_lifecycle(*ledger, *registry, lifecycle);
        REQUIRE(problems.ok());
        for (const auto& p : *problems) FAIL_CHECK(p);
    }

    LifecycleChange person_change(const SsnHash& ssn, PersonRecord person) {
        return LifecycleChange{{},
                               [this, ssn, person](lmdb::Txn& txn, auto, std::string&) { return lifecycle.put_person(txn, ssn, person); }};
    }

    std::string commit(LifecycleChange change) {
        std::promise<std::string> outcome;
        auto future = outcome.get_future();
        REQUIRE(submit_change(*writer, std::move(change), [&outcome](std::string o) { outcome.set_value(std::move(o)); }));
        REQUIRE(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
        return future.get();
    }

    // One sweep over every record at `now_ns`; each change committed. Returns the outcomes.
    std::vector<std::string> sweep(std::uint64_t now_ns) {
        auto page = lifecycle_sweep(context, now_ns, Asn{}, sweep_records_per_page);
        REQUIRE(page.ok());
        std::vector<std::string> outcomes;
        for (auto& change : page->changes) outcomes.push_back(commit(std::move(change)));
        return outcomes;
    }

    std::string replace(const SsnHash& ssn = hash_of(0x11), std::uint64_t now_ns = t0_ns) {
        auto change = replace_card(context, asn_of(card_a), asn_of(card_b), ssn, now_ns);
        if (!change) return change.error();
        return commit(std::move(change).value());
    }

    LifecycleRecord record(const std::string& asn) {
        auto txn = ledger->begin_read();
        REQUIRE(txn.ok());
        auto r = lifecycle.record_in(*txn, asn_of(asn));
        REQUIRE(r.ok());
        REQUIRE(r->has_value());
        return **r;
    }

    std::string upload(const Tap& tap) { return code(upload_message(tap, ++stan)); }
    std::int64_t holding() const { return balance(carried_holding_account(asn_of(card_b))); }
    std::int64_t late_spending() const { return balance(lost_late_spending_account); }

    // Hotlist entries for `asn` in the whole log, as a terminal downloads it (0800 70 = 101 from version 0).
    std::vector<bool> hotlist_entries(const std::string& asn) {
        Message m = network_message(101, ++stan);
        m.set(48,
              "00000000"
              "0000");
        const Message answer = send(m);
        REQUIRE(answer.get(39) == "00");
        auto chunk = parse_hotlist_chunk(answer.get(63).value_or(""));
        REQUIRE(chunk.ok());
        std::vector<bool> added;
        for (const HotlistEntry& e : chunk->entries) {
            if (e.asn == asn_of(asn)) added.push_back(e.added);
        }
        return added;
    }
};

}  // namespace

TEST_CASE("report lost: hotlisted at once (the next 0800 hotlist download has it), online loads refused 41, found undoes it") {
    LifecycleRig rig;
    CHECK(rig.hotlist_entries(card_a).empty());
    REQUIRE(rig.commit(report_lost(rig.context, asn_of(card_a), Reporter::cardholder, "cardholder", t0_ns)) == "ok");
    CHECK(rig.card(card_a).status == CardStatus::lost);
    CHECK(rig.hotlist_entries(card_a) == std::vector<bool>{true});
    CHECK(rig.record(card_a).state == CarryState::waiting);
    Load load;
    load.asn = card_a;
    load.processing = "210000";
    load.old_balance_fen = 5000;
    CHECK(rig.code(load.request(++rig.stan)) == "41");
    load.processing = "280000";
    CHECK(rig.code(load.request(++rig.stan)) == "41");
    // Reporting twice is refused; so is a card that is not registered.
    CHECK(rig.commit(report_lost(rig.context, asn_of(card_a), Reporter::clerk, "desk-1", t0_ns)) == "card already reported lost");
    CHECK(rig.commit(report_lost(rig.context, asn_of("46010000000000000099"), Reporter::clerk, "desk-1", t0_ns)) == "card not registered");
    rig.require_check();

    // Found within the waiting period: active again, off the hotlist, loads served.
    REQUIRE(rig.commit(report_found(rig.context, asn_of(card_a), t0_ns + (wait_s - 1) * ns_per_s)) == "ok");
    CHECK(rig.card(card_a).status == CardStatus::active);
    CHECK(rig.hotlist_entries(card_a) == std::vector<bool>{true, false});
    CHECK(rig.code(load.request(++rig.stan)) == "51");  // 280000 on a card without a carried holding
    load.processing = "210000";
    CHECK(rig.code(load.request(++rig.stan)) == "00");
    CHECK(rig.commit(report_found(rig.context, asn_of(card_a), t0_ns)) == "card not reported lost");
    rig.require_check();
}

TEST_CASE("found after the waiting period is refused; a replaced card cannot be found") {
    LifecycleRig rig;
    REQUIRE(rig.commit(report_lost(rig.context, asn_of(card_a), Reporter::cardholder, "cardholder", t0_ns)) == "ok");
    CHECK(rig.commit(report_found(rig.context, asn_of(card_a), t0_ns + wait_s * ns_per_s)) ==
          "the waiting period since the report is over: ask a counter for a replacement");
    REQUIRE(rig.replace() == "ok");
    CHECK(rig.commit(report_found(rig.context, asn_of(card_a), t0_ns + ns_per_s)) ==
          "card already replaced by a new card: it stays hotlisted");
    CHECK(rig.card(card_a).status == CardStatus::replaced);
    CHECK(rig.hotlist_entries(card_a) == std::vector<bool>{true, true});  // lost, then replaced: still listed
    rig.require_check();
}

TEST_CASE("replacement refused: wrong SSN, unknown card, no person record, the same card, twice") {
    LifecycleRig rig;
    CHECK(rig.replace(hash_of(0x22)) == "the SSN does not match the card's holder");
    auto unknown = replace_card(rig.context, asn_of("46010000000000000099"), asn_of(card_b), hash_of(0x11), t0_ns);
    REQUIRE(!unknown.ok());
    CHECK(unknown.error() == "card not registered");
    auto unknown_new = replace_card(rig.context, asn_of(card_a), asn_of("46010000000000000099"), hash_of(0x11), t0_ns);
    REQUIRE(!unknown_new.ok());
    CHECK(unknown_new.error() == "new card not registered");
    auto same = replace_card(rig.context, asn_of(card_a), asn_of(card_a), hash_of(0x11), t0_ns);
    REQUIRE(!same.ok());
    CHECK(same.error() == "the new card must be another card");
    auto no_person = replace_card(rig.context, asn_of(card_b), asn_of(card_a), hash_of(0x11), t0_ns);
    REQUIRE(!no_person.ok());
    CHECK(no_person.error() == "no person record for the card: register its holder first (POST /v1/clerk/persons)");
    CHECK(rig.medical(card_a) == 20000);  // nothing moved
    REQUIRE(rig.replace() == "ok");
    CHECK(rig.replace() == "card already replaced");
    // Two replacements decided on the same snapshot: the second one's medical move exists already.
    CHECK(rig.medical(card_a) == 0);
    CHECK(rig.medical(card_b) == 20000);
    rig.require_check();
}

TEST_CASE("a replacement decided on a stale snapshot is refused in the commit and moves nothing twice") {
    LifecycleRig rig;
    auto first = replace_card(rig.context, asn_of(card_a), asn_of(card_b), hash_of(0x11), t0_ns);
    auto second = replace_card(rig.context, asn_of(card_a), asn_of(card_b), hash_of(0x11), t0_ns);
    REQUIRE(first.ok());
    REQUIRE(second.ok());
    CHECK(rig.commit(std::move(first).value()) == "ok");
    CHECK(rig.commit(std::move(second).value()).starts_with("card already replaced"));
    CHECK(rig.medical(card_a) == 0);
    CHECK(rig.medical(card_b) == 20000);
    rig.require_check();
}

TEST_CASE("replacement: medical at once, purse carried after the wait, offline spending before and after the carry, 280000 collects") {
    LifecycleRig rig;
    REQUIRE(rig.commit(report_lost(rig.context, asn_of(card_a), Reporter::cardholder, "cardholder", t0_ns)) == "ok");
    REQUIRE(rig.replace(hash_of(0x11), t0_ns + 10 * ns_per_s) == "ok");
    CHECK(rig.card(card_a).status == CardStatus::replaced);
    CHECK(rig.medical(card_a) == 0);
    CHECK(rig.medical(card_b) == 20000);
    CHECK(rig.record(card_a).state == CarryState::pending);
    CHECK(rig.record(card_a).medical_carried_fen == 20000);
    rig.require_check();

    // The lost card still pays offline during the waiting period: booked on its shadow as usual.
    CHECK(rig.upload(tap(200, 5000, 0)) == "00");
    CHECK(rig.shadow(card_a) == 4800);
    // Not due yet (the period runs from the report): nothing moves.
    CHECK(rig.sweep(t0_ns + (wait_s - 1) * ns_per_s).empty());
    CHECK(rig.holding() == 0);

    // The replacement card is used (and loaded from the float) before the carried balance is collected.
    CHECK(rig.upload(tap(300, 1000, 0, card_b)) == "00");
    Load cash;
    cash.processing = "210000";
    cash.amount_fen = 500;
    cash.old_balance_fen = 700;
    cash.atc = 1;
    CHECK(rig.code(cash.request(++rig.stan)) == "00");
    CHECK(rig.code(cash.confirmation(++rig.stan)) == "00");
    CHECK(rig.shadow(card_b) == 1200);
    Load early = cash;
    early.processing = "280000";
    early.atc = 2;
    early.old_balance_fen = 1200;
    CHECK(rig.code(early.request(++rig.stan)) == "51");  // nothing carried yet

    // The carry: the posted shadow → the new card's carried holding.
    REQUIRE(rig.sweep(t0_ns + wait_s * ns_per_s) == std::vector<std::string>{"ok"});
    CHECK(rig.shadow(card_a) == 0);
    CHECK(rig.holding() == 4800);
    CHECK(rig.record(card_a).state == CarryState::carried);
    CHECK(rig.record(card_a).carried_fen == 4800);
    CHECK(rig.sweep(t0_ns + (wait_s + 1) * ns_per_s).empty());  // once
    rig.require_check();

    // A late upload of the lost card after the carry: lost late spending pays the merchant; the shadow stays 0.
    const std::int64_t payable_before = rig.payable(bus_operator);
    const Tap late = tap(150, 4800, 1);
    CHECK(rig.upload(late) == "00");
    CHECK(rig.shadow(card_a) == 0);
    CHECK(rig.late_spending() == -150);
    CHECK(rig.payable(bus_operator) == payable_before + 150);
    auto booked = rig.ledger->lookup_transfer(purchase_id(late));
    REQUIRE(booked.ok());
    REQUIRE(booked->has_value());
    CHECK((*booked)->code == transfer_codes::late_after_carry);
    CHECK(rig.record(card_a).late_count == 1);
    CHECK(rig.record(card_a).late_fen == 150);
    CHECK(rig.upload(late) == "00");  // a repeat is answered from the booking, counted once
    CHECK(rig.record(card_a).late_count == 1);
    CHECK(rig.late_spending() == -150);
    rig.require_check();
    // Settlement pays the bus operator for it like any ride (200 + 150 fen of card A, 300 of card B).
    auto participants = rig.registry->participants();
    REQUIRE(participants.ok());
    auto positions = settlement::compute_positions(*rig.ledger, *participants, 20261206, settlement::Window{0, ~std::uint64_t{0}});
    REQUIRE_MESSAGE(positions.ok(), (positions.ok() ? "" : positions.error().message));
    const auto bus = std::find_if(positions->participants.begin(), positions->participants.end(),
                                  [](const auto& p) { return p.participant.id == bus_operator; });
    REQUIRE(bus != positions->participants.end());
    CHECK(bus->kinds[static_cast<std::size_t>(settlement::Kind::bus)].gross_fen == 650);

    // Collect: 51 above the holding, then the whole holding (0200 MAC2, 0220), then 51 again (collecting twice).
    Load collect;
    collect.atc = 2;
    collect.old_balance_fen = 1200;
    collect.amount_fen = 4801;
    CHECK(rig.code(collect.request(++rig.stan)) == "51");
    collect.amount_fen = 4800;
    const Message approved = rig.send(collect.request(++rig.stan));
    REQUIRE(approved.get(39) == "00");
    auto answer = iso8583::parse_load_answer(approved.get(62).value_or(""));
    REQUIRE(answer.ok());
    CHECK(answer->mac2 == collect.mac2());
    CHECK(rig.holding() == 4800);  // pending until the 0220
    CHECK(rig.code(collect.confirmation(++rig.stan)) == "00");
    CHECK(rig.holding() == 0);
    CHECK(rig.shadow(card_b) == 6000);
    auto posted = rig.ledger->lookup_transfer(online_load_transfer(asn_of(card_b), 2));
    REQUIRE(posted.ok());
    REQUIRE(posted->has_value());
    CHECK((*posted)->code == transfer_codes::carried_load);
    CHECK((*posted)->debit_account_id == carried_holding_account(asn_of(card_b)));
    Load twice = collect;
    twice.atc = 3;
    twice.old_balance_fen = 6000;
    twice.amount_fen = 1;
    CHECK(rig.code(twice.request(++rig.stan)) == "51");
    rig.require_check();
}

TEST_CASE("a 280000 load reversed (0400) or expired gives the holding back") {
    LifecycleRig rig;
    REQUIRE(rig.replace() == "ok");
    REQUIRE(rig.sweep(t0_ns + wait_s * ns_per_s) == std::vector<std::string>{"ok"});
    CHECK(rig.holding() == 5000);
    Load load;
    load.amount_fen = 2000;
    REQUIRE(rig.code(load.request(++rig.stan)) == "00");
    Load other = load;
    other.atc = 2;
    other.amount_fen = 3001;
    CHECK(rig.code(other.request(++rig.stan)) == "51");  // 2000 of 5000 pending: 3000 left
    Load as_cash = load;
    as_cash.processing = "210000";
    CHECK(rig.code(as_cash.confirmation(++rig.stan)) == "12");  // a 280000 load is confirmed as one
    CHECK(rig.code(load.reversal(++rig.stan)) == "00");
    CHECK(rig.holding() == 5000);
    CHECK(rig.account(carried_holding_account(asn_of(card_b))).debits_pending == 0);
    Load expiring = load;
    expiring.atc = 4;
    REQUIRE(rig.code(expiring.request(++rig.stan)) == "00");
    rig.advance_clock_s(EngineOptions{}.load_timeout_s + 1);
    REQUIRE(rig.ledger->expire_pending().ok());
    CHECK(rig.account(carried_holding_account(asn_of(card_b))).debits_pending == 0);
    CHECK(rig.holding() == 5000);
    rig.require_check();
}

TEST_CASE("the carry waits for a load of the lost card that is approved and not yet confirmed") {
    LifecycleRig rig;
    Load pending;
    pending.asn = card_a;
    pending.processing = "210000";
    pending.old_balance_fen = 5000;
    pending.amount_fen = 700;
    REQUIRE(rig.code(pending.request(++rig.stan)) == "00");  // 0210 sent: the card may hold it
    REQUIRE(rig.replace() == "ok");
    CHECK(rig.sweep(t0_ns + wait_s * ns_per_s).empty());
    // The 0220 is accepted for a replaced card (the card holds the money) and the carry takes it along.
    CHECK(rig.code(pending.confirmation(++rig.stan)) == "00");
    REQUIRE(rig.sweep(t0_ns + wait_s * ns_per_s) == std::vector<std::string>{"ok"});
    CHECK(rig.holding() == 5700);
    CHECK(rig.shadow(card_a) == 0);
    rig.require_check();
}

TEST_CASE("race: a purchase booked on the shadow while the carry was in flight is repaired from lost late spending") {
    LifecycleRig rig;
    REQUIRE(rig.replace() == "ok");
    auto page = lifecycle_sweep(rig.context, t0_ns + wait_s * ns_per_s, Asn{}, sweep_records_per_page);
    REQUIRE(page.ok());
    REQUIRE(page->changes.size() == 1);  // the carry of 5000, decided now
    // The upload is judged before the carry commits: booked on the shadow (transfer 1).
    CHECK(rig.upload(tap(400, 5000, 0)) == "00");
    REQUIRE(rig.commit(std::move(page->changes[0])) == "ok");
    CHECK(rig.holding() == 5000);
    CHECK(rig.shadow(card_a) == -400);
    rig.require_check();  // cards = shadows holds (the mirror followed both)
    REQUIRE(rig.sweep(t0_ns + (wait_s + 1) * ns_per_s) == std::vector<std::string>{"ok"});
    CHECK(rig.shadow(card_a) == 0);
    CHECK(rig.late_spending() == -400);
    CHECK(rig.record(card_a).late_fen == 400);
    CHECK(rig.sweep(t0_ns + (wait_s + 2) * ns_per_s).empty());
    rig.require_check();
}

TEST_CASE("a card a clerk put back on active by its status can be reported lost again") {
    LifecycleRig rig;
    REQUIRE(rig.commit(report_lost(rig.context, asn_of(card_a), Reporter::cardholder, "cardholder", t0_ns)) == "ok");
    // As PUT /v1/clerk/cards/{n}/status does it: in the writer's commit, with its hotlist entry.
    const Registry& registry = *rig.registry;
    REQUIRE(rig.commit(LifecycleChange{{}, [&registry](lmdb::Txn& txn, auto, std::string&) -> lmdb::Status {
                                           CardRecord card = **registry.card_in(txn, asn_of(card_a));
                                           auto recorded = registry.record_status_change(txn, card.asn, card.status, CardStatus::active);
                                           if (!recorded) return Unexpected<lmdb::Error>{recorded.error()};
                                           card.status = CardStatus::active;
                                           return registry.put_card(txn, card);
                                       }}) == "ok");
    CHECK(rig.commit(report_lost(rig.context, asn_of(card_a), Reporter::clerk, "desk-1", t0_ns + ns_per_s)) == "ok");
    CHECK(rig.record(card_a).reported_by == "desk-1");
    CHECK(rig.card(card_a).status == CardStatus::lost);
    REQUIRE(rig.replace() == "ok");
    CHECK(rig.commit(report_lost(rig.context, asn_of(card_a), Reporter::clerk, "desk-1", t0_ns)) == "card already replaced");
    rig.require_check();
}

TEST_CASE("a blocked card is neither reported lost nor replaced") {
    LifecycleRig rig;
    const Registry& registry = *rig.registry;
    REQUIRE(rig.commit(LifecycleChange{{}, [&registry](lmdb::Txn& txn, auto, std::string&) -> lmdb::Status {
                                           CardRecord card = **registry.card_in(txn, asn_of(card_a));
                                           auto recorded = registry.record_status_change(txn, card.asn, card.status, CardStatus::blocked);
                                           if (!recorded) return Unexpected<lmdb::Error>{recorded.error()};
                                           card.status = CardStatus::blocked;
                                           return registry.put_card(txn, card);
                                       }}) == "ok");
    CHECK(rig.commit(report_lost(rig.context, asn_of(card_a), Reporter::clerk, "desk-1", t0_ns)) == "card is blocked");
    CHECK(rig.replace() == "card is blocked");
    CHECK(rig.medical(card_a) == 20000);
    rig.require_check();
}

TEST_CASE("a clerk cannot set a replaced card's status by name") {
    LifecycleRig rig;
    REQUIRE(rig.replace() == "ok");
    auto done = set_card_status(*rig.ledger, *rig.registry, asn_of(card_a), CardStatus::active);
    REQUIRE(!done.ok());
    CHECK(done.error().code == ErrorCode::conflict);
    CHECK(!parse_card_status("replaced").has_value());
    CHECK(rig.card(card_a).status == CardStatus::replaced);
}

TEST_CASE("the lifecycle check names a replaced card without its record") {
    LifecycleRig rig;
    REQUIRE(rig.replace() == "ok");
    rig.require_check();
    const Lifecycle& lifecycle = rig.lifecycle;
    REQUIRE(rig.commit(LifecycleChange{{}, [&lifecycle](lmdb::Txn& txn, auto, std::string&) {
                                           return lifecycle.delete_record(txn, asn_of(card_a));
                                       }}) == "ok");
    auto problems = check_lifecycle(*rig.ledger, *rig.registry, rig.lifecycle);
    REQUIRE(problems.ok());
    CHECK(*problems == std::vector<std::string>{"1 cards are replaced but 0 lifecycle records name a replacement"});
}

TEST_CASE("lifecycle and person records round-trip their encodings; damaged ones are refused") {
    LifecycleRecord r;
    r.asn = asn_of(card_a);
    r.reported_ns = 5;
    r.reporter = Reporter::clerk;
    r.reported_by = "desk-1";
    r.state = CarryState::carried;
    r.replaced_by = asn_of(card_b);
    r.carried_fen = 4800;
    r.late_count = 2;
    r.late_fen = 300;
    const Bytes encoded = encode_lifecycle(r);
    CHECK(decode_lifecycle(encoded) == r);
    CHECK(!decode_lifecycle(ByteView(encoded).first(encoded.size() - 1)).has_value());
    const PersonRecord p{"Li Na", "1980-02-03", {asn_of(card_a), asn_of(card_b)}};
    CHECK(decode_person(encode_person(p)) == p);
    CHECK(normalize_ssn("46010219800203123x").value() == "46010219800203123X");
    CHECK(!normalize_ssn("4601021980X").ok());
    CHECK(!normalize_ssn("12345").ok());
    CHECK(!read_person(nlohmann::json::parse(R"({"ssn":"460102198002031234","name":"Li Na","birth_date":"1980-13-03"})")).ok());
    CHECK(read_person(nlohmann::json::parse(R"({"ssn":"460102198002031234","name":"Li Na","birth_date":"1980-02-03"})")).ok());
    auto persons = read_registry_persons(
        R"({"cards":[{"asn":"46010000000012345678","person":{"ssn":"460102198002031234","name":"Li Na","birth_date":"1980-02-03"}}]})");
    REQUIRE(persons.ok());
    REQUIRE(persons->size() == 1);
    CHECK(persons->front().asn == asn_of(card_a));
    auto bad = read_registry_persons(R"({"cards":[{"asn":"46010000000012345678","person":{"ssn":"12"}}]})");
    REQUIRE(!bad.ok());
    CHECK(bad.error().find("cards[46010000000012345678].person") == 0);
}

TEST_CASE("a clinic hold pending at the replacement stays on the old medical account; what it frees moves at the carry") {
    LifecycleRig rig;
    ledger::Transfer hold;
    hold.id = ledger::make_id(0xC11);
    hold.debit_account_id = medical_account(asn_of(card_a));
    hold.credit_account_id = payable_account(clinic, ledgers::medical);
    hold.amount = 5000;
    hold.ledger = ledgers::medical;
    hold.code = transfer_codes::clinic_medical;
    hold.flags = ledger::transfer_flags::pending;
    hold.timeout_s = 900;
    REQUIRE(rig.commit(LifecycleChange{{hold}, [](lmdb::Txn&, auto, std::string&) -> lmdb::Status { return Ok{}; }}) == "ok");
    REQUIRE(rig.replace() == "ok");
    CHECK(rig.medical(card_b) == 15000);  // posted minus the pending hold
    CHECK(rig.medical(card_a) == 5000);
    CHECK(rig.record(card_a).medical_carried_fen == 15000);
    // The clinic completes for less than it held: the rest is released on the old account.
    ledger::Transfer post;
    post.id = ledger::make_id(0xC12);
    post.pending_id = hold.id;
    post.amount = 3000;
    post.flags = ledger::transfer_flags::post_pending;
    REQUIRE(rig.commit(LifecycleChange{{post}, [](lmdb::Txn&, auto, std::string&) -> lmdb::Status { return Ok{}; }}) == "ok");
    CHECK(rig.medical_payable(clinic) == 3000);
    REQUIRE(rig.sweep(t0_ns + wait_s * ns_per_s) == std::vector<std::string>{"ok"});
    CHECK(rig.medical(card_a) == 0);
    CHECK(rig.medical(card_b) == 17000);
    CHECK(rig.record(card_a).medical_carried_fen == 17000);
    CHECK(rig.holding() == 5000);
    rig.require_check();
}

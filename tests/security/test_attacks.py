"""The attack suite: each phase reproduces one attack on the money path against a real coconut-hsmd +
coconut-clearingd (own free loopback ports, own data), expects the refusal the clearing's rules name, and then
checks that no money moved (Island.verify_no_money_moved: `check` passes, every card's shadow equals the card,
payables and medical accounts are what genuine transactions made them). tests/security/README.md lists the
phases, what each expects, and how each one fails on the build before the defences.

Usage: test_attacks.py [--plain] HSMD CLEARINGD TERMINAL VCARD [HSM_CLI] PHASE...|all

  --plain   terminals over plain TCP (`--insecure-terminals` where the daemon has it); the TLS-only phases are
            skipped (exit 77 when nothing else ran). Without it the ISO 8583 port is TLS with client
            certificates from the island CA.
  HSM_CLI   coconut-hsm (default: next to HSMD): has the island CA in coconut-hsmd sign the certificates.
Exit: 0 every phase passed, 1 a phase failed, 77 skipped.
"""

import os
import shutil
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import iso8583_client as iso  # noqa: E402
from island import (CARDS, MEDICAL_FEN, OPENING_FEN, Island, CardShell, Verdict, log, psam_of,  # noqa: E402
                    utc_field7)

PHASES = {}
CHALLENGE_VALID_S = 60  # a host challenge's lifetime by default (ISO8583.md §4.4, serve --challenge-ttl-s)
RISK_FLAGS_PER_MESSAGE_MAX = 4  # the bound ISO8583.md §4.8 states (risk_flags_per_message_max)


def phase(name, tls_only=False):
    def register(fn):
        PHASES[name] = (fn, tls_only)
        return fn
    return register


# ---- messages ------------------------------------------------------------------------------------------------

def card_data(rec, atc=None, tac=None, serial=None, balance=None):
    """Field 62 of a 0320 from a `coconut-terminal queue list --json` record, with claims or the TAC replaced."""
    return iso.tlv([("DF01", rec["asn"]), ("DF02", rec["type"]),
                    ("DF03", f"{rec['balance_before_fen'] if balance is None else balance:08X}"),
                    ("DF04", f"{rec['atc'] if atc is None else atc:04X}"),
                    ("DF05", f"{rec['terminal_serial'] if serial is None else serial:08X}"),
                    ("DF06", rec["terminal_id"]), ("DF07", rec["date"] + rec["time"]), ("DF08", tac or rec["tac"])])


def upload_fields(rec, terminal_id, stan, **changes):
    return {2: rec["asn"][4:], 3: "000000", 4: f"{rec['amount_fen']:012d}", 11: f"{stan:06d}", 12: rec["time"],
            13: rec["date"][4:], 25: "08", 41: terminal_id, 60: "000001", 62: card_data(rec, **changes)}


def digest_of(rec):
    return iso.record_digest(rec["asn"], rec["amount_fen"], rec["type"], rec["terminal_id"],
                             f"{rec['terminal_serial']:08X}", rec["date"] + rec["time"], rec["tac"])


def answer_df10(answer):
    if not answer or 62 not in answer:
        return None
    return iso.parse_tlv(answer[62]).get("DF10")


def code(answer):
    return None if answer is None else answer.get(39)


def random_tac(not_this):
    while True:
        tac = os.urandom(4).hex().upper()
        if tac != not_this:
            return tac


def online_fields(card, processing, amount, stan, terminal_id, batch="000001"):
    return {2: CARDS[card][4:], 3: processing, 4: f"{amount:012d}", 7: utc_field7(), 11: f"{stan:06d}", 41: terminal_id,
            60: batch}


def card_clock():
    """Date and time (Hainan, UTC+8) a CREDIT FOR LOAD carries: YYYYMMDD, hhmmss."""
    t = time.gmtime(time.time() + 8 * 3600)
    return time.strftime("%Y%m%d", t), time.strftime("%H%M%S", t)


class Load:
    """An online load of `amount` on card `card` at `terminal_id`: INITIALIZE FOR LOAD on the card image, the
    0200 and 0220 fields, CREDIT FOR LOAD with the host's MAC2."""

    def __init__(self, island, card, amount, terminal_id, psam_terminal=None):
        self.island, self.card, self.amount, self.terminal_id = island, card, amount, terminal_id
        self.psam_terminal = psam_terminal or psam_of(terminal_id)
        self.date, self.time = card_clock()
        shell = CardShell(island.vcard, island.card_image(card))
        shell.select_purse()
        self.init = shell.initialize_for_load(amount, self.psam_terminal)
        self.shell = shell
        self.tac = None

    def request(self, stan, terminal_id=None):
        fields = online_fields(self.card, "210000", self.amount, stan, terminal_id or self.terminal_id)
        fields[62] = iso.tlv([("DF01", CARDS[self.card]), ("DF02", "02"), ("DF03", f"{self.init['old_balance']:08X}"),
                              ("DF04", f"{self.init['atc']:04X}"), ("DF06", self.psam_terminal), ("DF07", self.date + self.time),
                              ("DF09", self.init["mac1"]), ("DF0A", self.init["random"]), ("DF0D", self.init["key_version"])])
        return fields

    def credit(self, answer):
        """CREDIT FOR LOAD with the MAC2 of a 0210; the card's TAC, or None when the card refused."""
        mac2 = iso.parse_tlv(answer[62]).get("DF09") if answer and 62 in answer else None
        if not mac2:
            return None
        self.tac = self.shell.credit_for_load(self.date, self.time, mac2)
        return self.tac

    def confirmation(self, stan, terminal_id=None, psam_terminal=None):
        fields = online_fields(self.card, "210000", self.amount, stan, terminal_id or self.terminal_id)
        fields[62] = iso.tlv([("DF01", CARDS[self.card]), ("DF02", "02"), ("DF03", f"{self.init['old_balance']:08X}"),
                              ("DF04", f"{self.init['atc']:04X}"), ("DF06", psam_terminal or self.psam_terminal),
                              ("DF07", self.date + self.time), ("DF08", self.tac)])
        return fields

    def digest(self):
        """DF10 a 0230 approving this load's confirmation carries."""
        return iso.load_confirmation_digest(CARDS[self.card], self.amount, self.psam_terminal, self.init["atc"],
                                            self.date + self.time, self.tac)

    def close(self):
        self.shell.close()


def attacker_completes_load(load, answer, link, stan, terminal_id=None):
    """What an attacker does with a 0210 00: credit the card and confirm. Logged as money that moved."""
    if code(answer) != "00":
        return
    tac = load.credit(answer)
    confirmed = link.call("0220", load.confirmation(stan, terminal_id)) if tac else None
    log(f"        the attacker credited the card (TAC {tac}) and confirmed it: {code(confirmed)}")


# ---- clinic --------------------------------------------------------------------------------------------------

def request_challenge(link, card, terminal_id, stan):
    """0800 70=201: the host's challenge for this terminal and card (16 bytes hex), or (None, answer)."""
    answer = link.call("0800", {2: CARDS[card][4:], 7: utc_field7(), 11: f"{stan:06d}", 41: terminal_id, 70: "201",
                                62: iso.tlv([("DF01", CARDS[card])])})
    challenge = iso.parse_tlv(answer[62]).get("DF0E") if code(answer) == "00" and 62 in answer else None
    if challenge is not None and len(challenge) != 32:
        challenge = None
    return challenge, answer


def card_proof(island, card, fields, challenge, application="ssse", pin=True):
    """The card's INTERNAL AUTHENTICATE over the 0100's input: the host-challenge input when `challenge` is given,
    else the input of the build before host challenges. (cryptogram or None, SW)."""
    if challenge:
        data = iso.clinic_input(challenge, fields[41], fields[11], fields[7], fields[4], fields[60], CARDS[card])
    else:
        data = iso.clinic_input_v1(fields[41], fields[11], fields[7], fields[4])
    shell = CardShell(island.vcard, island.card_image(card))
    try:
        if application == "ssse":
            shell.select_ssse()
            if pin:
                assert shell.verify_pin() == "9000"
        else:
            shell.select_purse()
        return shell.internal_authenticate(data)
    finally:
        shell.close()


def hold_request(card, fields, cryptogram, challenge, **changes):
    """The 0100 of `fields` (as the card's proof covered them) with 62 = DF01 ‖ DF0B ‖ DF0E; `changes`: fields
    replaced after the proof, e.g. {60: ...}."""
    items = [("DF01", CARDS[card]), ("DF0B", cryptogram)]
    if challenge:
        items.append(("DF0E", challenge))
    out = dict(fields)
    out.update({int(k[1:]): value for k, value in changes.items()})
    out[62] = iso.tlv(items)
    return out


def completion(card, amount, stan, terminal_id, batch, hold_stan):
    fields = online_fields(card, "003000", amount, stan, terminal_id, batch)
    fields[90] = "0100" + f"{hold_stan:06d}" + "0" * 32
    return fields


def complete_if_approved(link, answer, card, hold_stan, terminal_id, batch, stan):
    """An approved hold is completed, as the attacker of the issue did: the money leaves the medical account."""
    if code(answer) not in ("00", "10"):
        return None
    done = link.call("0220", completion(card, int(answer[4]), stan, terminal_id, batch, hold_stan))
    log(f"        completed the hold of {int(answer[4])} fen: {code(done)}")
    return int(answer[4]) if code(done) == "00" else None


# ---- attacks -------------------------------------------------------------------------------------------------

@phase("claims_resend")
def claims_resend(island, v):
    """Attack 1: one genuine 0320 re-sent 4x with DF04 (offline ATC, a claim the TAC does not cover)
    changed. Expected: booked once, each re-send answered like the first (00, the same field 62), flag
    claims_differ."""
    island.start_daemon()
    rec = island.purchases(0, 1, "shop.log", 999)[0]
    link = island.link("SHOP0001")
    first = link.call("0320", upload_fields(rec, "SHOP0001", 2))
    v.expect(code(first) == "00", "genuine 0320 answered 00", first)
    v.expect(answer_df10(first) == digest_of(rec), "its 0330 carries DF10 = the digest of the booked record",
             answer_df10(first))
    for i in range(1, 5):
        atc = rec["atc"] + i
        again = link.call("0320", upload_fields(rec, "SHOP0001", 2 + i, atc=atc))
        v.expect(code(again) == "00" and again.get(62) == first.get(62),
                 f"re-send {i} with DF04 = {atc:04X}: the first booking's answer (00, same field 62)", again)
    link.close()
    kinds = island.risk_kinds()
    v.expect("claims_differ" in kinds, "risk flag claims_differ raised", kinds)
    island.verify_no_money_moved(v, {2002: 999, 1001: 0})


@phase("impostor_tls", tls_only=True)
def impostor_tls(island, v):
    """Attack 2, over TLS: posing as the shop with one's own card — no client certificate, a
    certificate from another CA, plain TCP on the TLS port, the server's certificate as a client's, a genuine
    certificate of another terminal (field 41 mismatch → 63) or with the shop's PSAM id (58), an island
    certificate of an unregistered terminal (03). No attempt ever gets a 0210 00."""
    island.start_daemon()
    rec = island.purchases(0, 1, "shop.log", 450)[0]
    load = Load(island, 1, 5000, "SHOP0001")
    ca = island.tls_files[0]
    approvals = []

    def attempt(label, identity, claim, expect_codes):
        try:
            link = iso.Link(island.port, identity)
        except iso.Refused as refused:
            v.expect(expect_codes is None, f"{label}: handshake refused ({refused})")
            return
        answers = {"0800": link.call("0800", {7: utc_field7(), 11: "000001", 41: claim, 70: "001"})}
        answers["0200"] = link.call("0200", load.request(2, claim)) if answers["0800"] is not None else None
        answers["0320"] = link.call("0320", upload_fields(rec, claim, 3)) if answers["0200"] is not None else None
        if code(answers["0200"]) == "00":
            approvals.append(label)
            attacker_completes_load(load, answers["0200"], link, 4, claim)
        link.close()
        got = {m: code(a) for m, a in answers.items()}
        if expect_codes is None:
            v.expect(all(a is None for a in answers.values()), f"{label}: no ISO 8583 answer at all", got)
        else:
            v.expect(got == expect_codes, f"{label}: answered {expect_codes}", got)

    attempt("no client certificate", iso.TlsIdentity(ca), "SHOP0001", None)
    attempt("certificate for SHOP0001 from another CA", island.foreign_identity("SHOP0001"), "SHOP0001", None)
    try:
        plain = iso.Link(island.port, None)
        got = plain.call("0800", {7: utc_field7(), 11: "000001", 41: "SHOP0001", 70: "001"})
        plain.close()
    except OSError as error:
        got = None
        log(f"        plain TCP: {error}")
    v.expect(got is None, "plain TCP on the TLS port: no answer", got)
    # The daemon's own server certificate (stolen from its host) as a client certificate: wrong purpose.
    ca_file, server_cert, server_key = island.tls_files
    attempt("the server's certificate as a client certificate", iso.TlsIdentity(ca_file, server_cert, server_key),
            "SHOP0001", None)
    attempt("BUS00001's certificate claiming SHOP0001", island.identity("BUS00001"), "SHOP0001",
            {"0800": "63", "0200": "63", "0320": "63"})
    # A certificate of the island CA for a terminal id the registry does not know (e.g. issued, never registered).
    ghost_cert, ghost_key = island.issue("terminal", "GHOST001")
    attempt("an island certificate for the unregistered GHOST001", iso.TlsIdentity(ca_file, ghost_cert, ghost_key),
            "GHOST001", {"0800": "03", "0200": "03", "0320": "03"})
    # The bus terminal as itself, but with the shop's PSAM id in the card data: the 0200's DF06 is not its PSAM.
    attempt("BUS00001's certificate, DF06 of the shop's PSAM", island.identity("BUS00001"), "BUS00001",
            {"0800": "00", "0200": "58", "0320": "58"})
    load.close()
    v.expect(not approvals, "no attempt got 0210 00", approvals)
    # The shop itself, with its own certificate: served.
    link = island.link("SHOP0001", stan=10)
    genuine = link.call("0320", upload_fields(rec, "SHOP0001", 11))
    link.close()
    v.expect(code(genuine) == "00", "the shop with its own certificate: its genuine 0320 answered 00", genuine)
    v.expect(island.card_balance(1) == OPENING_FEN, "the attacker's card gained nothing", island.card_balance(1))
    island.verify_no_money_moved(v, {2002: 450, 1001: 0})


@phase("suspended_terminal")
def suspended_terminal(island, v):
    """A terminal suspended by a clerk (PUT /v1/clerk/terminals/{id}/status) is refused with 58 on every request,
    on its open connection and at sign-on; the attacker's load through it never gets 0210 00; a retired one
    likewise. Reactivated, it is served again."""
    island.start_daemon()
    recs = island.purchases(0, 1, "shop.log", 300, 2)
    link = island.link("SHOP0001")
    first = link.call("0320", upload_fields(recs[0], "SHOP0001", 2))
    v.expect(code(first) == "00", "before: the shop's genuine 0320 answered 00", first)
    session = None if island.plain else link.session()
    status, body, _ = island.set_terminal_status("SHOP0001", "suspended")
    v.expect(status == 200, "clerk PUT /v1/clerk/terminals/SHOP0001/status suspended → 200", (status, body))
    terminals = {t["terminal_id"]: t for t in island.admin("terminals")}
    v.expect(terminals["SHOP0001"].get("status") == "suspended", "the registry (admin list terminals) says SHOP0001 is suspended",
             terminals["SHOP0001"].get("status"))
    approvals = []
    after = link.call("0320", upload_fields(recs[1], "SHOP0001", 3))
    v.expect(code(after) == "58", "open connection: the next 0320 answered 58", after)
    load = Load(island, 1, 5000, "SHOP0001")
    answer = link.call("0200", load.request(4))
    v.expect(code(answer) == "58", "open connection: the attacker's 0200 answered 58", answer)
    if code(answer) == "00":
        approvals.append("open connection")
        attacker_completes_load(load, answer, link, 5)
    link.close()
    fresh = island.link("SHOP0001", sign_on=False)
    signed = fresh.call("0800", {7: utc_field7(), 11: "000010", 41: "SHOP0001", 70: "001"})
    v.expect(code(signed) == "58", "new connection: sign-on answered 58", signed)
    answer = fresh.call("0200", load.request(11))
    v.expect(code(answer) in ("58", "03"), "new connection: the attacker's 0200 refused (58, or 03 not signed on)", answer)
    if code(answer) == "00":
        approvals.append("new connection")
        attacker_completes_load(load, answer, fresh, 12)
    fresh.close()
    if session is not None:  # TLS: a session resumed from before the suspension is refused the same way
        resumed = iso.Link(island.port, island.identity("SHOP0001"), session=session)
        signed = resumed.call("0800", {7: utc_field7(), 11: "000012", 41: "SHOP0001", 70: "001"})
        answer = resumed.call("0200", load.request(13)) if signed is not None else None
        resumed.close()
        v.expect(resumed.resumed, "a TLS session from before the suspension was resumed")
        v.expect(code(signed) == "58" and code(answer) in ("58", "03"),
                 "…and its sign-on and 0200 refused (58 / 03)", (code(signed), code(answer)))
        if code(answer) == "00":
            approvals.append("resumed session")
    load.close()
    v.expect(not approvals, "no attempt got 0210 00", approvals)
    v.expect(island.card_balance(1) == OPENING_FEN, "the attacker's card gained nothing", island.card_balance(1))
    status, body, _ = island.set_terminal_status("SHOP0001", "active")
    v.expect(status == 200, "clerk sets SHOP0001 active again → 200", (status, body))
    # A retired terminal is refused the same way.
    status, body, _ = island.set_terminal_status("BUS00001", "retired")
    v.expect(status == 200, "clerk sets BUS00001 retired → 200", (status, body))
    retired = island.link("BUS00001", sign_on=False)
    signed = retired.call("0800", {7: utc_field7(), 11: "000030", 41: "BUS00001", 70: "001"})
    retired.close()
    v.expect(code(signed) == "58", "the retired BUS00001: sign-on answered 58", signed)
    link = island.link("SHOP0001", stan=20, sign_on=False)
    signed = link.call("0800", {7: utc_field7(), 11: "000020", 41: "SHOP0001", 70: "001"})
    v.expect(code(signed) == "00", "reactivated: sign-on 00", signed)
    later = link.call("0320", upload_fields(recs[1], "SHOP0001", 21))
    link.close()
    v.expect(code(later) == "00", "reactivated: the kept 0320 answered 00", later)
    island.verify_no_money_moved(v, {2002: 600, 1001: 0})


@phase("forged_first")
def forged_first(island, v):
    """Attack 3: a forged upload (random TAC, otherwise the genuine fields) arrives first and must
    not occupy the genuine record's id: 59; the genuine upload then books normally (00 + DF10 of its record).
    The genuine record with a higher amount under its TAC afterwards: refused, nothing more paid."""
    island.start_daemon()
    rec = island.purchases(0, 1, "shop.log", 999)[0]
    forged_tac = random_tac(rec["tac"])
    link = island.link("SHOP0001")
    forged = link.call("0320", upload_fields(rec, "SHOP0001", 2, tac=forged_tac))
    v.expect(code(forged) == "59", "forged TAC first: 59", forged)
    genuine = link.call("0320", upload_fields(rec, "SHOP0001", 3))
    v.expect(code(genuine) == "00", "the genuine upload after it: 00", genuine)
    v.expect(answer_df10(genuine) == digest_of(rec), "its 0330 DF10 = the digest of the genuine record",
             answer_df10(genuine))
    again = link.call("0320", upload_fields(rec, "SHOP0001", 4, tac=forged_tac))
    v.expect(code(again) in ("59", "94"), "the forged upload again: refused (59 / 94), never 00", again)
    v.expect(answer_df10(again) is None or answer_df10(again) != digest_of(rec), "…and carries no DF10 of the genuine record",
             answer_df10(again))
    repeat = link.call("0320", upload_fields(rec, "SHOP0001", 5))
    v.expect(code(repeat) == "00" and repeat.get(62) == genuine.get(62), "the genuine upload repeated: the same 00",
             repeat)
    # The genuine record with the amount raised (a TAC-covered field) under its genuine TAC: a colliding forgery.
    raised = upload_fields(rec, "SHOP0001", 6)
    raised[4] = f"{rec['amount_fen'] + 5000:012d}"
    raised = link.call("0320", raised)
    v.expect(code(raised) in ("94", "59"), "the genuine record with its amount raised by 5,000 fen: 94 (never 00)",
             raised)
    link.close()
    island.verify_no_money_moved(v, {2002: 999, 1001: 0})


@phase("forged_limit")
def forged_limit(island, v):
    """More forged TACs from one terminal than `--forged-tacs-per-day` allows: the terminal is suspended (58 from
    then on, flag terminal_suspended); the forged uploads never touch a card's shadow or a payable."""
    limit = 5 if island.supports("--forged-tacs-per-day") else 20
    island.start_daemon(["--forged-tacs-per-day", str(limit)] if island.supports("--forged-tacs-per-day") else [])
    log(f"        --forged-tacs-per-day {limit}{'' if island.supports('--forged-tacs-per-day') else ' (option absent: the default)'}")
    recs = island.purchases(0, 1, "shop.log", 100, 2)
    link = island.link("SHOP0001")
    control = link.call("0320", upload_fields(recs[0], "SHOP0001", 2))
    v.expect(code(control) == "00", "a genuine 0320 first: 00", control)
    codes = []
    rec = recs[0]
    for i in range(limit + 3):
        answer = link.call("0320", upload_fields(rec, "SHOP0001", 10 + i, atc=rec["atc"] + 100 + i,
                                                 serial=rec["terminal_serial"] + 100 + i, tac=random_tac(rec["tac"])))
        codes.append(code(answer))
        if code(answer) != "59":
            break
    log(f"        answers to the forged uploads: {codes}")
    first_refusal = next((i for i, c in enumerate(codes) if c != "59"), None)
    v.expect(first_refusal is not None and first_refusal >= limit and first_refusal <= limit + 1
             and codes[first_refusal] == "58",
             f"forged uploads answered 59 until more than {limit} were counted, then 58", codes)
    kept = link.call("0320", upload_fields(recs[1], "SHOP0001", 40))
    v.expect(code(kept) == "58", "the suspended terminal's genuine 0320: 58 (kept at the terminal)", kept)
    link.close()
    terminals = {t["terminal_id"]: t for t in island.admin("terminals")}
    v.expect(terminals["SHOP0001"].get("status") == "suspended", "the registry (admin list terminals) says SHOP0001 is suspended",
             terminals["SHOP0001"].get("status"))
    kinds = island.risk_kinds()
    v.expect("terminal_suspended" in kinds, "risk flag terminal_suspended raised", sorted(set(kinds)))
    status, body, _ = island.set_terminal_status("SHOP0001", "active")
    v.expect(status == 200, "clerk sets SHOP0001 active again → 200", (status, body))
    link = island.link("SHOP0001", stan=50, sign_on=False)
    signed = link.call("0800", {7: utc_field7(), 11: "000050", 41: "SHOP0001", 70: "001"})
    v.expect(code(signed) == "00", "reactivated: sign-on 00", signed)
    later = link.call("0320", upload_fields(recs[1], "SHOP0001", 51))
    link.close()
    v.expect(code(later) == "00", "reactivated: the kept genuine 0320 answered 00", later)
    island.verify_no_money_moved(v, {2002: 200, 1001: 0})


@phase("clinic_replay")
def clinic_replay(island, v):
    """Attack 4: a clinic's proof of card presence replayed — the same cryptogram with field 60
    changed (another hold id), the same challenge again with another STAN, a challenge of another card or of
    another terminal. Each 59; the medical account is debited once, by the genuine hold."""
    island.start_daemon()
    link = island.link("CLINIC01")
    spent = 0  # by the replays, when they are approved
    challenge, answer = request_challenge(link, 1, "CLINIC01", 2)
    v.expect(challenge is not None, "0800 70=201 → 0810 00 with a 16-byte challenge DF0E", answer)
    fields = online_fields(1, "003000", 3000, 10, "CLINIC01", "000001")
    cryptogram, sw = card_proof(island, 1, fields, challenge)
    assert cryptogram, f"the card refused INTERNAL AUTHENTICATE after VERIFY: {sw}"
    genuine = link.call("0100", hold_request(1, fields, cryptogram, challenge))
    v.expect(code(genuine) == "00", "the genuine 0100: 00 (hold of 3000 fen)", genuine)
    for batch in ("000002", "000003", "000004"):
        replay = link.call("0100", hold_request(1, fields, cryptogram, challenge, f60=batch))
        v.expect(code(replay) == "59", f"the same cryptogram with field 60 = {batch}: 59", replay)
        spent += complete_if_approved(link, replay, 1, 10, "CLINIC01", batch, 20 + int(batch)) or 0
    if challenge:
        fields = online_fields(1, "003000", 3000, 30, "CLINIC01", "000001")
        cryptogram, _ = card_proof(island, 1, fields, challenge)
        reused = link.call("0100", hold_request(1, fields, cryptogram, challenge))
        v.expect(code(reused) == "59", "the same challenge again, a new cryptogram with another STAN: 59", reused)
        spent += complete_if_approved(link, reused, 1, 30, "CLINIC01", "000001", 31) or 0

        other_card, _ = request_challenge(link, 1, "CLINIC01", 40)
        fields = online_fields(2, "003000", 3000, 41, "CLINIC01", "000001")
        cryptogram, _ = card_proof(island, 2, fields, other_card)
        answer = link.call("0100", hold_request(2, fields, cryptogram, other_card))
        v.expect(code(answer) == "59", "a challenge issued for card 1 used by card 2: 59", answer)
        complete_if_approved(link, answer, 2, 41, "CLINIC01", "000001", 42)

        other_terminal, _ = request_challenge(link, 2, "CLINIC01", 50)
        second = island.link("CLINIC02", stan=51)
        fields = online_fields(2, "003000", 3000, 52, "CLINIC02", "000001")
        cryptogram, _ = card_proof(island, 2, fields, other_terminal)
        answer = second.call("0100", hold_request(2, fields, cryptogram, other_terminal))
        v.expect(code(answer) == "59", "a challenge issued to CLINIC01 used by CLINIC02: 59", answer)
        complete_if_approved(second, answer, 2, 52, "CLINIC02", "000001", 53)
        second.close()
    else:
        log("        no host challenge in this build: the proof of the build before (SHA-256 of 41, 11, 7, 4)")
    done = link.call("0220", completion(1, 3000, 60, "CLINIC01", "000001", 10))
    v.expect(code(done) == "00", "the genuine hold completed: 00", done)
    link.close()
    log(f"        medical spent by replays: {spent} fen")
    island.verify_no_money_moved(v, {1001: 0, 2002: 0}, medical={1: MEDICAL_FEN - 3000})


@phase("clinic_expired")
def clinic_expired(island, v):
    """A host challenge used after its lifetime (serve --challenge-ttl-s 5 where the daemon has it, else the
    default 60 s): 59, nothing held; the same card with a fresh challenge is then accepted."""
    ttl = CHALLENGE_VALID_S
    if island.supports("--challenge-ttl-s"):
        ttl = 5  # the option's minimum
        island.start_daemon(["--challenge-ttl-s", str(ttl)])
    else:
        island.start_daemon()
    link = island.link("CLINIC01")
    challenge, answer = request_challenge(link, 1, "CLINIC01", 2)
    v.expect(challenge is not None, "0800 70=201 → 0810 00 with a 16-byte challenge DF0E", answer)
    link.close()
    if challenge:
        wait = ttl + 2
        log(f"        waiting {wait} s for the challenge to expire")
        time.sleep(wait)
    link = island.link("CLINIC01", stan=5)
    fields = online_fields(1, "003000", 3000, 10, "CLINIC01", "000001")
    cryptogram, sw = card_proof(island, 1, fields, challenge)
    assert cryptogram, sw
    expired = link.call("0100", hold_request(1, fields, cryptogram, challenge))
    v.expect(code(expired) == "59", "a genuine card's proof over an expired challenge: 59", expired)
    spent = complete_if_approved(link, expired, 1, 10, "CLINIC01", "000001", 11) or 0
    # The same card and terminal with a fresh challenge: accepted (the refusal was the expiry), then reversed.
    challenge, _ = request_challenge(link, 1, "CLINIC01", 20)
    fields = online_fields(1, "003000", 3000, 21, "CLINIC01", "000001")
    cryptogram, sw = card_proof(island, 1, fields, challenge)
    fresh = link.call("0100", hold_request(1, fields, cryptogram, challenge))
    v.expect(code(fresh) == "00", "the same proof over a fresh challenge: 00", fresh)
    reversal = {**online_fields(1, "003000", 3000, 22, "CLINIC01", "000001"), 90: "0100" + "000021" + "0" * 32}
    reversed_ = link.call("0400", reversal)
    v.expect(code(reversed_) == "00", "…and its reversal (0400): 00", reversed_)
    link.close()
    log(f"        medical spent over the expired challenge: {spent} fen")
    island.verify_no_money_moved(v, {1001: 0, 2002: 0})


@phase("pin_bypass")
def pin_bypass(island, v):
    """Attack 5: a lost card spends the medical account without its PIN — the purse application
    answers INTERNAL AUTHENTICATE without a PIN; its cryptogram over the right input must be refused (59). The
    PIN-protected SSSE proof is then accepted (the refusal is not a blanket one)."""
    island.start_daemon()
    link = island.link("CLINIC01")
    challenge, answer = request_challenge(link, 1, "CLINIC01", 2)
    v.expect(challenge is not None, "0800 70=201 → 0810 00 with a 16-byte challenge DF0E", answer)
    fields = online_fields(1, "003000", 3000, 10, "CLINIC01", "000001")
    _, sw = card_proof(island, 1, fields, challenge, pin=False)
    v.expect(sw == "6982", "the SSSE application without VERIFY: 6982 (the card's own refusal)", sw)
    cryptogram, sw = card_proof(island, 1, fields, challenge, application="purse")
    assert cryptogram, f"the purse application refused INTERNAL AUTHENTICATE: {sw}"
    bypass = link.call("0100", hold_request(1, fields, cryptogram, challenge))
    v.expect(code(bypass) == "59", "0100 with the purse application's cryptogram (no PIN): 59", bypass)
    spent = complete_if_approved(link, bypass, 1, 10, "CLINIC01", "000001", 11) or 0
    challenge, _ = request_challenge(link, 1, "CLINIC01", 20)
    fields = online_fields(1, "003000", 2000, 21, "CLINIC01", "000001")
    cryptogram, sw = card_proof(island, 1, fields, challenge)
    assert cryptogram, sw
    genuine = link.call("0100", hold_request(1, fields, cryptogram, challenge))
    v.expect(code(genuine) == "00", "the SSSE proof after VERIFY PIN: 00", genuine)
    done = link.call("0220", completion(1, 2000, 22, "CLINIC01", "000001", 21))
    v.expect(code(done) == "00", "its completion: 00", done)
    link.close()
    log(f"        medical spent without the PIN: {spent} fen")
    island.verify_no_money_moved(v, {1001: 0, 2002: 0}, medical={1: MEDICAL_FEN - 2000})


@phase("load_confirm_other_terminal")
def load_confirm_other_terminal(island, v):
    """Attack 6: a 0220 load confirmation from another terminal than the 0200's (field 41), or with
    another DF06: 58, nothing posted; the genuine confirmation then posts the load once."""
    island.start_daemon()
    bus = island.link("BUS00001")
    shop = island.link("SHOP0001", stan=100)
    load = Load(island, 0, 2000, "BUS00001")
    approved = bus.call("0200", load.request(10))
    v.expect(code(approved) == "00", "the bus terminal's 0200: 00 with MAC2", approved)
    assert load.credit(approved), "CREDIT FOR LOAD refused the host's MAC2"
    flags_before = len(island.admin("risk"))
    # As the issue reproduced it: the shop confirms the bus terminal's load with the card's genuine TAC (DF06 as
    # the card saw it, so the TAC verifies) — the cash liability would move to the shop.
    other = shop.call("0220", load.confirmation(101, terminal_id="SHOP0001"))
    v.expect(code(other) == "58", "0220 from SHOP0001 with the genuine DF06 and TAC: 58", other)
    other = shop.call("0220", load.confirmation(102, terminal_id="SHOP0001", psam_terminal=psam_of("SHOP0001")))
    v.expect(code(other) == "58", "0220 from SHOP0001 with its own PSAM id in DF06: 58", other)
    other = bus.call("0220", load.confirmation(11, psam_terminal=psam_of("SHOP0001")))
    v.expect(code(other) == "58", "0220 from BUS00001 with the shop's PSAM id in DF06: 58", other)
    ledger_shadow, mirror = island.shadow(0)
    v.expect(ledger_shadow == OPENING_FEN and mirror == OPENING_FEN, "nothing posted by them (shadow still the opening)",
             (ledger_shadow, mirror))
    v.expect(len(island.admin("risk")) > flags_before, "a risk flag raised", island.risk_kinds())
    genuine = bus.call("0220", load.confirmation(12))
    v.expect(code(genuine) == "00", "the genuine 0220 from BUS00001: 00", genuine)
    v.expect(answer_df10(genuine) == load.digest(), "its 0230 carries DF10 = the digest of the confirmed load",
             answer_df10(genuine))
    load.close()
    bus.close()
    shop.close()
    v.expect(island.card_balance(0) == OPENING_FEN + 2000, "the card holds the load once", island.card_balance(0))
    island.verify_no_money_moved(v, {1001: 0, 2002: 0})


@phase("atc_ffff")
def atc_ffff(island, v):
    """Attack 7: 0320s claiming DF04 = FFFF (a valid TAC, a forged one): at most 4 risk flags per
    message (the stated bound), the ledger grows by little, /v1/clerk/risk pages (limit, next_cursor; limit ≤ 500)."""
    island.start_daemon()
    recs = island.purchases(0, 1, "shop.log", 100, 3)
    link = island.link("SHOP0001")
    size_before = island.data_bytes()
    for i, (rec, tac, expected) in enumerate(((recs[0], None, "00"), (recs[1], random_tac(recs[1]["tac"]), "59"),
                                              (recs[2], None, "00"))):
        flags = len(island.admin("risk"))
        started = time.time()
        answer = link.call("0320", upload_fields(rec, "SHOP0001", 2 + i, atc=0xFFFF, tac=tac))
        added = len(island.admin("risk")) - flags
        what = "valid TAC" if tac is None else "forged TAC"
        v.expect(code(answer) == expected, f"DF04 = FFFF, {what}: {expected} ({time.time() - started:.2f} s)", answer)
        v.expect(added <= RISK_FLAGS_PER_MESSAGE_MAX,
                 f"DF04 = FFFF, {what}: at most {RISK_FLAGS_PER_MESSAGE_MAX} risk flags for it ({added})")
    for i, rec in enumerate(recs):
        answer = link.call("0320", upload_fields(rec, "SHOP0001", 10 + i))
        v.expect(code(answer) == "00", f"genuine upload {i} with its real DF04: 00", answer)
    link.close()
    growth = island.data_bytes() - size_before
    v.expect(growth < 1 << 20, f"the data directory grew by less than 1 MiB ({growth} bytes)")
    total = len(island.admin("risk"))
    status, body, size = island.http("GET", "/v1/clerk/risk")
    items = body.get("risk_flags", []) if isinstance(body, dict) else []
    v.expect(status == 200 and len(items) <= 500 and size < 1 << 20,
             "GET /v1/clerk/risk without a limit: one bounded page (≤ 500 flags, < 1 MiB)", f"{status}, {len(items)} flags, {size} bytes")
    seen, cursor, pages = 0, None, 0
    while pages < 100:
        status, body, size = island.http("GET", "/v1/clerk/risk?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        pages += 1
        items = body.get("risk_flags", []) if isinstance(body, dict) else []
        if not v.expect(status == 200 and len(items) <= 2, f"GET /v1/clerk/risk?limit=2 page {pages}: ≤ 2 flags",
                        f"{status}, {len(items)} flags, {size} bytes"):
            break
        seen += len(items)
        cursor = body.get("next_cursor")
        if not cursor:
            break
    v.expect(seen == total, f"the pages hold every flag once ({total})", seen)
    status, body, _ = island.http("GET", "/v1/clerk/risk?limit=501")
    v.expect(status == 400, "GET /v1/clerk/risk?limit=501: 400", status)
    island.verify_no_money_moved(v, {2002: 300, 1001: 0})


@phase("exact_replay")
def exact_replay(island, v):
    """Replay of exact frames: a 0320 (on the same connection and on a new one), a 0200 and its 0220, a clinic 0100
    and its completion. Each answered as the first time, booked once."""
    island.start_daemon()
    rec = island.purchases(0, 1, "shop.log", 250)[0]
    frame = iso.encode("0320", upload_fields(rec, "SHOP0001", 7))
    link = island.link("SHOP0001")
    answers = [link.call_raw(frame) for _ in range(3)]
    link.close()
    link = island.link("SHOP0001", stan=50)
    answers.append(link.call_raw(frame))
    link.close()
    v.expect(all(code(a) == "00" for a in answers), "the same 0320 frame 4x (2 connections): 00 each",
             [code(a) for a in answers])
    v.expect(len({(a or {}).get(62) for a in answers}) == 1, "…with the same field 62 each time",
             [(a or {}).get(62) for a in answers])
    bus = island.link("BUS00001")
    load = Load(island, 2, 1500, "BUS00001")
    request = iso.encode("0200", load.request(10))
    first, second = bus.call_raw(request), bus.call_raw(request)
    v.expect(code(first) == "00" and code(second) == "00" and first.get(62) == second.get(62),
             "the same 0200 frame twice: 00 with the same MAC2", (first, second))
    assert load.credit(first), "CREDIT FOR LOAD refused the host's MAC2"
    confirm = iso.encode("0220", load.confirmation(11))
    first, second = bus.call_raw(confirm), bus.call_raw(confirm)
    v.expect(code(first) == "00" and code(second) == "00" and first.get(62) == second.get(62),
             "the same 0220 frame twice: 00 each, the same field 62", (first, second))
    late = bus.call_raw(request)
    log(f"        the 0200 frame again after its confirmation: {code(late)} (books nothing: verified below)")
    bus.close()
    load.close()
    v.expect(island.card_balance(2) == OPENING_FEN + 1500, "card 2 credited once", island.card_balance(2))
    # A clinic's 0100 and its completion, each frame sent twice (a terminal that saw no answer repeats).
    clinic = island.link("CLINIC01")
    challenge, _ = request_challenge(clinic, 1, "CLINIC01", 2)
    fields = online_fields(1, "003000", 4000, 10, "CLINIC01", "000001")
    cryptogram, sw = card_proof(island, 1, fields, challenge)
    assert cryptogram, sw
    hold = iso.encode("0100", hold_request(1, fields, cryptogram, challenge))
    first, second = clinic.call_raw(hold), clinic.call_raw(hold)
    v.expect(code(first) == "00" and code(second) == "00" and first.get(4) == second.get(4),
             "the same 0100 frame twice: 00 with the same amount held", (first, second))
    done = iso.encode("0220", completion(1, 4000, 11, "CLINIC01", "000001", 10))
    first, second = clinic.call_raw(done), clinic.call_raw(done)
    v.expect(code(first) == "00" and code(second) == "00", "the same completion frame twice: 00 each", (first, second))
    clinic.close()
    island.verify_no_money_moved(v, {2002: 250, 1001: 0}, medical={1: MEDICAL_FEN - 4000})


class FakeClearing:
    """An attacker's clearing on a free loopback port (plain TCP, or TLS with a certificate of another CA): it
    approves everything — 0810 00, 0330 00 with a DF10 that is not the record's (`right_digest`: the record's
    own) — so that a terminal trusting it would delete its queue and the shop would never be paid."""

    def __init__(self, tls_files=None, right_digest=False):
        import socket
        import ssl
        import threading
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.context = None
        if tls_files:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(*tls_files)
        self.right_digest = right_digest
        self.requests = []
        self.handshake_failures = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.settimeout(10)
            if self.context:
                try:
                    sock = self.context.wrap_socket(sock, server_side=True)
                except OSError as error:
                    self.handshake_failures.append(str(error))
                    sock.close()
                    continue
            self.answer_all(sock)

    def answer_all(self, sock):
        import struct
        try:
            while True:
                header = sock.recv(2)
                if len(header) < 2:
                    return
                size, body = struct.unpack(">H", header)[0], b""
                while len(body) < size:
                    chunk = sock.recv(size - len(body))
                    if not chunk:
                        return
                    body += chunk
                mti, fields = iso.decode(body)
                self.requests.append(mti)
                answer = {f: v for f, v in fields.items() if f in (2, 3, 4, 7, 11, 12, 13, 25, 41, 60, 70)}
                answer[39] = "00"
                if mti == "0320":
                    data = iso.parse_tlv(fields[62])
                    amount = int(fields[4]) + (0 if self.right_digest else 1)
                    answer[62] = iso.tlv([("DF10", iso.record_digest(data["DF01"], amount, data["DF02"], data["DF06"],
                                                                     data["DF05"], data["DF07"], data["DF08"]))])
                sock.sendall(iso.encode(mti[:2] + str(int(mti[2]) + 1) + mti[3], answer))
        except OSError:
            return
        finally:
            sock.close()

    def close(self):
        self.listener.close()


@phase("fake_clearing")
def fake_clearing(island, v):
    """Responses were not authenticated either: a fake clearing that approves every
    upload must not make the terminal delete its queue. Over TLS the terminal refuses the fake's certificate
    (another CA), even when the fake answers with the right digests; over plain TCP it keeps every record whose
    approval's DF10 is not its own record's digest. Then the genuine clearing books them once."""
    island.start_daemon()
    recs = island.purchases(0, 1, "shop.log", 700, 3)
    fake = FakeClearing(None if island.plain else island.foreign_server(), right_digest=not island.plain)
    rc, report, stderr = island.upload("shop.log", "SHOP0001", port=fake.port)
    fake.close()
    left = len(island.queue_records("shop.log"))
    log(f"        coconut-terminal upload to the fake: exit {rc}, {report or stderr}; the fake saw {fake.requests}"
        f"{', handshake failures ' + str(fake.handshake_failures) if fake.handshake_failures else ''}")
    if island.plain:
        v.expect(fake.requests.count("0320") == len(recs), "the terminal uploaded to the fake", fake.requests)
    else:
        v.expect(fake.handshake_failures and not fake.requests,
                 "the terminal broke off the TLS handshake with the fake: no ISO 8583 message reached it",
                 (fake.handshake_failures, fake.requests))
    v.expect(left == len(recs), f"every record still queued ({len(recs)}) after the fake's approvals", left)
    v.expect(rc not in (0, 2), "coconut-terminal upload reports failure (exit neither 0 nor usage 2)", rc)
    rc, report, stderr = island.upload("shop.log", "SHOP0001")
    v.expect(rc == 0 and report.get("approved") == len(recs) and report.get("remaining") == 0,
             "then the genuine clearing: every record approved and deleted", (rc, report or stderr))
    island.verify_no_money_moved(v, {2002: 700 * len(recs), 1001: 0})


# ---- main ----------------------------------------------------------------------------------------------------

def run_phase(name, tools, plain):
    fn, tls_only = PHASES[name]
    if tls_only and plain:
        log(f"phase {name}: skipped (TLS only; --plain)")
        return "skipped"
    log(f"phase {name} ({'plain TCP' if plain else 'TLS'})")
    log("  " + (fn.__doc__ or "").strip().replace("\n    ", "\n  "))
    workdir = tempfile.mkdtemp(prefix=f"coconut-security-{name}-")
    island = Island(tools, workdir, plain)
    verdict = Verdict()
    ok = False
    try:
        island.setup()
        fn(island, verdict)
        verdict.done()
        ok = True
    except AssertionError as error:  # the phase's verdict; the log keeps the work directory for a look
        log(f"phase {name}: FAILED: {error}")
    except Exception:  # the attack could not be made at all
        log(f"phase {name}: FAILED (error):\n{traceback.format_exc()}")
    finally:
        island.close()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"  work directory kept: {workdir}")
    if ok:
        log(f"phase {name}: PASS")
    return "pass" if ok else "fail"


def main():
    args = sys.argv[1:]
    plain = "--plain" in args
    args = [a for a in args if a != "--plain"]
    tools = [os.path.abspath(a) for a in args if os.path.sep in a]
    names = [a for a in args if os.path.sep not in a]
    if len(tools) < 4 or not names:
        sys.exit(__doc__)
    if names == ["all"]:
        names = list(PHASES)
    unknown = [n for n in names if n not in PHASES]
    if unknown:
        sys.exit(f"unknown phase(s) {unknown}; phases: {', '.join(PHASES)}")
    results = {name: run_phase(name, tools, plain) for name in names}
    log("summary: " + ", ".join(f"{n} {r}" for n, r in results.items()))
    if any(r == "fail" for r in results.values()):
        sys.exit(1)
    if all(r == "skipped" for r in results.values()):
        sys.exit(77)


if __name__ == "__main__":
    main()

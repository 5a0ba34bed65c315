"""A raw ISO 8583 client for the attack suite, written from clearing/ISO8583.md alone (no project code).

Wire format (ISO8583.md §1): 2-byte big-endian length header, MTI (4 ASCII digits), primary bitmap (8 bytes,
binary), secondary bitmap when a field 65-128 is present, then the fields in ascending order: fixed fields
as ASCII, LLVAR / LLLVAR with 2 / 3 ASCII length digits. Field 62 is BER-TLV as upper-case hex text (§3.1).

`Link` speaks plain TCP or TLS (a client certificate optional), so an attack can be made with no certificate,
with one from another CA or with a genuine certificate of another terminal.
"""

import hashlib
import socket
import ssl
import struct

# The fields of the Coconut profile (ISO8583.md §3): kind, size.
FIELDS = {2: ("ll", 19), 3: ("fix", 6), 4: ("fix", 12), 7: ("fix", 10), 11: ("fix", 6), 12: ("fix", 6), 13: ("fix", 4),
          15: ("fix", 4), 25: ("fix", 2), 32: ("ll", 11), 37: ("fix", 12), 38: ("fix", 6), 39: ("fix", 2),
          41: ("fix", 8), 42: ("fix", 15), 48: ("lll", 999), 49: ("fix", 3), 60: ("lll", 999), 62: ("lll", 999),
          63: ("lll", 999), 64: ("bin", 8), 70: ("fix", 3), 74: ("fix", 10), 75: ("fix", 10), 76: ("fix", 10),
          77: ("fix", 10), 86: ("fix", 16), 87: ("fix", 16), 88: ("fix", 16), 89: ("fix", 16), 90: ("fix", 42),
          95: ("fix", 42), 97: ("fix", 17), 128: ("bin", 8)}


def encode(mti, fields):
    """The framed message: header ‖ MTI ‖ bitmap(s) ‖ fields. `fields`: {number: str (bytes for b fields)}."""
    secondary = any(f > 64 for f in fields)
    bitmap = bytearray(16 if secondary else 8)
    if secondary:
        bitmap[0] |= 0x80
    body = b""
    for f in sorted(fields):
        bitmap[(f - 1) // 8] |= 0x80 >> ((f - 1) % 8)
        kind, size = FIELDS[f]
        value = fields[f] if isinstance(fields[f], bytes) else fields[f].encode("ascii")
        if kind == "ll":
            body += b"%02d" % len(value)
        elif kind == "lll":
            body += b"%03d" % len(value)
        else:
            assert len(value) == size, f"field {f}: {len(value)} characters, the profile says {size}"
        body += value
    message = mti.encode("ascii") + bytes(bitmap) + body
    return struct.pack(">H", len(message)) + message


def decode(message):
    """(MTI, {field: str}) of one message without its header."""
    mti = message[:4].decode("ascii")
    secondary = message[4] & 0x80
    bitmap = message[4:20] if secondary else message[4:12]
    at = 4 + len(bitmap)
    fields = {}
    for f in range(2, len(bitmap) * 8 + 1):
        if not bitmap[(f - 1) // 8] & (0x80 >> ((f - 1) % 8)):
            continue
        kind, size = FIELDS[f]
        if kind == "ll":
            size, at = int(message[at:at + 2]), at + 2
        elif kind == "lll":
            size, at = int(message[at:at + 3]), at + 3
        raw = message[at:at + size]
        fields[f] = raw if kind == "bin" else raw.decode("ascii")
        at += size
    if at != len(message):
        raise ValueError(f"{len(message) - at} bytes after the last field of a {mti}")
    return mti, fields


# ---- field 62: BER-TLV as hex text ----------------------------------------------------------------------------

def tlv(items):
    """[(tag hex, value hex)] -> hex text; one-byte lengths (every Coconut value is < 128 bytes)."""
    out = ""
    for tag, value in items:
        assert len(value) % 2 == 0 and len(value) // 2 < 128, (tag, value)
        out += tag + f"{len(value) // 2:02X}" + value
    return out.upper()


def parse_tlv(text):
    out, at = {}, 0
    while at < len(text):
        tag, size = text[at:at + 4], int(text[at + 4:at + 6], 16) * 2
        out[tag] = text[at + 6:at + 6 + size]
        at += 6 + size
    return out


def record_digest(asn, amount_fen, tx_type, psam_terminal, serial, when, tac):
    """DF10 of an approval: first 8 bytes of SHA-256("coconut-record-v1" ‖ ASN ‖ amount BE4 ‖ type ‖ DF06 ‖ DF05 ‖
    DF07 ‖ TAC) of the booked record (the clearing's offline purchase id rules). Hex arguments except amount."""
    data = (b"coconut-record-v1" + bytes.fromhex(asn) + struct.pack(">I", amount_fen) + bytes.fromhex(tx_type)
            + bytes.fromhex(psam_terminal) + bytes.fromhex(serial) + bytes.fromhex(when) + bytes.fromhex(tac))
    return hashlib.sha256(data).hexdigest()[:16].upper()


def load_confirmation_digest(asn, amount_fen, psam_terminal, online_atc, when, tac):
    """DF10 of a 0230 approving a load confirmation (ISO8583.md §4.8): the same over ASN ‖ amount BE4 ‖ 02 ‖ DF06 ‖
    online ATC BE4 ‖ DF07 ‖ TAC."""
    data = (b"coconut-record-v1" + bytes.fromhex(asn) + struct.pack(">I", amount_fen) + b"\x02"
            + bytes.fromhex(psam_terminal) + struct.pack(">I", online_atc) + bytes.fromhex(when) + bytes.fromhex(tac))
    return hashlib.sha256(data).hexdigest()[:16].upper()


def clinic_input(challenge_hex, f41, f11, f7, f4, f60, asn_hex):
    """INTERNAL AUTHENTICATE input of a 0100: first 8 bytes of SHA-256("coconut-clinic-v2" ‖ DF0E ‖ 41 ‖ 11 ‖ 7 ‖ 4 ‖
    60 ‖ ASN(10)), the field texts exactly as sent."""
    data = (b"coconut-clinic-v2" + bytes.fromhex(challenge_hex) + (f41 + f11 + f7 + f4 + f60).encode("ascii")
            + bytes.fromhex(asn_hex))
    return hashlib.sha256(data).hexdigest()[:16].upper()


def clinic_input_v1(f41, f11, f7, f4):
    """The build before host challenges (issue's reproduction 4): first 8 bytes of SHA-256(41 ‖ 11 ‖ 7 ‖ 4)."""
    return hashlib.sha256((f41 + f11 + f7 + f4).encode("ascii")).hexdigest()[:16].upper()


# ---- the link ------------------------------------------------------------------------------------------------

class Refused(Exception):
    """The server refused the connection (TLS handshake, or closed before answering)."""


class TlsIdentity:
    """What a TLS client presents: the CA it trusts for the server, and optionally its certificate and key."""

    def __init__(self, ca, cert=None, key=None):
        self.ca, self.cert, self.key = ca, cert, key
        self._context = None

    def context(self):
        """One context per identity: a session it received can be resumed on its next connection."""
        if self._context is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_verify_locations(self.ca)
            if self.cert:
                ctx.load_cert_chain(self.cert, self.key)
            self._context = ctx
        return self._context


class Link:
    """One terminal connection. `tls`: None for plain TCP, else a TlsIdentity. Raises Refused when the server
    refuses the handshake; `receive` returns None when the server closes the connection."""

    def __init__(self, port, tls=None, timeout=10, session=None):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.tls_version = None
        self.resumed = False
        if tls is None:
            self.sock = raw
            return
        try:
            self.sock = tls.context().wrap_socket(raw, server_hostname="127.0.0.1", session=session)
            self.tls_version = self.sock.version()
            self.resumed = self.sock.session_reused
        except OSError as error:  # ssl.SSLError, a reset or a timeout during the handshake
            raw.close()
            raise Refused(f"TLS handshake: {error}") from error

    def send_raw(self, data):
        self.sock.sendall(data)

    def receive(self):
        """(MTI, fields), or None when the connection was closed (a TLS alert counts as closed)."""
        try:
            header = self._exact(2)
            if header is None:
                return None
            body = self._exact(struct.unpack(">H", header)[0])
        except OSError as error:  # ssl.SSLError (an alert), a reset, a timeout: no answer
            self.last_error = str(error)
            return None
        return decode(body) if body is not None else None

    def _exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def call(self, mti, fields):
        """The answer's fields, or None when the server closed the connection instead of answering."""
        try:
            self.send_raw(encode(mti, fields))
        except OSError as error:
            self.last_error = str(error)
            return None
        answer = self.receive()
        return None if answer is None else answer[1]

    def call_raw(self, frame):
        try:
            self.send_raw(frame)
        except OSError as error:
            self.last_error = str(error)
            return None
        answer = self.receive()
        return None if answer is None else answer[1]

    def session(self):
        """The TLS session to resume (TLS 1.3: its ticket arrives with the first answer), or None."""
        return getattr(self.sock, "session", None)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

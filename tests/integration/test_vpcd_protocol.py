#!/usr/bin/python3
"""`coconut-vcard serve` against a fake vpcd (no pcscd): the wire protocol of docs/PCSC.md §3 and the
latency rule of section 5, on a private port so it never meets a real pcscd.

- 2-byte big-endian framing; 04 -> ATR; 00/01/02 get no reply; any longer payload is an APDU -> R-APDU.
- power off and reset drop volatile state (the purse selection), the image keeps the rest.
- the fake vpcd writes length and payload in two send() calls with Nagle on, like the Debian vpcd build:
  unless serve re-arms TCP_QUICKACK before every read, each APDU waits ~40 ms for a delayed ACK.
- when vpcd closes the connection, serve reconnects; SIGTERM ends serve with exit 0.

usage: test_vpcd_protocol.py PATH/TO/coconut-vcard
"""

import json
import signal
import socket
import statistics
import subprocess
import time

from pcsc_harness import (OPENING_BALANCE_FEN, PURSE_AID, card_profile, check_equal, log, main, personalize,
                          psam_profile, run)

PORT = 45971  # not vpcd's 35963/35964
ACCEPT_WAIT_S = 5
LATENCY_APDUS = 300
LATENCY_MEDIAN_LIMIT_MS = 5.0  # ~0.05 ms measured; a missing QUICKACK gives ~40 ms


class FakeVpcd:
    def __init__(self, port):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(1)
        self.listener.settimeout(ACCEPT_WAIT_S)
        self.connection = None

    def accept(self):
        self.connection, _ = self.listener.accept()
        self.connection.settimeout(ACCEPT_WAIT_S)

    def send(self, payload):
        # Two writes, Nagle on: exactly what makes a vicc without QUICKACK slow.
        self.connection.sendall(len(payload).to_bytes(2, "big"))
        self.connection.sendall(payload)

    def receive(self):
        header = self._exact(2)
        return self._exact(int.from_bytes(header, "big"))

    def _exact(self, size):
        data = b""
        while len(data) < size:
            chunk = self.connection.recv(size - len(data))
            if not chunk:
                raise AssertionError("serve closed the connection")
            data += chunk
        return data

    def control(self, code):
        self.send(bytes([code]))

    def apdu(self, hex_text):
        self.send(bytes.fromhex(hex_text))
        return self.receive().hex().upper()

    def close_connection(self):
        self.connection.close()
        self.connection = None


def test(vcard, workdir, _extra):
    card_image = personalize(vcard, workdir, "card", card_profile())
    atr = json.loads(run([vcard, "info", "--json", card_image]).stdout)["atr"]
    select = f"00A4040008{PURSE_AID}00"
    vpcd = FakeVpcd(PORT)
    serve = subprocess.Popen([vcard, "serve", card_image, "--port", str(PORT)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        vpcd.accept()
        log("framing and control messages")
        vpcd.control(0x04)
        check_equal("04 get ATR -> ATR", vpcd.receive().hex().upper(), atr)
        vpcd.control(0x01)  # power on: no reply
        check_equal("SELECT purse", vpcd.apdu(select)[-4:], "9000")
        check_equal("GET BALANCE", vpcd.apdu("805C000204"), f"{OPENING_BALANCE_FEN:08X}9000")
        vpcd.control(0x02)  # reset: no reply; the selection is volatile
        check_equal("GET BALANCE after reset (no selection)", vpcd.apdu("805C000204") == f"{OPENING_BALANCE_FEN:08X}9000",
                    False)
        check_equal("SELECT again", vpcd.apdu(select)[-4:], "9000")
        vpcd.control(0x00)  # power off: no reply
        vpcd.control(0x04)
        check_equal("ATR is answered while powered off", vpcd.receive().hex().upper(), atr)
        vpcd.control(0x01)
        check_equal("GET BALANCE after power cycle (no selection)",
                    vpcd.apdu("805C000204") == f"{OPENING_BALANCE_FEN:08X}9000", False)

        log(f"latency: {LATENCY_APDUS} APDUs, vpcd-style split writes with Nagle on")
        vpcd.apdu(select)
        samples = []
        for _ in range(LATENCY_APDUS):
            start = time.perf_counter()
            vpcd.apdu("805C000204")
            samples.append((time.perf_counter() - start) * 1000)
        median_ms = statistics.median(samples)
        log(f"  median {median_ms:.3f} ms, max {max(samples):.3f} ms")
        check_equal(f"median APDU round trip under {LATENCY_MEDIAN_LIMIT_MS} ms (TCP_QUICKACK re-armed)",
                    median_ms < LATENCY_MEDIAN_LIMIT_MS, True)

        log("vpcd drops the connection: serve reconnects")
        vpcd.close_connection()
        vpcd.accept()
        vpcd.control(0x04)
        check_equal("ATR on the new connection", vpcd.receive().hex().upper(), atr)
        check_equal("GET BALANCE on the new connection needs a new SELECT",
                    vpcd.apdu("805C000204") == f"{OPENING_BALANCE_FEN:08X}9000", False)
        check_equal("SELECT on the new connection", vpcd.apdu(select)[-4:], "9000")

        log("SIGTERM")
        serve.send_signal(signal.SIGTERM)
        check_equal("serve exit code on SIGTERM", serve.wait(timeout=5), 0)
        check_equal("serve closes the connection when it stops", vpcd.connection.recv(1), b"")
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        vpcd.listener.close()


if __name__ == "__main__":
    main(test)

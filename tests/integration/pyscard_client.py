#!/usr/bin/python3
"""A PC/SC client of its own (pyscard, /usr/bin/python3): one of the three independent clients.

  pyscard_client.py purchase AMOUNT_FEN DATETIME14   card INIT -> PSAM 80 70 -> DEBIT -> PSAM 80 72
  pyscard_client.py balance                          SELECT purse, GET BALANCE
  pyscard_client.py read                             SELECT purse, GET BALANCE, EF15, EF18 record 1
  pyscard_client.py t0 AMOUNT_FEN DATETIME14         T=0 card: the purchase with 61xx + GET RESPONSE by hand

Prints one JSON object: every exchange as {"command": hex, "response": hex (data), "sw": hex}.
Exit code 0 when every status word is the expected one, 1 otherwise.
"""

import json
import sys

from smartcard.System import readers

CARD_READER = "Virtual PCD 00 00"
PSAM_READER = "Virtual PCD 00 01"
PURSE_AID = "A000000632010105"
PSAM_AID = "A0000006324D4F542E435053414D3031"
ISSUER_ID = "4600000000000001"
ASN = "46010000000012345678"

transcript = []


def connect(name):
    for reader in readers():
        if str(reader) == name:
            connection = reader.createConnection()
            connection.connect()
            return connection
    raise SystemExit(f"reader {name!r} not found; readers: {[str(r) for r in readers()]}")


def transmit(connection, command_hex, expected_sw="9000"):
    command = list(bytes.fromhex(command_hex.replace(" ", "")))
    data, sw1, sw2 = connection.transmit(command)
    entry = {"command": bytes(command).hex().upper(), "response": bytes(data).hex().upper(),
             "sw": f"{sw1:02X}{sw2:02X}"}
    transcript.append(entry)
    if expected_sw is not None and entry["sw"] != expected_sw:
        print(json.dumps({"error": f"{command_hex}: SW {entry['sw']}, expected {expected_sw}",
                          "transcript": transcript}, indent=1))
        raise SystemExit(1)
    return bytes(data)


def select(aid):
    return f"00A40400{len(aid) // 2:02X}{aid}00"


def purchase(amount_fen, when):
    card = connect(CARD_READER)
    psam = connect(PSAM_READER)
    transmit(card, select(PURSE_AID))
    transmit(psam, select(PSAM_AID))
    terminal_id = transmit(psam, "00B0960006").hex().upper()
    init = transmit(card, f"805001020B01{amount_fen:08X}{terminal_id}0F")
    balance, atc, key_version, alg, random = init[0:4], init[4:6], init[9:10], init[10:11], init[11:15]
    sam_data = (random + atc + amount_fen.to_bytes(4, "big") + b"\x06" + bytes.fromhex(when) + key_version + alg
                + bytes.fromhex(ASN)[2:] + bytes.fromhex(ISSUER_ID))
    sam = transmit(psam, f"80700000{len(sam_data):02X}{sam_data.hex().upper()}08")
    serial, mac1 = sam[0:4], sam[4:8]
    debit = transmit(card, f"805401000F{serial.hex()}{when}{mac1.hex()}08")
    transmit(psam, f"8072000004{debit[4:8].hex()}")
    return {"balance_before": balance.hex().upper(), "terminal_id": terminal_id,
            "terminal_serial": serial.hex().upper(), "tac": debit[0:4].hex().upper()}


def balance():
    card = connect(CARD_READER)
    transmit(card, select(PURSE_AID))
    return {"balance": transmit(card, "805C000204").hex().upper()}


def read():
    card = connect(CARD_READER)
    transmit(card, select(PURSE_AID))
    return {"balance": transmit(card, "805C000204").hex().upper(),
            "ef15": transmit(card, "00B095001E").hex().upper(),
            "ef18_1": transmit(card, "00B201C417").hex().upper()}


def t0(amount_fen, when):
    """T=0 card in slot 0 (the PSAM in slot 1 stays T=1): a whole purchase with the T=0 rules done by hand."""
    card = connect(CARD_READER)
    psam = connect(PSAM_READER)
    result = {"protocol": "T=0" if card.getProtocol() == card.T0_protocol else "other"}
    # Case 4 under T=0: the card answers 61xx; the data comes with GET RESPONSE (docs/CARD-SPEC.md §8).
    transmit(card, select(PURSE_AID), expected_sw=None)
    result["select_sw"] = transcript[-1]["sw"]
    result["select_data"] = transcript[-1]["response"]
    result["fci"] = transmit(card, f"00C00000{result['select_sw'][2:]}").hex().upper()
    result["balance"] = transmit(card, "805C000204").hex().upper()  # case 2: the data comes at once
    transmit(psam, select(PSAM_AID))
    terminal_id = transmit(psam, "00B0960006").hex().upper()
    # A T=0 terminal sends case 4 without Le (the TPDU is case 3).
    transmit(card, f"805001020B01{amount_fen:08X}{terminal_id}", expected_sw=None)
    result["init_sw"] = transcript[-1]["sw"]
    init = transmit(card, f"00C00000{result['init_sw'][2:]}")
    result["init"] = init.hex().upper()
    atc, key_version, alg, random = init[4:6], init[9:10], init[10:11], init[11:15]
    sam_data = (random + atc + amount_fen.to_bytes(4, "big") + b"\x06" + bytes.fromhex(when) + key_version + alg
                + bytes.fromhex(ASN)[2:] + bytes.fromhex(ISSUER_ID))
    sam = transmit(psam, f"80700000{len(sam_data):02X}{sam_data.hex().upper()}08")
    transmit(card, f"805401000F{sam[0:4].hex()}{when}{sam[4:8].hex()}", expected_sw=None)
    result["debit_sw"] = transcript[-1]["sw"]
    debit = transmit(card, f"00C00000{result['debit_sw'][2:]}")
    transmit(psam, f"8072000004{debit[4:8].hex()}")
    result["balance_after"] = transmit(card, "805C000204").hex().upper()
    return result


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    mode = sys.argv[1]
    if mode == "purchase":
        result = purchase(int(sys.argv[2]), sys.argv[3])
    elif mode == "balance":
        result = balance()
    elif mode == "read":
        result = read()
    elif mode == "t0":
        result = t0(int(sys.argv[2]), sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {mode}")
    result["transcript"] = transcript
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

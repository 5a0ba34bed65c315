#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_apdu_dispatcher into card-os-apdu/fuzz/corpus/fuzz_apdu_dispatcher/ (committed; rerun after
changing the input layout documented at the top of fuzz_apdu_dispatcher.cpp). One file per terminal
session a real reader would run, so the fuzzer starts from every application's deep states."""
import os
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "corpus" / "fuzz_apdu_dispatcher"

CARD_T1, CARD_T0, PSAM, CARD_MASTER = 0, 1, 2, 3
PRESELECT, SSSE_FIRST, PIN_FIRST = 0x04, 0x08, 0x10
POWER_OFF, RESET, DEBIT, CREDIT, GET_RESPONSE, SELECT_PURSE, UNBLOCK, SNAPSHOT = range(0xF0, 0xF8)

BUS = "01300001" "000C" "0003" "00012345" "001122334455" "20261126130000" "000000C8" "00000007" "0000" "0000" + "00" * 11


def apdu(h):
    b = bytes.fromhex(h.replace(" ", ""))
    assert len(b) < 0xF0
    return bytes([len(b)]) + b


def session(flags, *steps):
    out = bytes([flags])
    for s in steps:
        out += bytes([s]) if isinstance(s, int) else apdu(s)
    return out


SEEDS = {
    "purchase": session(CARD_T1 | PRESELECT, "805C000204", "805001020B0100000064001122334455 0F", DEBIT, 0, 1,
                        "805A0006020000 08", "00B201C417", "805C000204"),
    "capp": session(CARD_T1 | PRESELECT, "805003020B01000000C8001122334455 0F", "80DC01D030" + BUS,
                    "80DC00F030" + BUS, DEBIT, 0, 2, "00B201D430", "00B201F430", "805A0009020000 08"),
    "load": session(CARD_T1 | PRESELECT, "805000020B0100001000001122334455 10", CREDIT, "00B201C417",
                    "805A0002020000 08", "805000020B0100001000001122334455 10"),
    "t0": session(CARD_T0, "00A4040008A000000632010105", GET_RESPONSE, "805001020B0100000064001122334455",
                  "00C0000005", GET_RESPONSE, "00C0000020", "805C000204"),
    "psam": session(PSAM | PRESELECT, "00B0960006", "00B0970002",
                    "8070000024 11223344 0005 000000FA 06 20261126135100 01 00 0000000000012345 0460000000000001 08",
                    "8072000004 01020304", "8070000014 11223344 0005 000000FA 06 20261126135100 01 00 08"),
    "ssse": session(CARD_T1 | SSSE_FIRST, "00B2083000", "00B20D3000", "00A40000020005", "00B2010000",
                    "0020000003123456", "00880001081122334455667788 08", "00A4000002DF04", "00B2304000"),
    "lock": session(CARD_T1 | PRESELECT, "805001020B0100000064001122334455 0F", "80540100 0F 00000001 20261126 130000 DEADBEEF 08",
                    "805001020B0100000064001122334455 0F", "80540100 0F 00000001 20261126 130000 DEADBEEF 08",
                    "805001020B0100000064001122334455 0F", "80540100 0F 00000001 20261126 130000 DEADBEEF 08",
                    "805C000204", UNBLOCK, "805C000204"),
    "auth": session(CARD_T1 | PRESELECT | PIN_FIRST, "0084000004", "0082000108 0102030405060708", "0084000008",
                    "0082000208 0102030405060708", "0020000002 1234", POWER_OFF, "00A4040008A00000063201010500"),
    "files": session(CARD_T1 | PRESELECT, "00B0950000", "00B0951E01", "00B0950A0A", "00B0980017", "00B2010400",
                     "00B20BC417", "00A4000002 3F00", "00A40400 0E 315041592E5359532E4444463031 00"),
    "malformed": session(CARD_MASTER | PRESELECT, "80", "805C", "805001020B01", "8050010200000B01",
                         "80500102 00000B 0100000064001122334455 0000", "FFA4040000", "00FF0000", RESET, SNAPSHOT),
}


IMAGE_MODE = 0xE0
SEEDS.update({
    "image-identity": bytes([IMAGE_MODE | CARD_T1, 0]),
    "image-poke-card": bytes([IMAGE_MODE | CARD_T1, 0]) + bytes.fromhex("000A00" "010063" "0200FF"),
    "image-truncate-psam": bytes([IMAGE_MODE | PSAM, 1]) + bytes.fromhex("0040"),
    "image-raw": bytes([IMAGE_MODE | CARD_T0, 2]) + bytes.fromhex("010101000100"),
})


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in SEEDS.items():
        (OUT / f"seed-{name}").write_bytes(data)
    print(f"wrote {len(SEEDS)} seeds to {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()

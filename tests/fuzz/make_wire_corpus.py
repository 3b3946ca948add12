#!/usr/bin/env python3
"""make_wire_corpus.py - (re)generate the seed corpus for fuzz_wire.

Writes tests/fuzz/corpus/wire/: 20 valid frames of every message type and a
few malformed ones. Message numbers and field tags are read from the
X-macro tables in common/mx_wire.h, so the corpus follows the protocol; the
frame layout is encoded here independently of mx_wire.c (big-endian):

  magic u32 "MXCL" | version u16 | type u16 | flags u32 | body_length u32 |
  request_id u64 | message_id 16 bytes | fields: tag u16 | length u32 | value

Deterministic (fixed seed): running it again gives the same files.
"""
import os
import random
import re
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "..", "..", "common", "mx_wire.h")
OUT = os.path.join(HERE, "corpus", "wire")

MAGIC, VERSION = 0x4D58434C, 1
SIZES = {"U32": 4, "U64": 8, "MSGID": 16}


def tables():
    text = open(HEADER, encoding="utf-8").read()
    msgs = [(n, int(v)) for n, v in re.findall(r"X\((MSG_\w+),\s*(\d+),", text)]
    fields = [(n, int(t), k) for n, t, k in
              re.findall(r"X\((F_\w+),\s*(\d+),\s*(U32|U64|STR|BYTES|MSGID),", text)]
    assert msgs and fields, "could not read the tables in mx_wire.h"
    return msgs, fields


def field(tag, value, length=None):
    return struct.pack(">HI", tag, len(value) if length is None else length) + value


def frame(mtype, body, flags=0, request_id=0, msgid=bytes(16), magic=MAGIC,
          version=VERSION, body_length=None):
    bl = len(body) if body_length is None else body_length
    return struct.pack(">IHHII", magic, version, mtype, flags, bl) + \
        struct.pack(">Q", request_id) + msgid + body


STRINGS = [b"", b"alice@example.org", b"<>", b"inbound", b"node1", b"mta",
           b"192.0.2.7", b"mail.example.net", b"X-Spam: yes", b"/var/spool/mx/01HWX5RZ",
           b"level=info event=smtp.accept id=01HWX5RZ", b"\xc3\xa9t\xc3\xa9", b"a" * 300]
BODY = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


def value(rng, kind):
    if kind in SIZES:
        if kind == "U32":
            return struct.pack(">I", rng.choice([0, 1, 2, 3, 4, 750, 0xFFFFFFFF]))
        if kind == "U64":
            return struct.pack(">Q", rng.choice([0, 45, 20 << 20, 2**64 - 1]))
        return bytes(rng.randrange(256) for _ in range(16))
    if kind == "BYTES":
        return rng.choice([b"", BODY, b"\x00\xff\x80binary"])
    return rng.choice(STRINGS)


def main():
    msgs, fields = tables()
    rng = random.Random(20240611)
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):  # ours only: inputs a fuzz run found stay
        if old.startswith(("msg_", "bad-")):
            os.unlink(os.path.join(OUT, old))
    files = {}
    for name, number in msgs:
        for i in range(20):
            body = b""
            for _ in range(rng.randrange(0, 7)):
                fname, tag, kind = rng.choice(fields)
                body += field(tag, value(rng, kind))
            if i % 5 == 4:  # a field from a newer sender: must be skipped
                body += field(rng.choice([0, 99, 1000, 65535]), b"future")
            msgid = bytes(16) if i % 3 == 0 else bytes(rng.randrange(256) for _ in range(16))
            files[f"{name.lower()}-{i:02d}"] = frame(
                number, body, flags=rng.choice([0, 1]), request_id=rng.randrange(2**64),
                msgid=msgid)
    ok = field(1, struct.pack(">I", 0)) + field(2, b"ok")
    files.update({
        "bad-truncated-header": frame(1, ok)[:39],
        "bad-magic": frame(1, ok, magic=0x4D58434D),
        "bad-version": frame(1, ok, version=2),
        "bad-type": frame(3, ok),
        "bad-body-length-long": frame(1, ok, body_length=len(ok) + 1),
        "bad-body-length-short": frame(1, ok, body_length=len(ok) - 1),
        "bad-field-crosses-end": frame(1, field(2, b"hello", length=6)),
        "bad-field-header-truncated": frame(1, ok + b"\x00\x02\x00\x00"),
        "bad-u32-length": frame(1, field(1, b"\x00\x00\x01")),
        "bad-u64-length": frame(1, field(14, b"\x00" * 4)),
    })
    for fname, data in sorted(files.items()):
        with open(os.path.join(OUT, fname), "wb") as f:
            f.write(data)
    print(f"wrote {len(files)} files to {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()

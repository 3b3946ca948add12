#!/usr/bin/env python3
"""Regenerates the SEARCH / SORT test messages (python3 make_testdata.py).

Each message is written with explicit bytes so the charsets and transfer
encodings are exactly what the tests claim (ISO-2022-JP 7bit, UTF-8 base64,
Shift_JIS 8bit, ISO-8859-1 quoted-printable, windows-1251, multipart)."""
import base64
import quopri
from email.header import Header

CRLF = b"\r\n"


def hdr(name, value):
    return name.encode() + b": " + value.encode("ascii") + CRLF


def enc_word(text, charset):
    return Header(text, charset).encode()


def write(name, headers, body):
    with open(name, "wb") as f:
        f.write(b"".join(headers) + CRLF + body)


common = [hdr("From", "Taro Yamada <taro@example.jp>"), hdr("To", "hanako@example.jp")]

# 1. ISO-2022-JP, 7bit, subject as ISO-2022-JP B encoded-word
write("jp_iso2022.eml",
      common + [hdr("Subject", enc_word("会議の議事録", "iso-2022-jp")),
                hdr("Date", "Mon, 2 Mar 2026 10:00:00 +0900"),
                hdr("Message-ID", "<jp1@example.jp>"),
                hdr("MIME-Version", "1.0"),
                hdr("Content-Type", 'text/plain; charset="ISO-2022-JP"'),
                hdr("Content-Transfer-Encoding", "7bit")],
      "本日の会議では予算について話し合いました。\r\n".encode("iso2022_jp"))

# 2. UTF-8 base64 body, UTF-8 B subject
body = "東京オフィスの移転についてお知らせします。\r\nよろしくお願いします。\r\n".encode("utf-8")
write("jp_utf8_base64.eml",
      common + [hdr("Subject", enc_word("移転のお知らせ", "utf-8")),
                hdr("Date", "Tue, 3 Mar 2026 23:30:00 -0500"),
                hdr("Message-ID", "<jp2@example.jp>"),
                hdr("MIME-Version", "1.0"),
                hdr("Content-Type", "text/plain; charset=utf-8"),
                hdr("Content-Transfer-Encoding", "base64")],
      base64.encodebytes(body).replace(b"\n", CRLF))

# 3. Shift_JIS 8bit
write("jp_sjis.eml",
      common + [hdr("Subject", "sjis test"),
                hdr("Date", "Wed, 4 Mar 2026 08:00:00 +0000"),
                hdr("MIME-Version", "1.0"),
                hdr("Content-Type", "text/plain; charset=Shift_JIS"),
                hdr("Content-Transfer-Encoding", "8bit")],
      "大阪支店からの報告書\r\n".encode("shift_jis"))

# 4. ISO-8859-1 quoted-printable, Latin subject in Q encoding
write("latin1_qp.eml",
      [hdr("From", enc_word("Jürgen Müller", "iso-8859-1") + " <jm@example.de>"),
       hdr("To", "Anna <anna@example.de>"),
       hdr("Cc", "bob@example.org"),
       hdr("Subject", enc_word("Grüße aus München", "iso-8859-1")),
       hdr("Date", "Thu, 5 Mar 2026 12:00:00 +0100"),
       hdr("X-Ticket", "ABC-12345"),
       hdr("MIME-Version", "1.0"),
       hdr("Content-Type", "text/plain; charset=iso-8859-1"),
       hdr("Content-Transfer-Encoding", "quoted-printable")],
      quopri.encodestring("Schöne Grüße, STRASSE und Straße.\r\n".encode("iso-8859-1")))

# 5. windows-1251 Cyrillic body, Greek UTF-8 subject
write("cyrillic_greek.eml",
      [hdr("From", "ivan@example.ru"), hdr("To", "maria@example.gr"),
       hdr("Subject", enc_word("ΚΑΛΗΜΕΡΑ κόσμε", "utf-8")),
       hdr("Date", "Fri, 6 Mar 2026 00:30:00 +0300"),
       hdr("MIME-Version", "1.0"),
       hdr("Content-Type", "text/plain; charset=windows-1251"),
       hdr("Content-Transfer-Encoding", "8bit")],
      "ПРИВЕТ из Москвы\r\n".encode("cp1251"))

# 6. multipart: text/plain + text/html + a binary attachment holding a word
#    that BODY must not find (only text parts are searched)
att = base64.encodebytes(b"\x00\x01ATTACHMENTONLYWORD\x02").replace(b"\n", CRLF)
parts = (b"--XYZ\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
         b"plain part with needle-alpha\r\n"
         b"--XYZ\r\nContent-Type: text/html; charset=utf-8\r\n"
         b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
         b"<p>html part with needle-beta =E2=9C=93</p>\r\n"
         b"--XYZ\r\nContent-Type: application/octet-stream\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\n" + att +
         b"--XYZ--\r\n")
write("multipart.eml",
      [hdr("From", '"Support Desk" <support@example.com>'),
       hdr("To", "undisclosed-recipients:;"),
       hdr("Subject", "Re: [ticket] help\r\n\twith folding"),
       hdr("Date", "Sat, 7 Mar 2026 23:59:59 -1000"),
       hdr("MIME-Version", "1.0"),
       hdr("Content-Type", 'multipart/mixed; boundary="XYZ"')],
      parts)

#!/usr/bin/env python3
"""imap_differential - differential IMAP conformance: mx-imapd against
Debian's Dovecot on the same input.

A tool run by hand (not registered in ctest): it starts both servers with
imap_testlib (MxTarget: the full cluster; DovecotTarget: the reference),
APPENDs the same deterministic corpus of awkward messages to both (same
flags, same INTERNALDATE), runs the same command list on both, normalizes
what legitimately differs between two servers and prints a unified diff per
command whose answers differ.

A difference is a lead, not a verdict: each one has to be judged against the
RFC (Dovecot has its own deviations, e.g. it decodes nothing in ENVELOPE but
accepts some malformed input others refuse).

Differences already judged against the RFCs are annotated in the output
(JUDGED below, keyed by command); anything without a note is new.

Normalized away (servers may legitimately differ there):
  - the human-readable text after OK/NO/BAD/BYE (response codes are kept,
    with UIDVALIDITY / APPENDUID / COPYUID validity numbers replaced);
  - untagged CAPABILITY, ID, ENABLED, NAMESPACE and OK/NO lines that only
    carry text (kept when they carry a response code, text dropped);
  - absolute MODSEQ / HIGHESTMODSEQ values (shown as N);
  - the order of items inside one FETCH response (RFC 3501 7.4.2 does not
    fix it), the order of flags in a flag list, literal vs quoted strings;
  - case of body type, subtype, encoding, parameter names, charset values and
    disposition types in BODY/BODYSTRUCTURE (all case-insensitive,
    RFC 2045 5.1 / 6.1, RFC 2183 2);
  - X- extension items;
  - the order of SELECT/EXAMINE's untagged responses and of LIST/LSUB/STATUS
    lines; a run of "* n EXPUNGE" is shown as the set of numbers it removed
    (low-to-high and high-to-low are both right, RFC 3501 7.4.1);
  - untagged FLAGS / PERMANENTFLAGS after a command (Dovecot announces new
    keywords, even ones only searched for); "* OK [HIGHESTMODSEQ]" at SELECT
    (mx-imapd sends it always, RFC 7162 3.1.2.1; Dovecot after CONDSTORE);
  - child / special-use LIST attributes when an extended LIST did not ask
    for them (RFC 5258 4, RFC 6154 2: optional then), and the order of
    ESEARCH return items (RFC 4731 3).

Usage (with a build dir holding mx-imapd etc.; about 10 s):
  PYTHONPATH=deploy:tests/integration MX_BUILD_DIR=$PWD/build-diff \\
      python3 tests/integration/imap_differential.py [-g GROUP] [-k SUBSTRING] [-v]
Exit status 0 when no differences, 1 otherwise.
"""

import argparse
import difflib
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from imap_testlib import DovecotTarget, MxTarget, RawImap, quote  # noqa: E402
from test_imap_conformance import GrammarError, Str, check_response_line, \
    parse_all  # noqa: E402

INTERNALDATE = b"17-Jul-2023 14:15:16 +0200"

# --- corpus: (name, bytes, flags, internaldate) ---


def crlf(text):
    """crlf - a message from a readable str with \\n line ends -> CRLF bytes."""
    if isinstance(text, str):
        text = text.encode("utf-8")
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def header(subject, extra="", sender="Alice Example <alice@example.org>",
           to="Bob <bob@example.test>", date="Mon, 10 Jul 2023 09:00:00 +0000",
           msgid=None):
    out = "From: %s\nTo: %s\nSubject: %s\nDate: %s\n" % (sender, to, subject, date)
    if msgid is not False:
        out += "Message-ID: %s\n" % (msgid or "<%s@diff.test>" % re.sub(r"\W", "", subject)[:20])
    return out + extra


INNER2 = crlf(header("innermost", sender="Deep <deep@example.org>", msgid="<deep@diff.test>")
              + "Content-Type: text/plain; charset=iso-8859-1\n"
              "Content-Transfer-Encoding: quoted-printable\n\n"
              "D=E9j=E0 vu, tr=E8s profond\n")

INNER1 = crlf(header("middle layer", sender="Mid <mid@example.org>", msgid="<mid@diff.test>")
              + "MIME-Version: 1.0\n"
              "Content-Type: multipart/mixed; boundary=\"mid-b\"\n\n"
              "--mid-b\nContent-Type: text/plain\n\nmiddle text\n"
              "--mid-b\nContent-Type: message/rfc822\nContent-Description: the deepest\n\n") \
    + INNER2 + crlf("\n--mid-b--\n")

CORPUS = [
    ("plain", crlf(header("plain message") + "\nHello world\nsecond line\n"), b"\\Seen", None),

    ("nested-mixed-alt-related", crlf(
        header("Re: [list] Fwd: nested (fwd)",
               "MIME-Version: 1.0\n"
               "In-Reply-To: <plainmessage@diff.test>\n"
               "References: <root@diff.test> <plainmessage@diff.test>\n"
               "Content-Type: multipart/mixed; boundary=\"outer\"\n") +
        "\nprologue\n--outer\n"
        "Content-Type: multipart/alternative; boundary=\"alt\"\n\n"
        "--alt\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n\n"
        "Gr=C3=BC=C3=9Fe aus K=C3=B6ln, soft=\nbreak\n"
        "--alt\nContent-Type: multipart/related; boundary=\"rel\"; type=\"text/html\"\n\n"
        "--rel\nContent-Type: text/html; charset=utf-8\n"
        "Content-Location: http://example.org/index.html\n\n"
        "<p>Gr&uuml;&szlig;e <img src=\"cid:img1@diff\"></p>\n"
        "--rel\nContent-Type: image/png\nContent-ID: <img1@diff>\n"
        "Content-Transfer-Encoding: base64\n"
        "Content-Disposition: inline; filename=\"pixel.png\"\n"
        "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n\n"
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDw\n"
        "ADhgGAWjR9awAAAABJRU5ErkJggg==\n"
        "--rel--\n--alt--\n"
        "--outer\nContent-Type: application/pdf; name=\"report.pdf\"\n"
        "Content-Disposition: attachment; filename=\"report.pdf\"; size=12\n"
        "Content-Language: en, de-CH\n"
        "Content-Transfer-Encoding: base64\n\nJVBERi0xLjQKJQ==\n"
        "--outer--\nepilogue\n"), b"\\Flagged $Label1", None),

    ("rfc822-nested-twice", crlf(
        header("Fwd: middle layer", "MIME-Version: 1.0\n"
               "Content-Type: multipart/mixed; boundary=\"top-b\"\n") +
        "\n--top-b\nContent-Type: text/plain; charset=us-ascii\n\nsee attached\n"
        "--top-b\nContent-Type: message/rfc822; name=\"fwd.eml\"\n"
        "Content-Disposition: attachment; filename=fwd.eml\n\n") + INNER1 +
     crlf("\n--top-b--\n"), b"", None),

    ("encoded-words", crlf(
        "From: =?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>\n"
        "To: =?US-ASCII?Q?Keith_Moore?= <moore@cs.utk.edu>, "
        "=?utf-8?B?5bGx55Sw?= <yamada@example.jp>\n"
        "Cc: =?ISO-8859-1?Q?Olle_J=E4rnefors?= <ojarnef@admin.kth.se>\n"
        "Subject: =?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=\n"
        " =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=\n"
        "Date: Tue, 11 Jul 2023 10:00:00 -0700\n"
        "Message-ID: <encoded@diff.test>\n"
        "X-Broken: =?utf-8?q?unterminated and =?bogus-charset?Q?x?= =?utf-8?B?!!!?=\n"
        "Comments: =?koi8-r?B?8NLJ18XU?=\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: base64\n\n"
        "R3LDvMOfZSwgZGllIFN1Y2hlIGZpbmRldCBkaWVzZSBaZWlsZSBhdWNoIGluIGJhc2U2NC4K\n"),
     b"", None),

    ("rfc2231", crlf(
        header("rfc2231 parameters", "MIME-Version: 1.0\n"
               "Content-Type: multipart/mixed; boundary=\"2231\"\n") +
        "\n--2231\nContent-Type: application/x-stuff;\n"
        " title*0*=us-ascii'en'This%20is%20even%20more%20;\n"
        " title*1*=%2A%2A%2Afun%2A%2A%2A%20;\n title*2=\"isn't it!\"\n"
        "Content-Disposition: attachment; filename*=UTF-8''na%C3%AFve%20file.txt\n\n"
        "stuff\n"
        "--2231\nContent-Type: text/plain; charset*=us-ascii'en'utf-8;\n"
        " name*0=\"long\"; name*1=\"name.txt\"\n"
        "Content-Disposition: INLINE; FileName=\"UPPER.TXT\"\n"
        "Content-Language: fr\n\ntexte\n--2231--\n"), b"", None),

    ("odd-addresses", crlf(
        "From: \"Joe Q. Public\" <john.q.public@example.com>\n"
        "Sender: <@a.example,@b.example:route@c.example>\n"
        "Reply-To: \"quoted local\"@example.org (comment here)\n"
        "To: undisclosed-recipients:;\n"
        "Cc: Mary Smith <mary@x.test>, jdoe@example.org (John Doe), Who? <one@y.test>,\n"
        " \"Giant; \\\"Big\\\" Box\" <sysservices@example.net>,\n"
        " A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;\n"
        "Bcc: bare-local-part, (only comment) <>, Empty Group:;\n"
        "Subject: odd addresses\n"
        "Date: 12 Jul 2023 11:00 +0100\n"
        "Message-ID: <odd@diff.test>\n\nbody\n"), b"", None),

    ("missing-and-duplicate-headers", crlf(
        "Subject: first subject\n"
        "Subject: second subject\n"
        "From: dup1@example.org\n"
        "From: dup2@example.org\n"
        "Date: not a date at all\n\nno Message-ID, no To, bad date\n"), b"", None),

    ("no-body", crlf("From: nobody@example.org\nSubject: no body\n"
                     "Date: Thu, 13 Jul 2023 12:00:00 +0000\n"), b"", None),

    ("header-only-with-blank", crlf("From: blank@example.org\nSubject: blank body\n\n"), b"",
     None),

    ("no-final-crlf", crlf(header("no final crlf") + "\n") + b"last line without newline",
     b"", None),

    ("bare-lf", (b"From: lf@example.org\nSubject: bare LF lines\nDate: Fri, 14 Jul 2023 "
                 b"08:00:00 +0000\nContent-Type: text/plain\n\nline one\nline two\r\n"
                 b"line three\n"), b"", None),

    ("8bit-headers", crlf(header("Grüße 8bit subject ünïcödé",
                                 sender="Jörg Müller <joerg@example.de>") +
                          "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
                          "Content-Transfer-Encoding: 8bit\n\nKäse und Brötchen\n"),
     b"", None),

    ("binary-parts", crlf(
        header("binary parts", "MIME-Version: 1.0\n"
               "Content-Type: multipart/mixed; boundary=\"bin\"\n") +
        "\n--bin\nContent-Type: application/octet-stream\n"
        "Content-Transfer-Encoding: base64\n\nAAECA2hlbGxvAP8=\n"
        "--bin\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n\n"
        "caf=C3=A9 au=\n lait=3D=0D=0A=\nend\n"
        "--bin\nContent-Type: text/plain\nContent-Transfer-Encoding: Base64\n\n"
        "aGVsbG8g\nd29ybGQ=\n"
        "--bin\nContent-Type: application/octet-stream\n"
        "Content-Transfer-Encoding: 8bit\n\nbegin 644 x\n`\nend\n"
        "--bin\nContent-Type: text/plain\nContent-Transfer-Encoding: 7bit\n\nseven\n"
        "--bin--\n"), b"", None),

    ("long-folded", crlf(
        header("a very long subject line that goes on and on and on and on and on and on and"
               "\n on across several folded lines\n\tand a tab-folded one too",
               "References: <a1@diff.test>\n <a2@diff.test>\n\t<a3@diff.test>\n"
               "In-Reply-To: <a3@diff.test> (comment)\n"
               "X-Long: " + "x" * 1200 + "\n",
               to="one@example.org,\n two@example.org,\n \"Three, Four\" <three@example.org>")
        + "\nbody\n"), b"", None),

    ("empty-subject", crlf("From: empty@example.org\nSubject:\nTo: \n"
                           "Date: Sat, 15 Jul 2023 00:00:00 +0000\n"
                           "Message-ID: <empty@diff.test>\n\nempty subject\n"), b"", None),

    ("reply-thread-1", crlf(header("Re: plain message",
                                   "In-Reply-To: <plainmessage@diff.test>\n"
                                   "References: <plainmessage@diff.test>\n",
                                   date="Sun, 16 Jul 2023 09:00:00 +0200",
                                   msgid="<reply1@diff.test>") + "\nreply one\n"), b"\\Answered",
     None),

    ("reply-thread-2", crlf(header("RE: Re: [list] plain message (fwd)",
                                   "References: <plainmessage@diff.test> <reply1@diff.test>\n",
                                   date="Sun, 16 Jul 2023 10:00:00 +0200",
                                   sender="Zed <zed@example.org>",
                                   to="\"Aaron\" <aaron@example.org>",
                                   msgid="<reply2@diff.test>") + "\nreply two\n"),
     b"$Forwarded", None),

    ("message-rfc822-only", crlf(
        header("Fwd: innermost", "MIME-Version: 1.0\nContent-Type: message/rfc822\n")
        + "\n") + INNER2, b"", None),

    ("multipart-no-parts", crlf(header("empty multipart", "MIME-Version: 1.0\n"
                                       "Content-Type: multipart/mixed; boundary=\"none\"\n")
                                + "\nno boundary ever appears\n"), b"", None),

    ("iso-2022-jp", crlf(header("=?ISO-2022-JP?B?GyRCMnFNRCROTD1EajsWGyhC?=",
                                "MIME-Version: 1.0\n"
                                "Content-Type: text/plain; charset=ISO-2022-JP\n")) +
     b"\r\n" + "明日の会議は東京で行います。\r\n".encode("iso-2022-jp"), b"", None),

    ("digest-defaults", crlf(
        header("digest", "MIME-Version: 1.0\n"
               "Content-Type: multipart/digest; boundary=\"dig\"\n") +
        "\n--dig\n\nFrom: d1@example.org\nSubject: digest one\n\ndigest body one\n"
        "--dig\nContent-Type: text/plain\n\nexplicit text in a digest\n"
        "--dig\n\nFrom: d2@example.org\nSubject: digest two\n\ndigest body two\n"
        "--dig--\n"), b"", None),

    ("odd-mime", crlf(
        header("odd mime", "MIME-Version: 1.0\n"
               "Content-Type: multipart/mixed; boundary=a\n") +
        "\n--a\nContent-Type: text\n\nno subtype\n"
        "--a\nContent-Type: foo\n\ninvalid type\n"
        "--a\nContent-Type: TEXT/HTML; CHARSET=\"ISO-8859-1\"; Format=Flowed\n"
        "Content-Description: =?utf-8?q?caf=C3=A9?=\nContent-ID: <cid.1@x>\n\n<b>x</b>\n"
        "--a\n\nno header at all\n"
        "--a\nContent-Type: text/plain; charset=\n"
        "Content-Type: application/json\n\nduplicate content-type\n"
        "--a\nContent-Type: message/rfc822\n\n"
        "\nan encapsulated message with an empty header\n"
        "--a\nContent-Disposition: ; filename=x\n"
        "Content-Type: text/plain; name==?utf-8?q?=C3=A9t=C3=A9.txt?=\n\n"
        "disposition without type\n"
        "--ab\nnot a boundary of a\n"
        "--a  \nContent-Type: text/plain\n\nboundary line with trailing blanks\n"
        "--a\nContent-Type: multipart/alternative\n\nmultipart without boundary parameter\n"
        "--a--\n"), b"", None),

    ("rfc822-in-rfc822", crlf(
        header("outer of two", "MIME-Version: 1.0\nContent-Type: message/rfc822\n") +
        "\nFrom: two@example.org\nSubject: middle of two\nMIME-Version: 1.0\n"
        "Content-Type: message/rfc822\n\nFrom: three@example.org\nSubject: inner of two\n"
        "\ninnermost text\n\n"), b"", None),

    ("digest-in-rfc822", crlf(
        header("digest inside", "MIME-Version: 1.0\nContent-Type: message/rfc822\n") +
        "\nFrom: dig@example.org\nSubject: inner digest\n"
        "Content-Type: multipart/digest; boundary=\"dd\"\n\nprologue\n\n--dd \n\n"
        "From: m1@example.org\nSubject: m1\n\nm1 body\n\n--dd\t\nX-Part: two\n\n"
        "From: m2@example.org\nSubject: m2\n\nm2 body\n\n--dd--\n\nepilogue\n"),
     b"", None),

    ("address-comments", crlf(
        "From: <alpha (a note)@ (another) beta.example>\n"
        "To: gamma@delta.example (Real Gamma), Name <eps@zeta.example>\n"
        "Cc: grp: one@g.example, two@g.example;, grp2: three@g.example;\n"
        "Subject: address comments\nDate: Wed, 02 Aug 2023 10:00:00 +0000\n\nbody\n"),
     b"", None),

    ("qp-edge-cases", crlf(
        header("qp edge cases", "MIME-Version: 1.0\n"
               "Content-Type: multipart/mixed; boundary=\"qp\"\n") +
        "\n--qp\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"
        "trailing blanks   \ntrailing tab\t\nsoft=\nbreak=20\nencoded tab=09x\n"
        "lower =c3=a9 hex\nbad =XY escape\nlone = sign\nunderscore_stays\n"
        "blank then soft \t=\nnext\nends with equals=\n"
        "--qp\nContent-Type: application/octet-stream\n"
        "Content-Transfer-Encoding: base64\n\n"
        "AAEC\nAwQF  \nBgc=\n\n"
        "--qp\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        "aGVsbG8=d29ybGQ=\n!!junk!!\nAA\n"
        "--qp\nContent-Type: text/plain\nContent-Transfer-Encoding: BASE64 (comment)\n\n"
        "Zm9v\n"
        "--qp--\n"), b"", None),

    ("truncated-multipart", crlf(
        header("truncated multipart", "MIME-Version: 1.0\n"
               "Content-Type: multipart/mixed; boundary=\"t\"\n") +
        "\n--t\nContent-Type: text/plain\n\nfirst\n--t\nContent-Type: text/plain\n\n"
        "second and never closed\n"), b"", None),

    ("more-addresses", crlf(
        "From: <>\n"
        "Sender: \"Display, Name\" <user@[192.0.2.1]>\n"
        "Reply-To: local-only, Name <user@host> (comment), , \"\" <empty@name.test>\n"
        "To: =?utf-8?q?a=2Cb?= <x@y.test>, G1:;, G2: m1@g.test;, last@z.test\n"
        "Cc: Jörg <j@ö.example>, user@host (Real Name)\n"
        "Bcc: \"very \\\"escaped\\\" name\" <e@x.test>\n"
        "In-Reply-To: <a@b> <c@d>\n"
        "Subject: =?utf-8?B?w6k=?= plain =?utf-8?Q?=C3=A9?=\n"
        "Date: Mon, 17 Jul 2023 25:61:00 +9999\n"
        "Message-ID: not-in-brackets@x\n\nbody\n"), b"", None),

    ("date-timezones", crlf(header("timezone edge", date="Mon, 31 Jul 2023 23:30:00 -0500")
                            + "\nlate\n"), b"", None),
]

# RFC 5256 base subjects and threading oddities (appended after CORPUS)
SUBJECTS = [
    ("Fwd: [tag] Re: subject a", "<t1@x>", "", "Tue, 01 Aug 2023 10:00:00 +0000"),
    ("[fwd: subject a]", "<t2@x>", "", "Tue, 01 Aug 2023 09:00:00 +0000"),
    ("Re[2]: subject a", "<t3@x>", "<t1@x>", "Tue, 01 Aug 2023 11:00:00 +0000"),
    ("Re : subject b", "<t4@x>", "", "Tue, 01 Aug 2023 12:00:00 +0000"),
    ("[blob1] [blob2] Re: subject b", "<t5@x>", "<t4@x>", "Tue, 01 Aug 2023 08:00:00 +0000"),
    ("[only blob]", "<t6@x>", "", "Tue, 01 Aug 2023 13:00:00 +0000"),
    ("re:re:RE: subject c (fwd) (fwd)", "<t7@x>", "<missing@x> <t6@x>",
     "Tue, 01 Aug 2023 14:00:00 +0000"),
    ("=?utf-8?q?Re=3A_subject_d?=", "<t8@x>", "", "Tue, 01 Aug 2023 15:00:00 +0000"),
    ("   subject d   ", "<t9@x>", "", "Tue, 01 Aug 2023 16:00:00 +0000"),
    ("Re:", "<t10@x>", "<t9@x>", "Tue, 01 Aug 2023 17:00:00 +0000"),
    ("Fw: Subject E", "<t11@x>", "<t12@x>", "Tue, 01 Aug 2023 18:00:00 +0000"),
    ("subject e", "<t12@x>", "<t11@x>", "Tue, 01 Aug 2023 19:00:00 +0000"),  # a loop
    ("dup id one", "<dup@x>", "", "Tue, 01 Aug 2023 20:00:00 +0000"),
    ("dup id two", "<dup@x>", "", "Tue, 01 Aug 2023 21:00:00 +0000"),
    ("Re: dup id", "<t15@x>", "<dup@x>", "Tue, 01 Aug 2023 22:00:00 +0000"),
    ("subject\tf\t tabs", "<t16@x>", "", "Tue, 01 Aug 2023 23:00:00 +0000"),
    ("Re: [fwd: Re: subject f]", "<t17@x>", "", "not a date"),
]

# INTERNALDATEs near midnight in other zones: BEFORE/ON/SINCE disregard time
# and timezone (RFC 3501 6.4.4)
CORPUS += [
    ("intdate-late-west", crlf(header("late west", date="Tue, 18 Jul 2023 04:30:00 +0000")
                                + "\nx\n"), b"", b"17-Jul-2023 23:30:00 -0500"),
    ("intdate-early-east", crlf(header("early east", date="Mon, 17 Jul 2023 22:30:00 +0000")
                                 + "\nx\n"), b"", b"18-Jul-2023 00:30:00 +0200"),
]

# last, so that BINARY over 1:N-1 is not refused as a whole for it
UNKNOWN_CTE = ("unknown-cte", crlf(header("unknown cte", "MIME-Version: 1.0\n"
                                          "Content-Type: multipart/mixed; boundary=u\n") +
                                   "\n--u\nContent-Type: text/plain\n\nfine\n"
                                   "--u\nContent-Type: application/octet-stream\n"
                                   "Content-Transfer-Encoding: x-uuencode\n\n"
                                   "begin 644 x\n`\nend\n--u--\n"), b"", None)

CORPUS += [
    ("thread-%d" % i, crlf(header(subj, ("References: %s\n" % refs) if refs else "", date=date,
                                  msgid=msgid) + "\nthread body %d\n" % i), b"", None)
    for i, (subj, msgid, refs, date) in enumerate(SUBJECTS)
] + [UNKNOWN_CTE]


# --- commands ---

def binary_set():
    """binary_set - every message but the last (UNKNOWN_CTE): a server may
    refuse a whole BINARY FETCH for one part it cannot decode (RFC 3516 4.3
    [UNKNOWN-CTE]), which would hide every other answer."""
    return "1:%d" % (len(CORPUS) - 1)


def fetch_commands():
    parts = ["1", "2", "3", "1.1", "1.2", "1.1.1", "1.2.1", "1.2.2", "2.1", "2.2", "2.2.1",
             "2.2.2", "2.2.2.1", "2.2.2.2", "3.1", "4", "5", "0", "1.0", "99"]
    cmds = [
        "FETCH 1:* (ENVELOPE)",
        "FETCH 1:* (BODYSTRUCTURE)",
        "FETCH 1:* (BODY)",
        "FETCH 1:* (RFC822.SIZE INTERNALDATE FLAGS UID)",
        "FETCH 1:* (RFC822.HEADER)",
        "FETCH 1:* (RFC822.TEXT)",
        "FETCH 1:* (BODY.PEEK[])",
        "FETCH 1:* (BODY.PEEK[HEADER])",
        "FETCH 1:* (BODY.PEEK[TEXT])",
        "FETCH 1:* (BODY.PEEK[MIME])",
        "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (subject FROM x-LONG)])",
        "FETCH 1:* (BODY.PEEK[HEADER.FIELDS.NOT (Subject date Message-ID received)])",
        "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (nonexistent)])",
        "FETCH 1:* (BODY.PEEK[]<0.10> BODY.PEEK[TEXT]<5.1> BODY.PEEK[HEADER]<4294967290.5>)",
        "FETCH 1:* (BODY.PEEK[]<100000.4294967295>)",
        "FETCH %s (BINARY.PEEK[] BINARY.SIZE[])" % binary_set(),
        "FETCH %s (BINARY.PEEK[TEXT])" % binary_set(),
        "FETCH 1:* (FAST)", "FETCH 1:* (ALL)", "FETCH 1:* (FULL)",
        "FETCH %s (RFC822.SIZE BINARY.SIZE[1])" % binary_set(),
        "FETCH * (BINARY.PEEK[1])", "FETCH * (BINARY.PEEK[2])", "FETCH * (BINARY.SIZE[2])",
        "FETCH * (BINARY.PEEK[2]<0.3>)", "FETCH * (BODY.PEEK[2])",
        "FETCH 1 (BINARY.PEEK[1]<40>)",
    ]
    for p in parts:
        cmds.append("FETCH 1:* (BODY.PEEK[%s] BODY.PEEK[%s.MIME])" % (p, p))
        cmds.append("FETCH 1:* (BODY.PEEK[%s.HEADER] BODY.PEEK[%s.TEXT])" % (p, p))
        cmds.append("FETCH 1:* (BODY.PEEK[%s.HEADER.FIELDS (Content-Type subject)])" % p)
        cmds.append("FETCH %s (BINARY.PEEK[%s] BINARY.SIZE[%s])" % (binary_set(), p, p))
        cmds.append("FETCH %s (BINARY.PEEK[%s]<2.5>)" % (binary_set(), p))
    return cmds


SEARCH_KEYS = [
    "ALL", "ANSWERED", "UNANSWERED", "DELETED", "UNDELETED", "DRAFT", "UNDRAFT", "FLAGGED",
    "UNFLAGGED", "SEEN", "UNSEEN", "NEW", "OLD", "RECENT", "KEYWORD $Label1",
    "UNKEYWORD $Label1", "KEYWORD $forwarded", "KEYWORD nonexistent",
    "BCC bare", "BCC group", "CC mary", "CC \"Big\"", "CC ed", "FROM andr", "FROM André",
    "FROM pirard", "FROM \"Joe Q\"", "FROM dup2", "FROM jörg", "TO undisclosed", "TO bob",
    "TO \"three, four\"", "TO yamada", "TO 山田",
    "SUBJECT \"\"", "SUBJECT plain", "SUBJECT \"understand the example\"",
    "SUBJECT grüße", "SUBJECT 会議", "SUBJECT \"second subject\"", "SUBJECT \"first subject\"",
    "SUBJECT \"and on across\"",
    "BODY hello", "BODY \"Grüße aus Köln\"", "BODY \"softbreak\"", "BODY \"soft break\"",
    "BODY \"Suche findet\"", "BODY 東京", "BODY \"lait=end\"", "BODY \"caf\xe9 au lait\"",
    "BODY \"Déjà vu\"", "BODY \"without newline\"", "BODY \"line two\"", "BODY stuff",
    "BODY middle", "BODY \"\"", "BODY fwd.eml",
    "TEXT hello", "TEXT \"plain message\"", "TEXT alice", "TEXT Déjà", "TEXT 東京",
    "TEXT \"X-Long\"", "TEXT xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "HEADER Subject \"\"", "HEADER X-Broken \"\"", "HEADER x-broken unterminated",
    "HEADER Comments Привет", "HEADER References a2@diff", "HEADER Message-ID \"\"",
    "HEADER In-Reply-To plainmessage", "HEADER Content-Type multipart",
    "HEADER Subject \"on across\"", "HEADER To \"two@example.org,\"",
    "HEADER X-Missing \"\"",
    "FROM alpha@beta.example", "FROM \"alpha@beta\"", "FROM \"a note\"", "FROM lpha@bet",
    "TO \"real gamma\"", "TO gamma@delta.example", "TO \"Name <eps\"", "TO eps@zeta.example",
    "CC grp", "CC grp2", "CC three@g", "CC \"grp:\"", "HEADER CC \"\"", "HEADER From alpha",
    "HEADER FROM \"a note\"", "TO \"<eps@zeta.example>\"",
    "LARGER 500", "SMALLER 300", "LARGER 0", "SMALLER 1", "LARGER 4294967295",
    "SENTBEFORE 12-Jul-2023", "SENTON 12-Jul-2023", "SENTSINCE 12-Jul-2023",
    "SENTON 11-Jul-2023", "SENTON 1-Aug-2023", "SENTON 31-Jul-2023", "SENTBEFORE 1-Jan-1970",
    "SENTSINCE 1-Jan-2100",
    "BEFORE 17-Jul-2023", "ON 17-Jul-2023", "SINCE 17-Jul-2023", "BEFORE 18-Jul-2023",
    "ON 01-Jan-2023", "SINCE 1-Jan-2000", "ON 18-Jul-2023", "SINCE 18-Jul-2023",
    "BEFORE 18-Jul-2023 SUBJECT east", "SENTON 18-Jul-2023", "SENTON 17-Jul-2023",
    "SENTBEFORE 18-Jul-2023 SUBJECT west",
    "NOT SEEN", "NOT NOT SEEN", "OR SEEN FLAGGED", "OR (SEEN FLAGGED) ANSWERED",
    "NOT OR SUBJECT plain SUBJECT nested", "OR OR SEEN FLAGGED OR ANSWERED KEYWORD $Forwarded",
    "(NOT (OR LARGER 1000 SMALLER 400)) UNSEEN", "()",
    "1:3", "3:1", "*", "*:5", "5:*", "2,4,6:8,*", "1:*", "100:200", "4:2 NOT 3",
    "UID 1:3", "UID 3:1", "UID *", "UID 1:* NOT UID 2", "UID 9999:*", "UID 9999",
    "UNDELETED SUBJECT \"Re:\"", "CHARSET UTF-8 SUBJECT grüße", "CHARSET ISO-8859-1 FROM Andr",
    "CHARSET X-UNKNOWN SUBJECT a", "BOGUSKEY", "SUBJECT", "ON 32-Jul-2023", "SENTON 2023-07-12",
    "LARGER -1", "LARGER abc", "0", "1:0", "1,,2", "1:*:2", "UID 0", "OR SEEN",
    "(SEEN", "SEEN)",
]

SORT_KEYS = ["ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM",
             "DISPLAYTO"]


def lit(text):
    """lit - TEXT as a LITERAL+ literal (8-bit strings are not allowed in
    quoted strings before UTF8=ACCEPT, RFC 3501 section 9 QUOTED-CHAR)."""
    data = text.encode("utf-8")
    return "{%d+}\r\n%s" % (len(data), text)


# 8-bit search strings, sent as literals with CHARSET UTF-8 (RFC 3501 6.4.4)
UTF8_SEARCHES = [
    ("BODY", "Grüße aus Köln"), ("BODY", "café au lait"), ("BODY", "Déjà vu"),
    ("BODY", "東京"), ("BODY", "Käse"), ("TEXT", "Déjà"), ("TEXT", "東京"),
    ("TEXT", "Grüße"), ("SUBJECT", "grüße"), ("SUBJECT", "GRÜSSE"), ("SUBJECT", "会議"),
    ("SUBJECT", "ünïcödé"),
    ("FROM", "André"), ("FROM", "jörg"), ("TO", "山田"), ("CC", "Järnefors"),
    ("HEADER Comments", "Привет"), ("HEADER Subject", "understand"),
    ("BODY", "profond"), ("BODY", "très"), ("BODY", "naïve"), ("SUBJECT", "If you can read"),
]


def search_commands():
    cmds = ["SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN", "SEARCH RETURN () ALL",
            "UID SEARCH RETURN (COUNT) SUBJECT re", "SEARCH RETURN (MIN) DELETED",
            "SEARCH RETURN (ALL) 1:3,5,7:9", "SEARCH RETURN (BOGUS) ALL",
            "SEARCH RETURN (SAVE) SUBJECT re", "FETCH $ (UID)", "SEARCH $",
            "UID SEARCH RETURN (SAVE MIN) FLAGGED", "UID FETCH $ (UID)"]
    for key in SEARCH_KEYS:
        cmds.append("SEARCH " + key)
    for key, text in UTF8_SEARCHES:
        cmds.append("SEARCH CHARSET UTF-8 %s %s" % (key, lit(text)))
    for key in ["ALL", "UNSEEN", "1:*", "UID 3:*", "SUBJECT re", "5:2"]:
        cmds.append("UID SEARCH " + key)
    return cmds


def sort_commands():
    cmds = []
    for key in SORT_KEYS:
        cmds.append("SORT (%s) UTF-8 ALL" % key)
        cmds.append("SORT (REVERSE %s) UTF-8 ALL" % key)
    cmds += ["SORT (SUBJECT DATE) UTF-8 ALL", "SORT (REVERSE DATE REVERSE ARRIVAL) UTF-8 ALL",
             "SORT (SIZE) US-ASCII SUBJECT re", "UID SORT (SUBJECT) UTF-8 ALL",
             "SORT (FROM) UTF-8 NOT SEEN", "SORT (BOGUS) UTF-8 ALL", "SORT () UTF-8 ALL",
             "SORT (SUBJECT) X-UNKNOWN ALL",
             "THREAD REFERENCES UTF-8 ALL", "THREAD ORDEREDSUBJECT UTF-8 ALL",
             "UID THREAD REFERENCES UTF-8 ALL", "UID THREAD ORDEREDSUBJECT UTF-8 ALL",
             "THREAD REFERENCES UTF-8 SUBJECT plain", "THREAD BOGUS UTF-8 ALL"]
    return cmds


def error_commands():
    return ["FETCH 0 FLAGS", "FETCH 1:0 FLAGS", "FETCH 999 FLAGS", "FETCH 999:1000 FLAGS",
            "FETCH * FLAGS", "FETCH 1 (BODY[BOGUS])", "FETCH 1 (BODY[1.BOGUS])",
            "FETCH 1 (BODY[HEADER.FIELDS ()])", "FETCH 1 (BODY[HEADER.FIELDS])",
            "FETCH 1 (BODY[1.HEADER])", "FETCH 1 (BINARY[HEADER])", "FETCH 1 (BODY[]<1>)",
            "FETCH 1 (BODY[]<0.0>)", "FETCH 1 (RFC822.BOGUS)", "FETCH 1 ()", "FETCH 1",
            "FETCH 1 FLAGS)", "FETCH a FLAGS", "FETCH 1,,2 FLAGS", "FETCH 1:*:2 FLAGS",
            "UID FETCH 9999 FLAGS", "UID FETCH 9999:* (FLAGS)", "UID FETCH 0 FLAGS",
            "UID FETCH 2:1 (UID)", "STORE 999 +FLAGS (x)", "STORE 1 +FLAGS (\\Bogus)",
            "STORE 1 FOO (x)", "COPY 999 Archive", "COPY 1 NoSuchBox", "SELECT NoSuchBox",
            "STATUS NoSuchBox (MESSAGES)", "STATUS INBOX (BOGUS)", "STATUS INBOX ()",
            "LIST", "LIST \"\"", "CREATE INBOX", "DELETE INBOX", "RENAME NoSuchBox Other",
            "EXAMINE", "NOOP extra", "CHECK", "SEARCH", "UID BOGUS 1", "BOGUS"]


def mailbox_commands():
    return [
        'LIST "" ""', 'LIST "" %', 'LIST "" *', 'LIST "" "Arch*"', 'LIST "" "Archive/%"',
        'LIST "" "Archive/*"', 'LIST "" "A%e"', 'LIST "" "%/2024"', 'LIST "" "*/Q1"',
        'LIST "" "A*1"', 'LIST "" inbox', 'LIST "" InBoX', 'LIST "" "inbox*"', 'LIST "" "I%"',
        'LIST "Archive" "%"', 'LIST "Archive/" "%"', 'LIST "" "Work/%"', 'LIST "" "%/%"',
        'LIST "" "%/%/%"', 'LIST "" "nosuch"', 'LIST "" "Archive/2024/"',
        'LSUB "" *', 'LSUB "" "Archive/%"',
        'STATUS Archive (MESSAGES RECENT UIDNEXT UNSEEN)', 'STATUS INBOX (MESSAGES UNSEEN)',
        'STATUS Archive/2024 (MESSAGES UIDNEXT)', 'STATUS inbox (MESSAGES)',
        'STATUS Archive (SIZE)', 'STATUS Archive (DELETED)',
        'LIST (SUBSCRIBED) "" "*"', 'LIST "" "*" RETURN (CHILDREN)',
        'LIST "" "%" RETURN (STATUS (MESSAGES UNSEEN UIDNEXT))', 'LIST (SPECIAL-USE) "" "*"',
        'LIST "" "*" RETURN (SPECIAL-USE)', 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"',
        'LIST () "" "%"', 'LIST "" ("Archive" "Work")', 'LIST (REMOTE) "" "%"',
        'LIST (BOGUS) "" "%"', 'LIST (RECURSIVEMATCH) "" "%"',
        'LIST "" "%" RETURN (SUBSCRIBED)', 'LSUB "" "%"', 'LSUB "" "Archive"',
    ]


def condstore_commands():
    """CONDSTORE / QRESYNC (RFC 7162): values of MODSEQ are normalized, their
    presence and the MODIFIED / VANISHED sets are compared."""
    return [
        "ENABLE CONDSTORE", "SELECT INBOX (CONDSTORE)", "FETCH 1:3 (FLAGS MODSEQ)",
        "STORE 1 +FLAGS (cs1)", "STORE 1:2 (UNCHANGEDSINCE 1) +FLAGS (cs2)",
        "UID STORE 1:3 (UNCHANGEDSINCE 9223372036854775807) -FLAGS.SILENT (cs1)",
        "STORE 1 (UNCHANGEDSINCE 9223372036854775808) +FLAGS.SILENT (cs3)",
        "SEARCH MODSEQ 1", "SEARCH MODSEQ \"/flags/cs1\" all 1", "SEARCH RETURN (MIN MAX) MODSEQ 2",
        "FETCH 1:* (FLAGS) (CHANGEDSINCE 1)", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)",
        "FETCH 1 (MODSEQ) (CHANGEDSINCE 0)", "STORE 1 (UNCHANGEDSINCE 0) +FLAGS (x)",
        "STATUS INBOX (HIGHESTMODSEQ MESSAGES)", "ENABLE QRESYNC",
        "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)", "EXAMINE INBOX (QRESYNC (1 1))",
        "SELECT INBOX",
    ]


def store_copy_commands():
    return [
        "STORE 1 +FLAGS (\\Flagged kw1 KW2)", "STORE 1 -FLAGS (kw1)",
        "STORE 1:3 FLAGS.SILENT (\\Seen $Junk)", "STORE 2 FLAGS ()", "STORE 3 +FLAGS.SILENT ()",
        "STORE 4 +FLAGS \\Answered", "STORE 5 -FLAGS.SILENT (\\Recent)",
        "STORE 6 FLAGS (\\Seen \\Seen kw1 KW1)", "UID STORE 1:* +FLAGS.SILENT (batch)",
        "FETCH 1:6 (FLAGS)",
        "COPY 1:3 Archive", "COPY 3,1 Archive", "UID COPY 1:2 Archive/2024",
        "UID COPY 9999 Archive",
        "STATUS Archive (MESSAGES UIDNEXT)",
        "MOVE 2 Archive", "UID MOVE 4:5 Archive/2024", "FETCH 1:* (UID FLAGS)",
        "STORE 1,3,5 +FLAGS.SILENT (\\Deleted)", "EXPUNGE", "FETCH 1:* (UID)",
        "STORE 2,4 +FLAGS.SILENT (\\Deleted)", "UID EXPUNGE 1:*", "FETCH 1:* (UID)",
        "UID FETCH 1 (FLAGS)", "UID FETCH 1:3 (FLAGS)",
    ]


# --- differences judged against the RFCs (command -> verdict) ---

DOVECOT_DEVIATES = "Dovecot deviates, mx-imapd follows the RFC: "
AMBIGUOUS = "Not fixed by the RFCs, both answers are defensible: "
JUDGED = {
    "FETCH 1:* (ENVELOPE)":
        AMBIGUOUS + "duplicate Subject/From (RFC 5322 3.6 allows one; mx takes the first); "
        "a quoted local part keeps its quotes in mx (the addr-mailbox then still forms a "
        "valid addr-spec); " + "folding keeps a TAB in mx (RFC 5322 2.2.3: unfolding "
        "removes CRLF only, Dovecot also turns the TAB into SP); Dovecot invents "
        "MISSING_MAILBOX entries for empty list elements",
    "FETCH 1:* (BODYSTRUCTURE)":
        "RFC 2045 5.2: an invalid Content-Type (\"text\", \"foo\") is text/plain; "
        "RFC 2046 5.1.1: \"--ab\" is no delimiter of boundary \"a\" (Dovecot matches "
        "prefixes); RFC 2231 continuations are passed as they are by mx, joined by Dovecot "
        "(RFC 3501 does not ask for either); bare-LF messages: mx counts the stored bytes",
    "FETCH 1:* (BODY)": "as BODYSTRUCTURE",
    "FETCH %s (BINARY.PEEK[TEXT])" % binary_set():
        DOVECOT_DEVIATES + "RFC 3516 4.2 section-binary takes part numbers only; BAD",
    "FETCH 1 (BINARY[HEADER])": DOVECOT_DEVIATES + "RFC 3516 section-binary; BAD",
    "FETCH 1 (BODY[]<0.0>)": DOVECOT_DEVIATES + "RFC 3501 9 partial length is nz-number",
    "FETCH 1:* (BODY.PEEK[0] BODY.PEEK[0.MIME])":
        DOVECOT_DEVIATES + "section-part is nz-number (RFC 3501 9): BAD",
    "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (subject FROM x-LONG)])":
        DOVECOT_DEVIATES + "RFC 3501 6.4.5: no blank line for a message without body "
        "and blank line (Dovecot adds one for HEADER.FIELDS, not for .NOT)",
    "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (nonexistent)])": "as HEADER.FIELDS above",
    "SEARCH BODY \"Grüße aus Köln\"":
        "8-bit in a quoted string is no QUOTED-CHAR (RFC 3501 9) before UTF8=ACCEPT: BAD; "
        "the same search as a literal agrees",
    "SEARCH BODY \"café au lait\"": "as above",
    "SEARCH BODY \"Déjà vu\"": "as above",
    "SEARCH ON 32-Jul-2023": "no such date: mx BAD, Dovecot matches nothing; both defensible",
    "SEARCH SENTBEFORE 12-Jul-2023":
        AMBIGUOUS + "a message without a (valid) Date: Dovecot takes it as 1970, mx "
        "matches no SENT* key (RFC 3501 6.4.4 says nothing)",
    "SEARCH FROM \"a note\"":
        "mx also matches the raw header text (comments included) besides the ENVELOPE "
        "addresses; a superset, left",
    "SORT (FROM) UTF-8 ALL":
        AMBIGUOUS + "\"From: <>\": Dovecot sorts the MISSING_MAILBOX placeholder, mx an "
        "empty key",
    "SORT (DISPLAYTO) UTF-8 ALL":
        AMBIGUOUS + "\"x@y (Real Name)\": Dovecot sorts the comment as display-name, mx "
        "the addr-spec (RFC 5957 3 names the RFC 5322 display-name; a comment is none); "
        "a group sorts by its name in both (RFC 5256 3)",
    "SORT (REVERSE DISPLAYTO) UTF-8 ALL": "as DISPLAYTO",
    "SORT (DISPLAYFROM) UTF-8 ALL": "as FROM",
    "SORT (REVERSE DISPLAYFROM) UTF-8 ALL": "as FROM",
    "SORT (REVERSE FROM) UTF-8 ALL": "as FROM",
    "FETCH 1:* (RFC822.TEXT)":
        "mx sends FLAGS with every non-PEEK body item even when \\Seen was already set "
        "(RFC 3501 6.4.5 asks for them when they change; more is allowed); bare LF kept",
    "LSUB \"\" \"%\"": "special-use attributes are for LIST (RFC 6154 2); mx subscribes INBOX",
    "LSUB \"\" *": "as above",
    "EXPUNGE":
        "after ENABLE QRESYNC mx puts [HIGHESTMODSEQ] on every EXPUNGE/UID EXPUNGE/MOVE "
        "OK (RFC 7162 3.2.7/3.2.9 require it when something was expunged; Dovecot only then)",
    "UID EXPUNGE 1:*": "as EXPUNGE",
    "STORE 3 +FLAGS.SILENT ()":
        "after CONDSTORE mx reports MODSEQ for every message of a STORE, changed or not "
        "(RFC 7162 3.1.3 requires it for the changed ones)",
    "FETCH 1:6 (FLAGS)": "after QRESYNC mx adds UID to every FETCH response (allowed)",
    "LIST \"Archive\" \"%\"":
        AMBIGUOUS + "a reference without trailing delimiter is implementation-defined "
        "(RFC 3501 6.3.8)",
    "STATUS Archive (DELETED)": "STATUS DELETED is IMAP4rev2 (RFC 9051), Dovecot 2.3 lacks it",
    "STORE 1 (UNCHANGEDSINCE 9223372036854775808) +FLAGS.SILENT (cs3)":
        DOVECOT_DEVIATES + "mod-sequence-value is at most 2^63-1 (RFC 7162 7): BAD",
    "THREAD REFERENCES UTF-8 ALL":
        DOVECOT_DEVIATES + "\"* THREAD \" with a trailing SP on an empty result "
        "(RFC 5256 5 grammar)",
}

# --- normalization ---

BODY_KEYS = (b"BODY", b"BODYSTRUCTURE")


def show(v):
    """show - one parsed value in a canonical printed form."""
    if v is None:
        return "NIL"
    if isinstance(v, list):
        return "(" + " ".join(show(x) for x in v) + ")"
    if isinstance(v, Str):
        return '"' + v.decode("utf-8", "backslashreplace").replace("\r\n", "\\r\\n") + '"'
    return v.decode("utf-8", "backslashreplace")


def upper_str(v):
    return Str(v.upper()) if isinstance(v, bytes) else v


def norm_params(params):
    if not isinstance(params, list):
        return params
    out = []
    for k in range(0, len(params) - 1, 2):
        name, value = upper_str(params[k]), params[k + 1]
        if name == b"CHARSET":
            value = upper_str(value)
        out += [name, value]
    return out


def norm_disposition(disp):
    if isinstance(disp, list) and disp:
        return [upper_str(disp[0])] + [norm_params(x) for x in disp[1:]]
    return disp


def norm_body(b):
    """norm_body - BODY/BODYSTRUCTURE with case-insensitive tokens upper-cased."""
    if not isinstance(b, list) or not b:
        return b
    if isinstance(b[0], list):  # multipart: parts, subtype, ext
        k = 0
        out = []
        while k < len(b) and isinstance(b[k], list):
            out.append(norm_body(b[k]))
            k += 1
        rest = b[k:]
        if rest:
            rest = [upper_str(rest[0])] + rest[1:]
            if len(rest) > 1:
                rest[1] = norm_params(rest[1])
            if len(rest) > 2:
                rest[2] = norm_disposition(rest[2])
        return out + rest
    out = list(b)
    out[0], out[1] = upper_str(out[0]), upper_str(out[1])
    if len(out) > 2:
        out[2] = norm_params(out[2])
    if len(out) > 5:
        out[5] = upper_str(out[5])
    is_message = out[0] == b"MESSAGE" and out[1] in (b"RFC822", b"GLOBAL")
    is_text = out[0] == b"TEXT"
    ext = 10 if is_message else 9 if is_text else 7
    if is_message and len(out) > 8:
        out[8] = norm_body(out[8])
    if len(out) > ext + 1:
        out[ext + 1] = norm_disposition(out[ext + 1])
    return out


def norm_fetch(items):
    pairs = []
    for k in range(0, len(items) - 1, 2):
        name, value = items[k].upper(), items[k + 1]
        if name.startswith(b"X-"):
            continue
        if name == b"MODSEQ":
            value = [b"N"]
        elif name == b"FLAGS":
            value = sorted(value, key=lambda f: f.lower())
        elif name in BODY_KEYS:
            value = norm_body(value)
        pairs.append((name, value))
    pairs.sort(key=lambda p: p[0])
    return " ".join("%s %s" % (n.decode(), show(v)) for n, v in pairs)


CODE_RE = re.compile(rb"^(\[[^\]]*\])")


def norm_code(code):
    code = re.sub(rb"(?i)^\[(UIDVALIDITY|HIGHESTMODSEQ) \d+\]", rb"[\1 N]", code)
    code = re.sub(rb"(?i)^\[(APPENDUID|COPYUID) \d+ ", rb"[\1 V ", code)
    code = re.sub(rb"(?i)^\[CAPABILITY [^\]]*\]", b"[CAPABILITY ...]", code)
    return code.decode("utf-8", "backslashreplace")


def norm_status_text(status, text):
    m = CODE_RE.match(text)
    code = norm_code(m.group(1)) if m else ""
    return (status.decode() + " " + code).rstrip()


CHILD_ATTRS = {"\\haschildren", "\\hasnochildren"}
SPECIAL_USE_ATTRS = {"\\all", "\\archive", "\\drafts", "\\flagged", "\\junk", "\\sent",
                     "\\trash"}


def norm_line(line, tag=None, command=""):
    """norm_line - one server line in normalized form; None to drop it.
    COMMAND: the command text (for what depends on its options)."""
    extended_list = bool(re.match(r"(?i)^LIST (\(|.*\bRETURN\b)", command))
    try:
        fetch = check_response_line(line)
    except GrammarError as e:
        return "GRAMMAR-ERROR (%s): %r" % (e, line[:300])
    if tag is not None and line.startswith(tag + b" "):
        rest = line[len(tag) + 1:]
        status, _, text = rest.partition(b" ")
        return "TAGGED " + norm_status_text(status.upper(), text)
    if not line.startswith(b"* "):
        return "OTHER %r" % line[:300]
    body = line[2:]
    word, _, rest = body.partition(b" ")
    up = word.upper()
    if up in (b"CAPABILITY", b"ID", b"ENABLED", b"NAMESPACE"):
        return None
    if up in (b"OK", b"NO", b"BAD", b"BYE"):
        m = CODE_RE.match(rest)
        if not m:
            return None if up == b"OK" else "* " + up.decode()
        return "* " + norm_status_text(up, rest)
    if word.isdigit():
        what, _, _ = rest.partition(b" ")
        if what.upper() == b"FETCH":
            return "* %s FETCH (%s)" % (word.decode(), norm_fetch(fetch))
        return "* %s %s" % (word.decode(), what.upper().decode())
    if up in (b"LIST", b"LSUB"):
        values = parse_all(rest)
        attrs = sorted(a.decode().lower() for a in values[0])
        if extended_list:
            # RFC 5258 4 / RFC 6154 2: child and special-use attributes are
            # only required when their RETURN option was asked for
            asked = command.upper()
            attrs = [a for a in attrs
                     if not (a in CHILD_ATTRS and "CHILDREN" not in asked)
                     and not (a in SPECIAL_USE_ATTRS and "SPECIAL-USE" not in asked)]
        return "* %s (%s) %s %s" % (up.decode(), " ".join(attrs), show(values[1]),
                                    " ".join(show(v) for v in values[2:]))
    if up == b"STATUS":
        values = parse_all(rest)
        pairs = sorted(zip(values[1][0::2], values[1][1::2]))
        return "* STATUS %s (%s)" % (show(values[0]), " ".join(
            "%s %s" % (k.upper().decode(), v.decode()) for k, v in pairs))
    if up == b"FLAGS":
        values = parse_all(rest)
        return "* FLAGS (%s)" % " ".join(sorted((f.decode() for f in values[0]),
                                                key=str.lower))
    if up == b"SEARCH":
        text = re.sub(rb"\(MODSEQ \d+\)", b"(MODSEQ N)", body)
        return "* " + text.decode()
    if up == b"ESEARCH":
        # RFC 4731 3: the search-return-data items come in no fixed order
        values = parse_all(rest)
        head = [show(v) for v in values if isinstance(v, list)][:1]
        items = [v for v in values if not isinstance(v, list)]
        pairs = []
        k = 0
        if items and items[0].upper() == b"UID":
            head.append("UID")
            k = 1
        while k + 1 < len(items):
            name = items[k].upper()
            value = b"N" if name == b"MODSEQ" else items[k + 1]
            pairs.append("%s %s" % (name.decode(), show(value)))
            k += 2
        return "* ESEARCH " + " ".join(head + sorted(pairs))
    return "* " + re.sub(rb"MODSEQ \d+", b"MODSEQ N", body).decode("utf-8", "backslashreplace")


# --- running ---

class Side:
    def __init__(self, target, name):
        self.target = target
        self.name = name
        self.user, self.password = target.add_account(prefix="d")
        self.imap = RawImap(target)
        self.imap.login(self.user, self.password)

    def run(self, cmd):
        if isinstance(cmd, str):
            cmd = cmd.encode("utf-8")
        try:
            status, lines, tagged = self.imap.command(cmd, tag=b"D1")
        except (EOFError, OSError) as e:
            return ["CONNECTION LOST: %s" % e]
        out = []
        for line in lines + [tagged]:
            n = norm_line(line, tag=b"D1", command=cmd.decode("utf-8", "replace"))
            if n is not None:
                out.append(n)
        return order_free(cmd, out)


def expunged_originals(out):
    """expunged_originals - a run of "* n EXPUNGE" lines as the set of
    sequence numbers they removed, counted before the run: "5, 3, 1" and
    "1, 2, 3" both remove 1, 3 and 5 (RFC 3501 7.4.1 fixes no order)."""
    result, run = [], []

    def flush():
        if not run:
            return
        alive = list(range(1, max(run) + len(run) + 1))
        gone = []
        for n in run:
            gone.append(alive.pop(n - 1))
        result.append("* EXPUNGE (original numbers) %s" % " ".join(map(str, sorted(gone))))
        run.clear()

    for line in out:
        m = re.match(r"^\* (\d+) EXPUNGE$", line)
        if m:
            run.append(int(m.group(1)))
            continue
        flush()
        result.append(line)
    flush()
    return result


def order_free(cmd, out):
    """order_free - sort what has no defined order: the untagged responses of
    SELECT/EXAMINE (RFC 3501 6.3.1 lists them in no order) and runs of
    LIST/LSUB/STATUS lines."""
    # HIGHESTMODSEQ at SELECT: RFC 7162 3.1.2.1 has a server with persistent
    # mod-sequences send it always, Dovecot only after CONDSTORE is enabled
    out = [l for l in out if not l.startswith("* OK [HIGHESTMODSEQ ")]
    if re.match(rb"(?i)^(SELECT|EXAMINE) ", cmd):
        return sorted(out[:-1]) + out[-1:]
    # a server may announce keywords it has just learned (Dovecot does, even
    # for SEARCH KEYWORD); RFC 3501 7.2.6 allows but does not require it
    out = [l for l in out if not l.startswith(("* FLAGS ", "* OK [PERMANENTFLAGS "))]
    out = expunged_originals(out)
    result, run = [], []
    for line in out:
        if re.match(r"^\* (LIST|LSUB|STATUS) ", line):
            run.append(line)
            continue
        result += sorted(run)
        run = []
        result.append(line)
    return result + sorted(run)


def setup_mailboxes(side):
    for mb in ["Archive", "Archive/2024", "Archive/2024/Q1", "Archive/2023", "Work",
               "Work/Sub", "Inboxes", "Amazing Name"]:
        side.run("CREATE %s" % quote(mb).decode())
    side.run("SUBSCRIBE Archive/2024")
    for name, data, flags, date in CORPUS:
        d = date or INTERNALDATE
        cmd = b"APPEND INBOX (" + flags + b') "' + d + b'" {%d+}\r\n' % len(data) + data
        out = side.run(cmd)
        if not out or not out[-1].startswith("TAGGED OK"):
            print("%s: APPEND of %s failed: %r" % (side.name, name, out), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-k", help="run only commands containing this substring")
    ap.add_argument("-g", action="append",
                    help="run only this command group (repeatable): select, fetch, search, sort, "
                         "mailbox, errors, condstore, store-copy, after-expunge, empty-mailbox")
    ap.add_argument("-v", action="store_true", help="print identical answers too")
    args = ap.parse_args()

    mx = dovecot = None
    differences = 0
    try:
        mx = MxTarget()
        dovecot = DovecotTarget()
        a, b = Side(mx, "mx-imapd"), Side(dovecot, "dovecot")
        for side in (a, b):
            setup_mailboxes(side)
        groups = [("select", ["SELECT INBOX"]), ("fetch", fetch_commands()),
                  ("search", search_commands()), ("sort", sort_commands()),
                  ("mailbox", mailbox_commands()), ("errors", error_commands()),
                  ("condstore", condstore_commands()),
                  ("store-copy", ["SELECT INBOX"] + store_copy_commands()),
                  ("after-expunge", ["FETCH 1:* (UID FLAGS)", "UID FETCH 1:2 (FLAGS)",
                                     "SELECT Archive", "FETCH 1:* (UID FLAGS)",
                                     "SEARCH ALL", "CLOSE", "FETCH 1 FLAGS"]),
                  ("empty-mailbox", ["SELECT Work", "FETCH 1:* (FLAGS)", "FETCH * (FLAGS)",
                                     "UID FETCH 1:* (FLAGS)", "UID FETCH * (FLAGS)",
                                     "STORE 1:* +FLAGS (x)", "UID STORE 1:* +FLAGS (x)",
                                     "COPY 1:* Archive", "UID COPY 1:* Archive",
                                     "MOVE * Archive", "UID MOVE 1:* Archive",
                                     "SEARCH 1:*", "SEARCH ALL", "UID SEARCH 1:*",
                                     "SEARCH *", "SORT (DATE) UTF-8 ALL",
                                     "THREAD REFERENCES UTF-8 ALL", "UID EXPUNGE 1:*",
                                     "EXPUNGE", "CLOSE"])]
        for group, cmds in groups:
            if args.g and group not in args.g and group != "select":
                continue  # without the SELECT the rest is answered BAD
            for cmd in cmds:
                if args.k and args.k not in cmd:
                    if not cmd.startswith("SELECT"):
                        continue
                ra, rb_ = a.run(cmd), b.run(cmd)
                if ra == rb_:
                    if args.v:
                        print("== [%s] %s" % (group, cmd))
                    continue
                differences += 1
                print("=" * 78)
                print("[%s] %s" % (group, cmd))
                if cmd in JUDGED:
                    print("judged: " + JUDGED[cmd])
                for line in difflib.unified_diff(rb_, ra, "dovecot", "mx-imapd", lineterm="",
                                                 n=1):
                    print(line)
        print("\n%d command(s) answered differently" % differences)
    finally:
        for t in (mx, dovecot):
            if t is not None:
                try:
                    t.close()
                except Exception as e:  # a sanitizer report must still be seen
                    print("closing %s: %s" % (t.kind, e), file=sys.stderr)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())

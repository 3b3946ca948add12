"""test_imap_conformance - an RFC conformance audit of mx-imapd in the spirit of
an external conformance suite (Dovecot's imaptest checks the same kinds of
things): every response line is checked against the response grammar
(RFC 3501 section 9, RFC 9051 section 9, and the ABNF of the extensions),
and a per-session model of the selected mailbox (sequence number -> UID)
checks that untagged EXISTS / EXPUNGE / VANISHED / FETCH arrive only where
the RFCs allow them and keep the client's view consistent.  Two sessions on
one mailbox are the core of it: one changes the mailbox, the other must be
told at the allowed points and only there.

The expected results are what the RFCs say (section numbers at each test),
not what mx-imapd happens to do; MX_IMAP_TARGET=dovecot runs this file
against Debian's Dovecot as a self-check of the tests.  One server serves the
whole file (setUpModule) to keep it fast; each test has its own account.
Messages are put in place with APPEND so their bytes are known exactly.
"""

import datetime
import email.utils
import re
import unittest

from imap_testlib import RawImap, is_mx, quote, start_target

TARGET = None


def setUpModule():
    global TARGET
    TARGET = start_target()


def tearDownModule():
    if TARGET:
        TARGET.close()


# --- response grammar (RFC 3501 / RFC 9051 section 9) ---

class Str(bytes):
    """A string value (quoted or literal); atoms are plain bytes."""
    literal = False


class Literal8(Str):
    literal = True


ATOM_STOP = b" ()\r\n"
DATE_TIME_RE = re.compile(
    rb'^(?:[ 0-9])[0-9]-(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-[0-9]{4} '
    rb'[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}$')
TAG_RE = re.compile(rb"^[!#$&'*,./0-9:;<=>?@A-Z^_`a-z|}~\[-]+$")


class GrammarError(AssertionError):
    pass


def parse_value(buf, i):
    """parse_value - one value at BUF[I]: list, quoted string, literal,
    literal8, NIL (None) or atom (fetch-att names such as
    BODY[HEADER.FIELDS (FROM)]<0> are one atom).  Returns (value, next i)."""
    if i >= len(buf):
        raise GrammarError("value expected at end of %r" % buf[:200])
    c = buf[i:i + 1]
    if c == b"(":
        return parse_list(buf, i)
    if c == b'"':
        out = bytearray()
        i += 1
        while True:
            if i >= len(buf):
                raise GrammarError("unterminated quoted string in %r" % buf[:200])
            ch = buf[i]
            if ch in (0x0d, 0x0a):
                raise GrammarError("CR/LF inside a quoted string (RFC 3501 4.3): %r" % buf[:200])
            if ch == 0x5c:  # backslash: only \\ and \" are quoted-specials
                if buf[i + 1:i + 2] not in (b"\\", b'"'):
                    raise GrammarError("bad quoted-pair in %r" % buf[:200])
                out += buf[i + 1:i + 2]
                i += 2
                continue
            if ch == 0x22:
                return Str(bytes(out)), i + 1
            out.append(ch)
            i += 1
    m = re.compile(rb"(~?)\{(\d+)\}\r\n").match(buf, i)
    if m:
        n = int(m.group(2))
        data = buf[m.end():m.end() + n]
        if len(data) != n:
            raise GrammarError("short literal in %r" % buf[:200])
        value = Literal8(data) if m.group(1) else Str(data)
        if not m.group(1):
            value.literal = True
            if b"\0" in data:
                raise GrammarError("NUL in a literal: only literal8 may carry it (RFC 3516 4.3)")
        return value, m.end() + n
    start = i
    depth = 0
    while i < len(buf):
        ch = buf[i:i + 1]
        if ch == b"[":
            depth += 1
        elif ch == b"]":
            depth -= 1
        elif depth == 0 and ch in (b" ", b")", b"("):
            break
        elif ch in (b"\r", b"\n", b"{", b'"') and depth == 0:
            raise GrammarError("bad atom character %r in %r" % (ch, buf[start:start + 100]))
        i += 1
    atom = buf[start:i]
    if not atom:
        raise GrammarError("empty atom at %d in %r" % (start, buf[:200]))
    if atom.upper() == b"NIL":
        return None, i
    return atom, i


def parse_list(buf, i):
    assert buf[i:i + 1] == b"("
    i += 1
    out = []
    if buf[i:i + 1] == b")":
        return out, i + 1
    while True:
        value, i = parse_value(buf, i)
        out.append(value)
        c = buf[i:i + 1]
        if c == b")":
            return out, i + 1
        if c == b"(" and isinstance(value, list):
            continue  # 1*body and 1*address: lists follow each other without SP
        if c != b" ":
            raise GrammarError("expected SP or ')' at %d in %r" % (i, buf[:300]))
        i += 1
        if buf[i:i + 1] in (b" ", b")"):
            raise GrammarError("double SP or SP before ')' in %r" % buf[:300])


def parse_all(buf):
    """parse_all - BUF as values separated by single SPs."""
    out, i = [], 0
    while i < len(buf):
        value, i = parse_value(buf, i)
        out.append(value)
        if i < len(buf):
            if buf[i:i + 1] != b" ":
                raise GrammarError("expected SP at %d in %r" % (i, buf[:300]))
            i += 1
            if i == len(buf):
                raise GrammarError("trailing SP in %r" % buf[:300])
    return out


def is_nstring(v):
    return v is None or isinstance(v, Str)


def check_flag_list(flags, line):
    if not isinstance(flags, list):
        raise GrammarError("flag list expected: %r" % line)
    for f in flags:
        if isinstance(f, Str) or f is None or isinstance(f, list):
            raise GrammarError("a flag must be an atom: %r" % line)
        if f.startswith(b"\\") and not re.match(rb"^\\([A-Za-z0-9$_.-]+|\*)$", f):
            raise GrammarError("bad system flag %r in %r" % (f, line))
    lowered = [f.lower() for f in flags]
    if len(set(lowered)) != len(lowered):
        raise GrammarError("a flag listed twice: %r" % line)


def check_address_list(v, line):
    """env-from etc.: "(" 1*address ")" / nil (RFC 3501 9)."""
    if v is None:
        return
    if not isinstance(v, list) or not v:
        raise GrammarError("address list must be NIL or non-empty: %r" % line)
    for a in v:
        if not (isinstance(a, list) and len(a) == 4 and all(is_nstring(x) for x in a)):
            raise GrammarError("bad address %r in %r" % (a, line))


def check_envelope(env, line):
    if not (isinstance(env, list) and len(env) == 10):
        raise GrammarError("ENVELOPE needs 10 fields: %r" % line)
    for k in (0, 1, 8, 9):
        if not is_nstring(env[k]):
            raise GrammarError("ENVELOPE field %d must be nstring: %r" % (k, line))
    for k in range(2, 8):
        check_address_list(env[k], line)


def check_body(body, extensible, line):
    """check_body - body / body-type-1part / body-type-mpart (RFC 3501 9)."""
    if not isinstance(body, list) or not body:
        raise GrammarError("body must be a non-empty list: %r" % line)
    if isinstance(body[0], list):  # multipart
        n = 0
        while n < len(body) and isinstance(body[n], list):
            check_body(body[n], extensible, line)
            n += 1
        rest = body[n:]
        if not rest or not isinstance(rest[0], Str):
            raise GrammarError("multipart subtype must be a string: %r" % line)
        if not extensible and len(rest) != 1:
            raise GrammarError("BODY (non-extensible) carries multipart extension data: %r" % line)
        if len(rest) > 1:
            check_params(rest[1], line)
        return
    if len(body) < 7:
        raise GrammarError("body-type-1part needs 7 body-fields: %r" % line)
    mtype, subtype, params, bid, desc, enc, size = body[:7]
    if not (isinstance(mtype, Str) and isinstance(subtype, Str)):
        raise GrammarError("media type/subtype must be strings: %r" % line)
    check_params(params, line)
    if not (is_nstring(bid) and is_nstring(desc) and isinstance(enc, Str)):
        raise GrammarError("body-fld-id/desc/enc: %r" % line)
    if not (isinstance(size, bytes) and not isinstance(size, Str) and size.isdigit()):
        raise GrammarError("body-fld-octets must be a number: %r" % line)
    rest = body[7:]
    if mtype.upper() == b"MESSAGE" and subtype.upper() in (b"RFC822", b"GLOBAL"):
        if len(rest) < 3:
            raise GrammarError("message/rfc822 needs envelope, body, lines: %r" % line)
        check_envelope(rest[0], line)
        check_body(rest[1], extensible, line)
        if not rest[2].isdigit():
            raise GrammarError("body-fld-lines must be a number: %r" % line)
        rest = rest[3:]
    elif mtype.upper() == b"TEXT":
        if not rest or isinstance(rest[0], Str) or not rest[0].isdigit():
            raise GrammarError("text part needs body-fld-lines: %r" % line)
        rest = rest[1:]
    if not extensible and rest:
        raise GrammarError("BODY (non-extensible) carries extension data: %r" % line)


def check_params(params, line):
    if params is None:
        return
    if not isinstance(params, list) or not params or len(params) % 2:
        raise GrammarError("body-fld-param must be NIL or pairs of strings: %r" % line)
    if not all(isinstance(p, Str) for p in params):
        raise GrammarError("body-fld-param values must be strings: %r" % line)


def check_fetch(items, line):
    """msg-att (RFC 3501 / 9051 9, RFC 3516, RFC 7162)."""
    if not isinstance(items, list) or not items or len(items) % 2:
        raise GrammarError("FETCH needs a non-empty list of name/value pairs: %r" % line)
    names = []
    for k in range(0, len(items), 2):
        name, value = items[k], items[k + 1]
        if isinstance(name, Str) or name is None or isinstance(name, list):
            raise GrammarError("fetch item name must be an atom: %r" % line)
        up = name.upper()
        names.append(up)
        if up == b"FLAGS":
            check_flag_list(value, line)
        elif up == b"UID":
            if not (isinstance(value, bytes) and value.isdigit() and int(value) > 0):
                raise GrammarError("UID must be nz-number: %r" % line)
        elif up == b"RFC822.SIZE":
            if not value.isdigit():
                raise GrammarError("RFC822.SIZE must be a number: %r" % line)
        elif up == b"INTERNALDATE":
            if not isinstance(value, Str) or not DATE_TIME_RE.match(value):
                raise GrammarError("INTERNALDATE must be a quoted date-time: %r" % line)
        elif up == b"ENVELOPE":
            check_envelope(value, line)
        elif up in (b"BODY", b"BODYSTRUCTURE"):
            check_body(value, up == b"BODYSTRUCTURE", line)
        elif up == b"MODSEQ":
            if not (isinstance(value, list) and len(value) == 1 and value[0].isdigit()):
                raise GrammarError("MODSEQ must be (number): %r" % line)
        elif up.startswith(b"BODY[") or up in (b"RFC822", b"RFC822.HEADER", b"RFC822.TEXT"):
            if not is_nstring(value) or isinstance(value, Literal8):
                raise GrammarError("%s must be an nstring: %r" % (name, line))
            if up.startswith(b"BODY[") and not re.match(rb"^BODY\[[^\]]*\](<\d+>)?$", up):
                raise GrammarError("bad section in %r" % line)
        elif up.startswith(b"BINARY.SIZE["):
            if not value.isdigit():
                raise GrammarError("BINARY.SIZE must be a number: %r" % line)
        elif up.startswith(b"BINARY["):
            if not is_nstring(value):
                raise GrammarError("BINARY must be nstring / literal8: %r" % line)
            if not re.match(rb"^BINARY\[[0-9.]*\](<\d+>)?$", up):
                raise GrammarError("bad section-binary in %r" % line)
    if len(set(names)) != len(names):
        raise GrammarError("a FETCH item twice in one response: %r" % line)


def check_resp_text(rest, line):
    """resp-text = ["[" resp-text-code "]" SP] text."""
    if rest.startswith(b"["):
        end = rest.find(b"]")
        if end < 0:
            raise GrammarError("unterminated response code: %r" % line)
        after = rest[end + 1:]
        if after and not after.startswith(b" "):
            raise GrammarError("response code not followed by SP: %r" % line)


UNTAGGED_KEYWORDS = {b"CAPABILITY", b"FLAGS", b"LIST", b"LSUB", b"SEARCH", b"ESEARCH", b"STATUS",
                     b"ENABLED", b"VANISHED", b"NAMESPACE", b"ID", b"QUOTA", b"QUOTAROOT",
                     b"SORT", b"THREAD"}


def check_response_line(line):
    """check_response_line - one server line (literals inlined) against the
    response grammar; returns the parsed untagged data or None."""
    if line.startswith(b"+"):
        if not (line == b"+" or line.startswith(b"+ ")):
            raise GrammarError("continue-req must be '+' SP ...: %r" % line)
        return None
    if not line.startswith(b"* "):
        tag, _, rest = line.partition(b" ")
        if not TAG_RE.match(tag) or b"+" in tag:
            raise GrammarError("bad tag in %r" % line)
        status, _, text = rest.partition(b" ")
        if status.upper() not in (b"OK", b"NO", b"BAD"):
            raise GrammarError("tagged response must be OK/NO/BAD: %r" % line)
        check_resp_text(text, line)
        return None
    body = line[2:]
    word, _, rest = body.partition(b" ")
    up = word.upper()
    if up in (b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH"):
        check_resp_text(rest, line)
        return None
    if word.isdigit():
        what, _, data = rest.partition(b" ")
        what = what.upper()
        if what in (b"EXISTS", b"RECENT"):
            if data:
                raise GrammarError("junk after %s: %r" % (what, line))
        elif what == b"EXPUNGE":
            if data or int(word) == 0:
                raise GrammarError("EXPUNGE takes one nz-number: %r" % line)
        elif what == b"FETCH":
            if int(word) == 0:
                raise GrammarError("FETCH of message 0: %r" % line)
            value, end = parse_value(data, 0)
            if end != len(data):
                raise GrammarError("junk after FETCH list: %r" % line)
            check_fetch(value, line)
            return value
        else:
            raise GrammarError("unknown numeric response: %r" % line)
        return None
    if up not in UNTAGGED_KEYWORDS:
        raise GrammarError("unknown untagged response: %r" % line)
    if up == b"SEARCH":
        m = re.match(rb"^(?: [1-9][0-9]*)*(?: \(MODSEQ [1-9][0-9]*\))?$", body[6:])
        if not m:
            raise GrammarError("SEARCH response must be *(SP nz-number) [SP (MODSEQ n)]: %r" % line)
    elif up in (b"LIST", b"LSUB"):
        values = parse_all(rest)
        if len(values) < 3:
            raise GrammarError("%s needs attributes, delimiter, name: %r" % (up, line))
        check_flag_list(values[0], line)
        if values[1] is not None and not (isinstance(values[1], Str) and len(values[1]) == 1):
            raise GrammarError("hierarchy delimiter must be a quoted char or NIL: %r" % line)
    elif up == b"STATUS":
        values = parse_all(rest)
        if len(values) != 2 or not isinstance(values[1], list) or len(values[1]) % 2:
            raise GrammarError("STATUS mailbox (att value ...): %r" % line)
        for k in range(1, len(values[1]), 2):
            if not values[1][k].isdigit():
                raise GrammarError("STATUS values are numbers: %r" % line)
    elif up == b"FLAGS":
        values = parse_all(rest)
        if len(values) != 1:
            raise GrammarError("FLAGS takes one flag list: %r" % line)
        check_flag_list(values[0], line)
    return None


# --- a client that checks every line and models the selected mailbox ---

class Session(RawImap):
    """RawImap plus: every line checked against the grammar; the selected
    mailbox's sequence -> UID map kept from EXISTS / EXPUNGE / VANISHED /
    FETCH, with the RFC 3501 7.4.1 rules checked as lines arrive."""

    NO_EXPUNGE_COMMANDS = (b"FETCH", b"STORE", b"SEARCH")

    def __init__(self, target, name="s"):
        self.name = name
        self.view = None  # list of UIDs (None: not yet known) when selected
        self.current = b""
        self.qresync = False
        super().__init__(target)
        check_response_line(self.greeting)

    def fail(self, why, line):
        raise AssertionError("[%s, during %r] %s: %r" % (self.name, self.current[:120], why, line))

    def read_line(self):
        line = super().read_line()
        try:
            fetch = check_response_line(line)
        except GrammarError as e:
            raise AssertionError("[%s, during %r] grammar: %s" % (self.name, self.current[:120], e))
        self._track(line, fetch)
        return line

    def _track(self, line, fetch):
        if self.view is None:
            return
        m = re.match(rb"^\* (\d+) (EXISTS|EXPUNGE|FETCH)", line, re.I)
        verb = self.current.split(b" ", 1)[0].upper()
        if m:
            n, what = int(m.group(1)), m.group(2).upper()
            if what == b"EXISTS":
                if n < len(self.view):
                    self.fail("EXISTS decreased the message count; only EXPUNGE may "
                              "(RFC 3501 7.3.1 / 7.4.1)", line)
                self.view += [None] * (n - len(self.view))
            elif what == b"EXPUNGE":
                if self.qresync:
                    self.fail("EXPUNGE sent after ENABLE QRESYNC; VANISHED must be used "
                              "(RFC 7162 3.2.10)", line)
                if verb in self.NO_EXPUNGE_COMMANDS:
                    self.fail("EXPUNGE during FETCH/STORE/SEARCH (RFC 3501 7.4.1)", line)
                if not 1 <= n <= len(self.view):
                    self.fail("EXPUNGE of a sequence number the client does not know "
                              "(RFC 3501 7.4.1)", line)
                del self.view[n - 1]
            else:
                if not 1 <= n <= len(self.view):
                    self.fail("FETCH for a message number beyond the last EXISTS "
                              "(RFC 3501 7.4.2)", line)
                uid = fetch_item(fetch, b"UID")
                if uid is not None:
                    known = self.view[n - 1]
                    if known is not None and known != int(uid):
                        self.fail("FETCH gives message %d UID %s, the client's view says %d"
                                  % (n, uid.decode(), known), line)
                    self.view[n - 1] = int(uid)
            return
        m = re.match(rb"^\* VANISHED (\(EARLIER\) )?([0-9:,]+)$", line, re.I)
        if m and not m.group(1):
            if verb in self.NO_EXPUNGE_COMMANDS:
                self.fail("VANISHED during FETCH/STORE/SEARCH (RFC 7162 3.2.10, RFC 3501 7.4.1)",
                          line)
            gone = parse_set(m.group(2))
            self.view = [u for u in self.view if u is None or u not in gone]

    def command(self, cmd, check=False, tag=None):
        if isinstance(cmd, str):
            cmd = cmd.encode()
        self.current = cmd
        return super().command(cmd, check=check, tag=tag)

    def ok(self, cmd):
        """ok - CMD must be answered OK; returns (untagged lines, tagged line)."""
        status, lines, line = self.command(cmd)
        if status != b"OK":
            raise AssertionError("[%s] %r -> %r (untagged: %r)" % (self.name, cmd[:200], line,
                                                                   lines[-5:]))
        return lines, line

    def select(self, mailbox=b"INBOX", verb=b"SELECT", extra=b""):
        """select - SELECT/EXAMINE and learn every UID (FETCH 1:* (UID))."""
        self.view = None
        lines, tagged = self.ok(b"%s %s%s" % (verb, mailbox, extra))
        exists = [int(m.group(1)) for l in lines
                  for m in [re.match(rb"^\* (\d+) EXISTS$", l, re.I)] if m]
        if len(exists) != 1:
            raise AssertionError("SELECT must send exactly one EXISTS (RFC 3501 6.3.1): %r" % lines)
        self.view = [None] * exists[0]
        if exists[0]:
            self.ok(b"FETCH 1:* (UID)")
        return lines, tagged

    def uids(self):
        """uids - the mailbox as the server sees it now (UID SEARCH ALL)."""
        lines, _ = self.ok(b"UID SEARCH ALL")
        return sorted(search_result(lines))

    def append(self, message, mailbox=b"INBOX", flags=b"", date=b""):
        """append - APPEND with a LITERAL+ literal; returns the tagged line."""
        args = b""
        if flags:
            args += b" (" + flags + b")"
        if date:
            args += b' "' + date + b'"'
        _, tagged = self.ok(b"APPEND %s%s {%d+}\r\n%s" % (mailbox, args, len(message), message))
        return tagged

    def logout(self):
        try:
            self.command(b"LOGOUT")
        except (EOFError, OSError):
            pass
        self.close()


def fetch_item(items, name):
    if not items:
        return None
    for k in range(0, len(items) - 1, 2):
        if items[k].upper() == name.upper():
            return items[k + 1]
    return None


def fetches(lines):
    """fetches - [(seq, parsed msg-att list)] of the FETCH lines among LINES."""
    out = []
    for line in lines:
        m = re.match(rb"^\* (\d+) FETCH (.*)$", line, re.S | re.I)
        if m:
            out.append((int(m.group(1)), parse_value(m.group(2), 0)[0]))
    return out


def fetch_of(lines, seq, name):
    """fetch_of - the value of item NAME for message SEQ among the FETCH lines."""
    for s, items in fetches(lines):
        if s == seq:
            v = fetch_item(items, name)
            if v is not None:
                return v
    return None


def flags_of(lines, seq):
    """flags_of - the FLAGS of SEQ as a set of lower-cased atoms, without
    \\Recent (session-dependent); None if no FLAGS for SEQ was sent."""
    v = fetch_of(lines, seq, b"FLAGS")
    if v is None:
        return None
    return {f.lower() for f in v} - {b"\\recent"}


def search_result(lines):
    out = []
    for line in lines:
        if re.match(rb"^\* SEARCH\b", line, re.I):
            out += [int(x) for x in re.sub(rb"\(MODSEQ \d+\)", b"", line[8:]).split()]
    return out


def parse_set(text):
    out = set()
    for part in text.split(b","):
        if b":" in part:
            a, b = (int(x) for x in part.split(b":"))
            out.update(range(min(a, b), max(a, b) + 1))
        else:
            out.add(int(part))
    return out


def code_of(line, name):
    """code_of - the arguments of response code [NAME ...] in LINE, or None."""
    m = re.search(rb"\[" + name + rb"(?: ([^\]]*))?\]", line, re.I)
    if not m:
        return None
    return m.group(1) or b""


def untagged_with(lines, pattern):
    return [l for l in lines if re.search(pattern, l, re.I)]


# --- messages (exact bytes; CRLF) ---

def msg(subject, body=b"body\r\n", extra=b"", msgid=None, sender=b"User One <user1@example.org>"):
    msgid = msgid or email.utils.make_msgid(domain="conformance.test").encode()
    return (b"From: " + sender + b"\r\n"
            b"To: Someone <rcpt@example.test>\r\n"
            b"Subject: " + subject + b"\r\n"
            b"Date: Sat, 24 Mar 2007 23:00:00 +0200\r\n"
            b"Message-ID: " + msgid + b"\r\n" + extra +
            b"\r\n" + body)


# A nested message as in RFC 2046 examples: a folded boundary parameter, a
# prologue and epilogue, a text part, a message/rfc822 part holding a
# multipart/alternative.  Offsets below are computed from these pieces.
NESTED_SUB_HEADER = (b"From: sub@example.org\r\n"
                     b"Date: Sun, 12 Aug 2012 12:34:56 +0300\r\n"
                     b"Subject: submsg\r\n"
                     b"Content-Type: multipart/alternative; boundary=\"sub1\"\r\n"
                     b"\r\n")
NESTED_SUB_TEXT = (b"Sub MIME prologue\r\n"
                   b"--sub1\r\n"
                   b"Content-Type: text/html\r\n"
                   b"\r\n"
                   b"<p>Hello world</p>\r\n"
                   b"\r\n"
                   b"--sub1\r\n"
                   b"Content-Type: text/plain\r\n"
                   b"\r\n"
                   b"Hello another world\r\n"
                   b"\r\n"
                   b"--sub1--\r\n"
                   b"Sub MIME epilogue\r\n")
NESTED_HEADER = (b"From: user@example.org\r\n"
                 b"Date: Sat, 24 Mar 2007 23:00:00 +0200\r\n"
                 b"Subject: nested\r\n"
                 b"Mime-Version: 1.0\r\n"
                 b"Content-Type: multipart/mixed; boundary=\"foo\r\n bar\"\r\n"
                 b"\r\n")
NESTED_TEXT = (b"Root MIME prologue\r\n"
               b"\r\n"
               b"--foo bar\r\n"
               b"Content-Type: text/x-myown; charset=us-ascii\r\n"
               b"\r\n"
               b"hello\r\n"
               b"\r\n"
               b"--foo bar\r\n"
               b"Content-Type: message/rfc822\r\n"
               b"\r\n" + NESTED_SUB_HEADER + NESTED_SUB_TEXT +
               b"\r\n"
               b"--foo bar--\r\n"
               b"Root MIME epilogue\r\n")
NESTED = NESTED_HEADER + NESTED_TEXT

BINARY_MSG = (b"From: user@example.org\r\n"
              b"Subject: binary parts\r\n"
              b"MIME-Version: 1.0\r\n"
              b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
              b"\r\n"
              b"--b1\r\n"
              b"Content-Type: text/plain; charset=us-ascii\r\n"
              b"\r\n"
              b"plain seven bit\r\n"
              b"--b1\r\n"
              b"Content-Type: application/octet-stream\r\n"
              b"Content-Transfer-Encoding: base64\r\n"
              b"\r\n"
              b"AAECA2hlbGxvAP8=\r\n"
              b"--b1\r\n"
              b"Content-Type: text/plain; charset=utf-8\r\n"
              b"Content-Transfer-Encoding: quoted-printable\r\n"
              b"\r\n"
              b"caf=C3=A9 au=\r\n"
              b" lait\r\n"
              b"--b1--\r\n")
UNKNOWN_CTE_MSG = (b"From: user@example.org\r\n"
                   b"Subject: unknown encoding\r\n"
                   b"MIME-Version: 1.0\r\n"
                   b"Content-Type: application/octet-stream\r\n"
                   b"Content-Transfer-Encoding: x-unknown-cte\r\n"
                   b"\r\n"
                   b"whatever\r\n")
BINARY_PART2 = b"\x00\x01\x02\x03hello\x00\xff"
BINARY_PART3 = "café au lait".encode("utf-8")


class ConformanceCase(unittest.TestCase):

    def setUp(self):
        self.user, self.password = TARGET.add_account(prefix="c")

    def session(self, name="s", login=True):
        s = Session(TARGET, name=name)
        self.addCleanup(s.logout)
        if login:
            s.login(self.user, self.password)
        return s

    def populate(self, s, count, flags=None, mailbox=b"INBOX"):
        """populate - COUNT messages appended to MAILBOX through S (not
        selected there); returns their APPENDUID UIDs."""
        uids = []
        for i in range(1, count + 1):
            tagged = s.append(msg(b"message %d" % i, b"body%d%d\r\n" % (i, i)), mailbox=mailbox,
                              flags=(flags or {}).get(i, b""))
            code = code_of(tagged, b"APPENDUID")
            uids.append(int(code.split()[1]) if code else None)
        return uids


class TestSelect(ConformanceCase):
    """RFC 3501 6.3.1 / 6.3.2, RFC 9051 6.3.2, RFC 7162 3.2.11."""

    def test_select_required_responses(self):
        s = self.session()
        self.populate(s, 3, flags={1: b"\\Seen"})
        lines, tagged = s.select()
        text = b"\n".join(lines)
        self.assertEqual(len(untagged_with(lines, rb"^\* FLAGS \(")), 1, lines)
        self.assertIn(b"* 3 EXISTS", lines)
        self.assertEqual(len(untagged_with(lines, rb"^\* \d+ RECENT$")), 1,
                         "RECENT is required in IMAP4rev1 (RFC 3501 6.3.1): %r" % lines)
        self.assertRegex(text, rb"\* OK \[UIDVALIDITY [1-9][0-9]*\]")
        self.assertRegex(text, rb"\* OK \[PERMANENTFLAGS \([^)]*\)\]")
        uidnext = int(re.search(rb"\[UIDNEXT (\d+)\]", text).group(1))
        self.assertGreater(uidnext, max(s.view), "UIDNEXT must exceed every UID (RFC 3501 2.3.1.1)")
        self.assertIsNotNone(code_of(tagged, b"READ-WRITE"), tagged)
        # the first unseen message is number 2 (RFC 3501 6.3.1 OK [UNSEEN])
        self.assertRegex(text, rb"\* OK \[UNSEEN 2\]")

    def test_recent_belongs_to_one_session_and_examine_keeps_it(self):
        # RFC 3501 2.3.2 (\Recent: the first session to be notified) and
        # 6.3.2 (EXAMINE MUST NOT cause messages to lose \Recent)
        s1, s2 = self.session("s1"), self.session("s2")
        self.populate(s1, 2)
        lines, tagged = s1.select(verb=b"EXAMINE")
        self.assertIn(b"* 2 RECENT", lines)
        self.assertIsNotNone(code_of(tagged, b"READ-ONLY"), tagged)
        lines, _ = s2.select()
        self.assertIn(b"* 2 RECENT", lines, "EXAMINE must not have cleared \\Recent")
        lines, _ = s2.ok(b"FETCH 1:2 (FLAGS)")
        self.assertIn(b"\\recent", {f.lower() for f in fetch_of(lines, 1, b"FLAGS")})
        lines, _ = s2.ok(b"SEARCH RECENT")
        self.assertEqual(sorted(search_result(lines)), [1, 2])
        lines, _ = s1.select()
        self.assertIn(b"* 0 RECENT", lines, "\\Recent went to s2 already")
        lines, _ = s1.ok(b"SEARCH RECENT")
        self.assertEqual(search_result(lines), [])
        lines, _ = s1.ok(b"SEARCH OLD")
        self.assertEqual(sorted(search_result(lines)), [1, 2])

    def test_examine_is_read_only(self):
        s = self.session()
        self.populate(s, 1)
        s.select(verb=b"EXAMINE")
        # RFC 3501 6.3.2: no change to the permanent state, \Seen included
        lines, _ = s.ok(b"FETCH 1 (BODY[TEXT])")
        lines, _ = s.ok(b"FETCH 1 (FLAGS)")
        self.assertNotIn(b"\\seen", flags_of(lines, 1))
        # STORE: refused (NO), or answered without changing anything
        s.command(b"STORE 1 +FLAGS (\\Flagged)")
        lines, _ = s.ok(b"FETCH 1 (FLAGS)")
        self.assertEqual(flags_of(lines, 1), set(), "flags changed in a read-only mailbox")

    def test_failed_select_leaves_no_mailbox_selected(self):
        # RFC 3501 6.3.1: "If the client is permitted to modify the mailbox..."
        # and "...a failed SELECT ... no mailbox is selected"
        s = self.session()
        self.populate(s, 1)
        s.select()
        status, _, _ = s.command(b"SELECT no-such-mailbox-here")
        self.assertEqual(status, b"NO")
        s.view = None
        status, _, line = s.command(b"FETCH 1 (UID)")
        self.assertIn(status, (b"BAD", b"NO"), "FETCH after a failed SELECT: %r" % line)

    def test_closed_code_when_switching_mailboxes(self):
        # RFC 7162 3.2.11 (and RFC 9051 7.1): [CLOSED] once QRESYNC is enabled
        s = self.session()
        s.ok(b"CREATE other")
        s.ok(b"ENABLE QRESYNC")
        s.select()
        lines, _ = s.select(b"other")
        closed = [i for i, l in enumerate(lines) if code_of(l, b"CLOSED") is not None]
        self.assertEqual(len(closed), 1, "one OK [CLOSED] expected: %r" % lines)
        flags = [i for i, l in enumerate(lines) if l.upper().startswith(b"* FLAGS")]
        self.assertLess(closed[0], flags[0], "[CLOSED] comes before the new mailbox's data")


class TestTwoSessionsExpunge(ConformanceCase):
    """RFC 3501 7.4.1 / RFC 9051 7.5.1: EXPUNGE responses and the other
    session's view (the model in Session checks every line)."""

    def two(self, count=5):
        s1, s2 = self.session("s1"), self.session("s2")
        uids = self.populate(s1, count)
        s1.select()
        s2.select()
        self.assertEqual(s1.view, s2.view)
        return s1, s2, list(s1.view)

    def test_own_expunge_responses_are_consistent(self):
        s1, _, uids = self.two()
        s1.ok(b"STORE 1,3,5 +FLAGS.SILENT (\\Deleted)")
        lines, _ = s1.ok(b"EXPUNGE")
        self.assertEqual(len(untagged_with(lines, rb"^\* \d+ EXPUNGE$")), 3, lines)
        self.assertEqual(s1.view, [uids[1], uids[3]])
        self.assertEqual(s1.uids(), [uids[1], uids[3]])

    def test_other_session_told_at_noop_not_during_fetch_store_search(self):
        s1, s2, uids = self.two()
        s1.ok(b"STORE 1,3 +FLAGS.SILENT (\\Deleted)")
        s1.ok(b"EXPUNGE")
        # s2 still numbers 5 messages; none of these may report the expunge
        s2.ok(b"FETCH 2 (UID FLAGS)")
        lines, _ = s2.ok(b"STORE 4 +FLAGS (\\Flagged)")
        self.assertIn(b"\\flagged", flags_of(lines, 4), lines)
        s2.command(b"SEARCH ALL")
        self.assertEqual(len(s2.view), 5)
        lines, _ = s2.ok(b"NOOP")
        self.assertEqual(len(untagged_with(lines, rb"^\* \d+ EXPUNGE$")), 2, lines)
        self.assertEqual(s2.view, [uids[1], uids[3], uids[4]])
        lines, _ = s2.ok(b"FETCH 2 (FLAGS)")
        self.assertIn(b"\\flagged", flags_of(lines, 2), "message 4 became 2: %r" % lines)

    def test_uid_commands_keep_the_view_consistent(self):
        # UID FETCH / UID STORE may carry EXPUNGE (RFC 3501 7.4.1 note): the
        # model checks that sequence numbers and UIDs agree at every line
        s1, s2, uids = self.two(4)
        s1.ok(b"STORE 1,3 +FLAGS.SILENT (\\Deleted)")
        s1.ok(b"EXPUNGE")
        lines, _ = s2.ok(b"UID FETCH %d,%d (UID)" % (uids[1], uids[3]))
        got = {int(fetch_item(items, b"UID")) for _, items in fetches(lines)}
        self.assertEqual(got, {uids[1], uids[3]})
        lines, _ = s2.ok(b"UID STORE %d FLAGS (\\Seen)" % uids[3])
        seq = s2.view.index(uids[3]) + 1
        self.assertEqual(flags_of(lines, seq), {b"\\seen"}, lines)
        s2.ok(b"NOOP")
        self.assertEqual(s2.view, [uids[1], uids[3]])

    def test_expunge_then_append_seen_by_other_session(self):
        s1, s2, uids = self.two(3)
        s1.ok(b"STORE 1 +FLAGS.SILENT (\\Deleted)")
        s1.ok(b"EXPUNGE")
        tagged = s1.append(msg(b"late"))
        new_uid = int(code_of(tagged, b"APPENDUID").split()[1])
        lines, _ = s2.ok(b"NOOP")
        self.assertIn(b"* 1 EXPUNGE", lines)
        self.assertTrue(untagged_with(lines, rb"^\* 3 EXISTS$"), lines)
        s2.ok(b"FETCH 3 (UID)")
        self.assertEqual(s2.view, [uids[1], uids[2], new_uid])

    def test_fetch_store_of_message_expunged_elsewhere(self):
        # RFC 2180 4.1 / 4.2: FETCH or STORE of a message another session
        # expunged (not yet reported): the data, or NO; never BAD, never an
        # EXPUNGE in that answer (RFC 3501 7.4.1)
        s1, s2, uids = self.two(3)
        s1.ok(b"STORE 2 +FLAGS.SILENT (\\Deleted)")
        s1.ok(b"EXPUNGE")
        status, lines, line = s2.command(b"FETCH 2 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertIn(status, (b"OK", b"NO"), line)
        got = fetch_of(lines, 2, b"BODY[HEADER.FIELDS (SUBJECT)]")
        if got is not None:
            self.assertEqual(got, b"Subject: message 2\r\n\r\n", "if answered, with its data")
        status, lines, line = s2.command(b"STORE 2 +FLAGS (\\Flagged)")
        self.assertIn(status, (b"OK", b"NO"), line)
        lines, _ = s2.ok(b"NOOP")
        self.assertIn(b"* 2 EXPUNGE", lines)
        self.assertEqual(s2.view, [uids[0], uids[2]])
        lines, _ = s2.ok(b"FETCH 1:* (FLAGS)")
        self.assertEqual([flags_of(lines, 1), flags_of(lines, 2)], [set(), set()],
                         "the STORE on the expunged message touched no other message")

    def test_close_sends_no_expunge(self):
        # RFC 3501 6.4.2: CLOSE expunges silently
        s1, s2, uids = self.two(3)
        s1.ok(b"STORE 2 +FLAGS.SILENT (\\Deleted)")
        lines, _ = s1.ok(b"CLOSE")
        self.assertFalse(untagged_with(lines, rb"EXPUNGE"), lines)
        s1.view = None
        s2.ok(b"NOOP")
        self.assertEqual(s2.view, [uids[0], uids[2]])

    def test_uid_expunge_only_listed(self):
        # RFC 4315 2.1
        s1, _, uids = self.two(3)
        s1.ok(b"STORE 1:3 +FLAGS.SILENT (\\Deleted)")
        lines, _ = s1.ok(b"UID EXPUNGE %d" % uids[1])
        self.assertEqual(untagged_with(lines, rb"EXPUNGE"), [b"* 2 EXPUNGE"])
        self.assertEqual(s1.view, [uids[0], uids[2]])


class TestFlags(ConformanceCase):
    """RFC 3501 6.4.6 STORE, 2.3.2 flags, 7.2.6 FLAGS, 6.4.5 \\Seen."""

    def test_store_answers_with_the_full_flag_list(self):
        s = self.session()
        self.populate(s, 2, flags={1: b"\\Answered"})
        s.select()
        lines, _ = s.ok(b"STORE 1 +FLAGS (\\Flagged)")
        self.assertEqual(flags_of(lines, 1), {b"\\answered", b"\\flagged"})
        lines, _ = s.ok(b"STORE 1 -FLAGS (\\Answered)")
        self.assertEqual(flags_of(lines, 1), {b"\\flagged"})
        lines, _ = s.ok(b"STORE 1 FLAGS (\\Draft)")
        self.assertEqual(flags_of(lines, 1), {b"\\draft"})
        lines, _ = s.ok(b"STORE 2 FLAGS.SILENT (\\Seen)")
        self.assertEqual(fetches(lines), [],
                         ".SILENT: no FETCH for our own change (RFC 3501 6.4.6)")
        lines, _ = s.ok(b"FETCH 2 (FLAGS)")
        self.assertEqual(flags_of(lines, 2), {b"\\seen"})

    def test_other_session_sees_flag_changes(self):
        s1, s2 = self.session("s1"), self.session("s2")
        self.populate(s1, 4)
        s1.select()
        s2.select()
        lines, _ = s1.ok(b"STORE 1:3 FLAGS (\\Seen)")
        for n in (1, 2, 3):
            self.assertEqual(flags_of(lines, n), {b"\\seen"}, lines)
        lines, _ = s2.ok(b"NOOP")
        for n in (1, 2, 3):
            self.assertEqual(flags_of(lines, n), {b"\\seen"}, "s2 at NOOP: %r" % lines)
        self.assertIsNone(flags_of(lines, 4), "message 4 did not change: %r" % lines)

    def test_two_sessions_do_not_overwrite_each_other(self):
        s1, s2 = self.session("s1"), self.session("s2")
        self.populate(s1, 1, flags={1: b"\\Seen"})
        s1.select()
        s2.select()
        s1.ok(b"STORE 1 +FLAGS (\\Draft)")
        s2.ok(b"STORE 1 -FLAGS (\\Seen)")
        s1.ok(b"NOOP")
        s2.ok(b"NOOP")
        for s in (s1, s2):
            lines, _ = s.ok(b"FETCH 1 (FLAGS)")
            self.assertEqual(flags_of(lines, 1), {b"\\draft"}, "%s: %r" % (s.name, lines))

    def test_keywords(self):
        s1, s2 = self.session("s1"), self.session("s2")
        self.populate(s1, 2)
        lines, _ = s1.select()
        self.assertRegex(b"\n".join(lines), rb"PERMANENTFLAGS \([^)]*\\\*",
                         "\\* in PERMANENTFLAGS: new keywords may be created (RFC 3501 7.1)")
        s2.select()
        lines, _ = s1.ok(b"STORE 1,2 +FLAGS ($Hello Work_1)")
        self.assertEqual(flags_of(lines, 1), {b"$hello", b"work_1"})
        lines, _ = s1.ok(b"STORE 2 -FLAGS ($hello)")
        self.assertEqual(flags_of(lines, 2), {b"work_1"}, "keywords are case-insensitive")
        lines, _ = s2.ok(b"NOOP")
        self.assertEqual(flags_of(lines, 1), {b"$hello", b"work_1"}, lines)
        lines, _ = s2.ok(b"SEARCH KEYWORD $HELLO")
        self.assertEqual(search_result(lines), [1])
        lines, _ = s2.ok(b"SEARCH UNKEYWORD work_1")
        self.assertEqual(search_result(lines), [])
        # a keyword in use is applicable to the mailbox: FLAGS lists it
        # (RFC 3501 7.2.6 "the flags that are applicable for this mailbox")
        lines, _ = s2.select()
        flags = untagged_with(lines, rb"^\* FLAGS ")[0].lower()
        self.assertIn(b"$hello", flags)
        self.assertIn(b"work_1", flags)

    def seen_after(self, item):
        """seen_after - FETCH ITEM on a fresh unseen message; returns (the
        FETCH response lines, flags afterwards)."""
        s = self.session()
        s.append(BINARY_MSG)
        s.select()
        lines, _ = s.ok(b"FETCH 1 (" + item + b")")
        after, _ = s.ok(b"FETCH 1 (FLAGS)")
        return lines, flags_of(after, 1)

    def test_seen_is_set_by_body_rfc822_binary(self):
        # RFC 3501 6.4.5 (BODY[section], RFC822, RFC822.TEXT set \Seen),
        # RFC 3516 4.2 (BINARY[section] too)
        for item in (b"BODY[]", b"BODY[TEXT]", b"BODY[HEADER]", b"BODY[1]", b"RFC822",
                     b"RFC822.TEXT", b"BINARY[2]"):
            with self.subTest(item=item):
                lines, flags = self.seen_after(item)
                self.assertIn(b"\\seen", flags, "%s must set \\Seen" % item.decode())

    def test_seen_is_not_set_by_peek_and_header_items(self):
        for item in (b"BODY.PEEK[]", b"BODY.PEEK[TEXT]", b"RFC822.HEADER", b"RFC822.SIZE",
                     b"BINARY.PEEK[2]", b"BINARY.SIZE[2]", b"ENVELOPE", b"BODYSTRUCTURE"):
            with self.subTest(item=item):
                _, flags = self.seen_after(item)
                self.assertNotIn(b"\\seen", flags, "%s must not set \\Seen" % item.decode())


class TestFetchBody(ConformanceCase):
    """RFC 3501 6.4.5 / RFC 9051 6.4.5: sections, partials, macros."""

    def setUp(self):
        super().setUp()
        self.s = self.session()
        self.m1 = msg(b"s1", b"body1\r\n\r\n", extra=b"X-Folded: first\r\n second\r\n"
                      b"X-Twice: one\r\nX-Twice: two\r\n")
        self.m2 = msg(b"s2", b"body22\r\n")
        self.s.append(self.m1)
        self.s.append(self.m2)
        self.s.append(NESTED)
        self.s.select()

    def one(self, seq, item, name=None):
        lines, _ = self.s.ok(b"FETCH %d (%s)" % (seq, item))
        value = fetch_of(lines, seq, name or item.replace(b".PEEK", b""))
        self.assertIsNotNone(value, "no %s in %r" % (name or item, lines))
        return value

    def test_whole_message_is_byte_exact(self):
        self.assertEqual(self.one(1, b"BODY.PEEK[]", b"BODY[]"), self.m1)
        self.assertEqual(self.one(1, b"RFC822.SIZE"), b"%d" % len(self.m1))
        self.assertEqual(self.one(3, b"BODY.PEEK[]", b"BODY[]"), NESTED)
        self.assertEqual(self.one(3, b"RFC822.SIZE"), b"%d" % len(NESTED))
        header, text = self.m1.split(b"\r\n\r\n", 1)
        self.assertEqual(self.one(1, b"BODY.PEEK[HEADER]", b"BODY[HEADER]"), header + b"\r\n\r\n")
        self.assertEqual(self.one(1, b"RFC822.HEADER"), header + b"\r\n\r\n")
        self.assertEqual(self.one(1, b"BODY.PEEK[TEXT]", b"BODY[TEXT]"), text)
        self.assertEqual(self.one(2, b"RFC822"), self.m2)

    def test_partial(self):
        # RFC 3501 6.4.5: <origin.octets>, the response names only <origin>;
        # past the end: what is there, or the empty string
        cases = [(b"<0.3>", b"<0>", b"bod"), (b"<3.3>", b"<3>", b"y22"),
                 (b"<6.2>", b"<6>", b"\r\n"), (b"<7.5>", b"<7>", b"\n"),
                 (b"<8.1>", b"<8>", b""), (b"<100.3>", b"<100>", b"")]
        for req, resp, want in cases:
            with self.subTest(partial=req):
                got = self.one(2, b"BODY.PEEK[TEXT]" + req, b"BODY[TEXT]" + resp)
                self.assertEqual(got, want)
        self.assertEqual(self.one(2, b"BODY.PEEK[]<0.5>", b"BODY[]<0>"), self.m2[:5])
        self.assertEqual(self.one(3, b"BODY.PEEK[2.2]<6.7>", b"BODY[2.2]<6>"), b"another")

    def test_header_fields(self):
        got = self.one(1, b"BODY.PEEK[HEADER.FIELDS (from)]", b"BODY[HEADER.FIELDS (FROM)]")
        self.assertEqual(got, b"From: User One <user1@example.org>\r\n\r\n")
        got = self.one(1, b"BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]",
                       b"BODY[HEADER.FIELDS (SUBJECT FROM)]")
        self.assertEqual(got, b"From: User One <user1@example.org>\r\nSubject: s1\r\n\r\n")
        # every occurrence, folding kept (RFC 3501 6.4.5 HEADER.FIELDS)
        got = self.one(1, b"BODY.PEEK[HEADER.FIELDS (X-TWICE X-FOLDED)]",
                       b"BODY[HEADER.FIELDS (X-TWICE X-FOLDED)]")
        self.assertEqual(got, b"X-Folded: first\r\n second\r\nX-Twice: one\r\nX-Twice: two\r\n\r\n")
        # header-fld-name is an astring: quoted names work too (RFC 3501 9)
        lines, _ = self.s.ok(b'FETCH 1 (BODY.PEEK[HEADER.FIELDS ("Subject")])')
        values = [items[1] for _, items in fetches(lines)]
        self.assertEqual(values, [b"Subject: s1\r\n\r\n"], lines)
        got = self.one(1, b"BODY.PEEK[HEADER.FIELDS (X-NOT-THERE)]",
                       b"BODY[HEADER.FIELDS (X-NOT-THERE)]")
        self.assertEqual(got, b"\r\n", "no matching field: just the blank line")
        got = self.one(1, b"BODY.PEEK[HEADER.FIELDS.NOT (DATE MESSAGE-ID X-TWICE X-FOLDED TO)]",
                       b"BODY[HEADER.FIELDS.NOT (DATE MESSAGE-ID X-TWICE X-FOLDED TO)]")
        self.assertEqual(got, b"From: User One <user1@example.org>\r\nSubject: s1\r\n\r\n")

    def test_header_fields_of_message_without_body(self):
        # RFC 3501 6.4.5: "the blank line is included in all header fetches,
        # except in the case of a message which has no body and no blank
        # line" - HEADER.FIELDS.NOT must not invent one either.  (Dovecot
        # 2.3 adds it for HEADER.FIELDS but not .NOT; only .NOT is checked
        # so that the reference passes too.)
        header_only = b"From: a@example.org\r\nSubject: no body\r\nX-Drop: me\r\n"
        self.s.append(header_only)
        self.s.select()
        lines, _ = self.s.ok(b"FETCH 4 (BODY.PEEK[HEADER] BODY.PEEK[HEADER.FIELDS.NOT (X-DROP)])")
        self.assertEqual(fetch_of(lines, 4, b"BODY[HEADER]"), header_only)
        self.assertEqual(fetch_of(lines, 4, b"BODY[HEADER.FIELDS.NOT (X-DROP)]"),
                         b"From: a@example.org\r\nSubject: no body\r\n")

    def test_header_fields_of_a_part_that_is_no_message(self):
        # [n.HEADER...] is defined for message/rfc822 parts (RFC 9051 6.4.5);
        # on a text part whose [n.HEADER] is empty, [n.HEADER.FIELDS] must
        # not answer a blank line the header does not have
        lines, _ = self.s.ok(b"FETCH 3 (BODY.PEEK[1.HEADER] BODY.PEEK[1.HEADER.FIELDS (FROM)] "
                             b"BODY.PEEK[1.HEADER.FIELDS.NOT (FROM)])")
        header = fetch_of(lines, 3, b"BODY[1.HEADER]")
        self.assertEqual(header, b"", lines)
        self.assertEqual(fetch_of(lines, 3, b"BODY[1.HEADER.FIELDS (FROM)]"), header)
        self.assertEqual(fetch_of(lines, 3, b"BODY[1.HEADER.FIELDS.NOT (FROM)]"), header)
        # the encapsulated message's header keeps its blank line
        self.assertEqual(self.one(3, b"BODY.PEEK[2.HEADER.FIELDS.NOT (FROM DATE CONTENT-TYPE)]",
                                  b"BODY[2.HEADER.FIELDS.NOT (FROM DATE CONTENT-TYPE)]"),
                         b"Subject: submsg\r\n\r\n")

    def test_mime_sections_of_nested_message(self):
        part1 = b"hello\r\n"  # the CRLF before a boundary belongs to it (RFC 2046 5.1.1)
        self.assertEqual(self.one(3, b"BODY.PEEK[1]", b"BODY[1]"), part1)
        self.assertEqual(self.one(3, b"BODY.PEEK[1.MIME]", b"BODY[1.MIME]"),
                         b"Content-Type: text/x-myown; charset=us-ascii\r\n\r\n")
        self.assertEqual(self.one(3, b"BODY.PEEK[2]", b"BODY[2]"),
                         NESTED_SUB_HEADER + NESTED_SUB_TEXT)
        self.assertEqual(self.one(3, b"BODY.PEEK[2.MIME]", b"BODY[2.MIME]"),
                         b"Content-Type: message/rfc822\r\n\r\n")
        self.assertEqual(self.one(3, b"BODY.PEEK[2.HEADER]", b"BODY[2.HEADER]"), NESTED_SUB_HEADER)
        self.assertEqual(self.one(3, b"BODY.PEEK[2.TEXT]", b"BODY[2.TEXT]"), NESTED_SUB_TEXT)
        self.assertEqual(self.one(3, b"BODY.PEEK[2.HEADER.FIELDS (SUBJECT)]",
                                  b"BODY[2.HEADER.FIELDS (SUBJECT)]"), b"Subject: submsg\r\n\r\n")
        self.assertEqual(self.one(3, b"BODY.PEEK[2.1]", b"BODY[2.1]"), b"<p>Hello world</p>\r\n")
        self.assertEqual(self.one(3, b"BODY.PEEK[2.2]", b"BODY[2.2]"), b"Hello another world\r\n")
        self.assertEqual(self.one(3, b"BODY.PEEK[2.2.MIME]", b"BODY[2.2.MIME]"),
                         b"Content-Type: text/plain\r\n\r\n")
        # a non-multipart message has one part: [1] is its body (RFC 3501 6.4.5)
        self.assertEqual(self.one(2, b"BODY.PEEK[1]", b"BODY[1]"), b"body22\r\n")
        # a part that does not exist: empty string or NO, never BAD or a crash
        status, lines, line = self.s.command(b"FETCH 3 (BODY.PEEK[9])")
        self.assertIn(status, (b"OK", b"NO"), line)
        if status == b"OK":
            self.assertIn(fetch_of(lines, 3, b"BODY[9]"), (b"", None))

    def test_macros(self):
        # RFC 3501 6.4.5: ALL / FAST / FULL expand to exactly these items
        expect = {b"FAST": {b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE"},
                  b"ALL": {b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE"},
                  b"FULL": {b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE", b"BODY"}}
        for macro, names in expect.items():
            with self.subTest(macro=macro):
                lines, _ = self.s.ok(b"FETCH 1 " + macro)
                got = set()
                for _, items in fetches(lines):
                    got |= {items[k].upper() for k in range(0, len(items), 2)}
                self.assertEqual(got, names, lines)

    def test_uid_fetch_always_includes_uid(self):
        # RFC 3501 6.4.8 / RFC 9051 6.4.9
        uid = self.s.view[1]
        lines, _ = self.s.ok(b"UID FETCH %d (FLAGS)" % uid)
        self.assertEqual(fetch_of(lines, 2, b"UID"), b"%d" % uid, lines)
        lines, _ = self.s.ok(b"UID STORE %d +FLAGS (\\Answered)" % uid)
        self.assertEqual(fetch_of(lines, 2, b"UID"), b"%d" % uid,
                         "FETCH caused by UID STORE carries UID: %r" % lines)

    def test_sequence_sets(self):
        # RFC 3501 9 seq-range: n:m and m:n are the same; * is the last
        for cmd, want in ((b"FETCH 3:1 (UID)", [1, 2, 3]), (b"FETCH *:2 (UID)", [2, 3]),
                          (b"FETCH 1,* (UID)", [1, 3]), (b"FETCH * (UID)", [3])):
            lines, _ = self.s.ok(cmd)
            self.assertEqual(sorted(s for s, _ in fetches(lines)), want, cmd)
        # a UID range n:* always includes the last message (RFC 3501 6.4.8)
        last = self.s.view[-1]
        lines, _ = self.s.ok(b"UID FETCH %d:* (UID)" % (last + 100))
        self.assertEqual([s for s, _ in fetches(lines)], [3])
        # UIDs that do not exist are ignored, not an error (RFC 3501 6.4.8)
        lines, _ = self.s.ok(b"UID FETCH %d,%d (UID)" % (last + 100, last + 101))
        self.assertEqual(fetches(lines), [])

    def test_internaldate_from_append(self):
        s = self.session("s2")
        s.append(msg(b"dated"), date=b" 5-Mar-2021 14:07:09 +0100")
        s.select()
        got = self.date_of(s, len(s.view))
        want = datetime.datetime(2021, 3, 5, 13, 7, 9, tzinfo=datetime.timezone.utc)
        self.assertEqual(got, want, "INTERNALDATE is the APPEND date-time (RFC 3501 6.3.11)")
        status, _, line = s.command(b'APPEND INBOX "31-Foo-2021 00:00:00 +0000" {5+}\r\nab\r\n\r\n')
        self.assertEqual(status, b"BAD", "an invalid date-time is a syntax error: %r" % line)

    @staticmethod
    def date_of(s, seq):
        lines, _ = s.ok(b"FETCH %d (INTERNALDATE)" % seq)
        value = fetch_of(lines, seq, b"INTERNALDATE").decode()
        return datetime.datetime.strptime(value.strip(), "%d-%b-%Y %H:%M:%S %z").astimezone(
            datetime.timezone.utc)


class TestEnvelopeAndStructure(ConformanceCase):
    """RFC 3501 7.4.2 ENVELOPE / BODY / BODYSTRUCTURE."""

    def fetch(self, message, item):
        s = self.session()
        s.append(message)
        s.select()
        lines, _ = s.ok(b"FETCH 1 (%s)" % item)
        return fetch_of(lines, 1, item)

    def test_envelope_all_fields(self):
        m = (b"Message-ID: <msg@id>\r\nIn-Reply-To: <reply@to.id>\r\n"
             b"Date: Sat, 01 Feb 2007 01:02:03 +0200\r\nSubject: subject \"quoted\" \\ header\r\n"
             b"From: From Real <fromuser@fromdomain.org>\r\nTo: To Real <touser@todomain.org>\r\n"
             b"Cc: Cc Real <ccuser@ccdomain.org>\r\nBcc: Bcc Real <bccuser@bccdomain.org>\r\n"
             b"Sender: Sender Real <senderuser@senderdomain.org>\r\n"
             b"Reply-To: ReplyTo Real <replytouser@replytodomain.org>\r\n\r\nbody\r\n")
        env = self.fetch(m, b"ENVELOPE")
        self.assertEqual(env, [b"Sat, 01 Feb 2007 01:02:03 +0200", b'subject "quoted" \\ header',
                               [[b"From Real", None, b"fromuser", b"fromdomain.org"]],
                               [[b"Sender Real", None, b"senderuser", b"senderdomain.org"]],
                               [[b"ReplyTo Real", None, b"replytouser", b"replytodomain.org"]],
                               [[b"To Real", None, b"touser", b"todomain.org"]],
                               [[b"Cc Real", None, b"ccuser", b"ccdomain.org"]],
                               [[b"Bcc Real", None, b"bccuser", b"bccdomain.org"]],
                               b"<reply@to.id>", b"<msg@id>"])

    def test_envelope_defaults_groups_routes(self):
        # Sender / Reply-To absent or empty: the From value (RFC 3501 7.4.2);
        # groups as (NIL NIL "name" NIL) ... (NIL NIL NIL NIL); a route as adl
        m = (b"Date: Sat, 01 Feb 2007 01:02:03 +0200\r\nFrom: <@route.example:user@domain>\r\n"
             b"Sender: \r\n"
             b"To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\r\n\r\nbody\r\n")
        env = self.fetch(m, b"ENVELOPE")
        route = [[None, b"@route.example", b"user", b"domain"]]
        self.assertIsNone(env[1], "no Subject: NIL")
        self.assertEqual(env[2], route)
        self.assertEqual(env[3], route, "empty Sender: the From value")
        self.assertEqual(env[4], route, "absent Reply-To: the From value")
        self.assertEqual(env[5], [[None, None, b"group", None], [None, None, b"g1", b"d1.org"],
                                  [None, None, b"g2", b"d2.org"], [None, None, None, None],
                                  [None, None, b"group2", None], [None, None, b"g3", b"d3.org"],
                                  [None, None, None, None]])
        self.assertEqual(env[6:], [None, None, None, None])

    def test_envelope_encoded_words_are_not_decoded(self):
        m = msg(b"=?utf-8?q?caf=C3=A9?=", sender=b"=?utf-8?q?J=C3=B6rg?= <j@example.org>")
        env = self.fetch(m, b"ENVELOPE")
        self.assertEqual(env[1], b"=?utf-8?q?caf=C3=A9?=")
        self.assertEqual(env[2], [[b"=?utf-8?q?J=C3=B6rg?=", None, b"j", b"example.org"]])

    def test_bodystructure_single_part_defaults(self):
        # no Content-Type: text/plain; charset=us-ascii, 7BIT (RFC 2045 5.2)
        body = b"line one\r\nline two\r\n"
        bs = self.fetch(b"From: a@example.org\r\nSubject: plain\r\n\r\n" + body, b"BODYSTRUCTURE")
        self.assertEqual([x.upper() if isinstance(x, bytes) else x for x in bs[:2]],
                         [b"TEXT", b"PLAIN"])
        self.assertEqual([p.lower() for p in bs[2]], [b"charset", b"us-ascii"])
        self.assertEqual(bs[3:5], [None, None])
        self.assertEqual(bs[5].upper(), b"7BIT")
        self.assertEqual(bs[6:8], [b"%d" % len(body), b"2"], "octets and lines of the body")

    def test_bodystructure_nested(self):
        bs = self.fetch(NESTED, b"BODYSTRUCTURE")
        part1, part2, subtype = bs[0], bs[1], bs[2]
        self.assertEqual(subtype.upper(), b"MIXED")
        self.assertEqual([p.lower() for p in bs[3][:2]], [b"boundary", b"foo bar"],
                         "the folded parameter, unfolded (RFC 5322 2.2.3)")
        self.assertEqual([part1[0].upper(), part1[1].upper()], [b"TEXT", b"X-MYOWN"])
        self.assertEqual(part1[6:8], [b"7", b"1"])
        self.assertEqual([part2[0].upper(), part2[1].upper()], [b"MESSAGE", b"RFC822"])
        inner = NESTED_SUB_HEADER + NESTED_SUB_TEXT
        self.assertEqual(part2[6], b"%d" % len(inner))
        self.assertEqual(part2[7][1], b"submsg", "envelope of the enclosed message")
        alternative = part2[8]
        subtypes = [x for x in alternative if isinstance(x, Str)]
        self.assertEqual(subtypes[0].upper(), b"ALTERNATIVE")
        self.assertEqual(part2[9], b"%d" % inner.count(b"\r\n"), "body-fld-lines of message/rfc822")
        body = self.fetch(NESTED, b"BODY")
        self.assertEqual(len(body), 3, "BODY: two parts and the subtype, no extension data")


class TestLiterals(ConformanceCase):
    """RFC 3501 4.3 / 7.5 (continuation), RFC 7888 LITERAL+."""

    def test_synchronizing_literal_gets_continuation(self):
        s = self.session()
        m = msg(b"sync literal")
        tag = s.next_tag()
        s.send(b"%s APPEND INBOX (\\Flagged) {%d}\r\n" % (tag, len(m)))
        line = s.read_line()
        self.assertTrue(line.startswith(b"+ ") or line == b"+", line)
        s.send(m + b"\r\n")
        status, _, line = s.read_until_tagged(tag)
        self.assertEqual(status, b"OK", line)

    def test_literal_mailbox_name_and_zero_length_literal(self):
        s = self.session()
        name = b"lit name"
        tag = s.next_tag()
        s.send(b"%s CREATE {%d}\r\n" % (tag, len(name)))
        self.assertTrue(s.read_line().startswith(b"+"))
        s.send(name + b"\r\n")
        self.assertEqual(s.read_until_tagged(tag)[0], b"OK")
        lines, _ = s.ok(b'LIST "" "lit name"')
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual(parse_all(lines[0][7:])[2], name)
        s.append(msg(b"zero"), mailbox=b'"lit name"')
        s.select(b'"lit name"')
        # {0} is an empty string: HEADER field "" matches every message with
        # that field (RFC 3501 6.4.4)
        lines, _ = s.ok(b"SEARCH HEADER Subject {0+}\r\n")
        self.assertEqual(search_result(lines), [1])

    def test_literal_followed_by_more_arguments(self):
        s = self.session()
        s.append(msg("Grüße aus Köln".encode("utf-8")))
        s.append(msg(b"plain"))
        s.select()
        word = "Köln".encode("utf-8")
        lines, _ = s.ok(b"SEARCH CHARSET UTF-8 SUBJECT {%d+}\r\n%s NOT DELETED" % (len(word), word))
        self.assertEqual(search_result(lines), [1])
        tag = s.next_tag()
        s.send(b"%s SEARCH CHARSET UTF-8 SUBJECT {%d}\r\n" % (tag, len(word)))
        self.assertTrue(s.read_line().startswith(b"+"))
        s.send(word + b" UNDELETED\r\n")
        status, lines, _ = s.read_until_tagged(tag)
        self.assertEqual((status, search_result(lines)), (b"OK", [1]))

    def test_literal_plus_before_login(self):
        # LITERAL+ is usable in every state (RFC 7888 4)
        s = self.session(login=False)
        s.ok(b"LOGIN {%d+}\r\n%s {%d+}\r\n%s" % (len(self.user), self.user.encode(),
                                                  len(self.password), self.password.encode()))

    def test_server_sends_literal_for_crlf_and_8bit(self):
        s = self.session()
        s.append(msg("ünïcode".encode("utf-8"), b"x\r\n"))
        s.select()
        lines, _ = s.ok(b"FETCH 1 (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        env = fetch_of(lines, 1, b"ENVELOPE")
        self.assertEqual(env[1], "ünïcode".encode("utf-8"))
        self.assertEqual(fetch_of(lines, 1, b"BODY[HEADER.FIELDS (SUBJECT)]"),
                         "Subject: ünïcode\r\n\r\n".encode("utf-8"))


class TestAppend(ConformanceCase):
    """RFC 3501 6.3.11, RFC 4315 APPENDUID, RFC 3501 6.3.10 STATUS."""

    def test_appenduid_and_exists_for_the_selected_session(self):
        s1, s2, s3 = self.session("s1"), self.session("s2"), self.session("s3")
        self.populate(s1, 1)
        lines, _ = s1.select()
        uidvalidity = code_of(b"\n".join(lines), b"UIDVALIDITY")
        uidnext = int(code_of(b"\n".join(lines), b"UIDNEXT"))
        s2.select()
        tag = s1.next_tag()
        m = msg(b"appended while selected")
        s1.current = b"APPEND"
        s1.send(b"%s APPEND INBOX (\\Seen \\Flagged) {%d+}\r\n%s\r\n" % (tag, len(m), m))
        status, lines, tagged = s1.read_until_tagged(tag)
        self.assertEqual(status, b"OK", tagged)
        # RFC 3501 6.3.11: the selected session SHOULD get EXISTS at once
        self.assertIn(b"* 2 EXISTS", lines, "APPEND to the selected mailbox: %r" % lines)
        appenduid = code_of(tagged, b"APPENDUID")
        self.assertIsNotNone(appenduid, tagged)
        validity, uid = appenduid.split()
        self.assertEqual(validity, uidvalidity)
        self.assertGreaterEqual(int(uid), uidnext, "the new UID is at least the UIDNEXT announced")
        lines, _ = s1.ok(b"FETCH 2 (UID FLAGS)")
        self.assertEqual(fetch_of(lines, 2, b"UID"), uid)
        self.assertEqual(flags_of(lines, 2), {b"\\seen", b"\\flagged"})
        lines, _ = s2.ok(b"NOOP")
        self.assertIn(b"* 2 EXISTS", lines)
        lines, _ = s3.ok(b"STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY)")
        values = parse_all(lines[0][9:])[1]
        status_map = {values[k].upper(): int(values[k + 1]) for k in range(0, len(values), 2)}
        self.assertEqual(status_map, {b"MESSAGES": 2, b"UNSEEN": 1, b"UIDNEXT": int(uid) + 1,
                                      b"UIDVALIDITY": int(validity)})

    def test_append_keywords_and_missing_mailbox(self):
        s = self.session()
        s.append(msg(b"kw"), flags=b"$Label1 \\Draft")
        s.select()
        lines, _ = s.ok(b"FETCH 1 (FLAGS)")
        self.assertEqual(flags_of(lines, 1), {b"$label1", b"\\draft"})
        m = msg(b"nowhere")
        status, _, line = s.command(b"APPEND no-such-box {%d+}\r\n%s" % (len(m), m))
        self.assertEqual(status, b"NO")
        self.assertIsNotNone(code_of(line, b"TRYCREATE"), "RFC 3501 6.3.11: %r" % line)


class TestCopyMove(ConformanceCase):
    """RFC 3501 6.4.7, RFC 4315 COPYUID, RFC 6851 MOVE."""

    def prepare(self):
        s1, s2 = self.session("s1"), self.session("s2")
        s1.ok(b"CREATE dest")
        self.populate(s1, 5, flags={1: b"\\Seen", 2: b"\\Draft \\Flagged", 5: b"\\Flagged $Kw1"})
        s1.select()
        s2.select(b"dest")
        return s1, s2

    def test_copy_copyuid_flags_and_dates(self):
        s1, s2 = self.prepare()
        src = [s1.view[0], s1.view[1], s1.view[3]]
        dates = {n: TestFetchBody.date_of(s1, n) for n in (1, 2, 4)}
        _, tagged = s1.ok(b"COPY 1:2,4 dest")
        code = code_of(tagged, b"COPYUID")
        self.assertIsNotNone(code, "UIDPLUS: COPYUID on the tagged OK (RFC 4315 3): %r" % tagged)
        validity, src_set, dst_set = code.split()
        self.assertEqual(parse_set(src_set), set(src))
        dst = sorted(parse_set(dst_set))
        self.assertEqual(len(dst), 3)
        lines, _ = s2.ok(b"NOOP")
        self.assertIn(b"* 3 EXISTS", lines)
        lines, _ = s2.ok(b"UID FETCH %s (FLAGS)" % dst_set)
        want = {1: {b"\\seen"}, 2: {b"\\draft", b"\\flagged"}, 3: set()}
        for seq in (1, 2, 3):
            self.assertEqual(flags_of(lines, seq), want[seq], "flags kept by COPY: %r" % lines)
        for seq, orig in ((1, 1), (2, 2), (3, 4)):
            self.assertEqual(TestFetchBody.date_of(s2, seq), dates[orig],
                             "INTERNALDATE SHOULD be kept by COPY (RFC 3501 6.4.7)")
        # the source UID order maps onto the destination UID order (RFC 4315 3)
        for s_uid, d_uid in zip(sorted(src), dst):
            a, _ = s1.ok(b"UID FETCH %d (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])" % s_uid)
            b, _ = s2.ok(b"UID FETCH %d (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])" % d_uid)
            self.assertEqual(fetches(a)[0][1][-1], fetches(b)[0][1][-1])
        status, _, line = s1.command(b"COPY 1 no-such-box")
        self.assertEqual(status, b"NO")
        self.assertIsNotNone(code_of(line, b"TRYCREATE"), line)

    def test_move_copyuid_before_expunge(self):
        # RFC 6851 3.3 / 4.3: COPYUID in an untagged OK before the EXPUNGEs
        s1, s2 = self.prepare()
        s3 = self.session("s3")
        s3.select()
        moved = [s1.view[1], s1.view[4]]
        lines, tagged = s1.ok(b"MOVE 2,5 dest")
        copyuid = [i for i, l in enumerate(lines)
                   if l.startswith(b"* OK") and code_of(l, b"COPYUID")]
        expunges = [i for i, l in enumerate(lines) if re.match(rb"^\* \d+ EXPUNGE$", l)]
        self.assertEqual(len(copyuid), 1, "untagged OK [COPYUID] expected: %r %r" % (lines, tagged))
        self.assertEqual(len(expunges), 2, lines)
        self.assertLess(copyuid[0], expunges[0], "COPYUID precedes the EXPUNGEs")
        self.assertEqual(parse_set(code_of(lines[copyuid[0]], b"COPYUID").split()[1]), set(moved))
        self.assertNotIn(moved[0], s1.view)
        self.assertNotIn(moved[1], s1.view)
        lines, _ = s2.ok(b"NOOP")
        self.assertIn(b"* 2 EXISTS", lines)
        lines, _ = s2.ok(b"FETCH 1:2 (FLAGS)")
        self.assertEqual(flags_of(lines, 2), {b"\\flagged", b"$kw1"}, "flags kept by MOVE")
        s3.ok(b"NOOP")
        self.assertEqual(len(s3.view), 3)

    def test_copy_and_move_within_the_selected_mailbox(self):
        # COPY to the selected mailbox: the copy is a new message, announced
        # with EXISTS (RFC 3501 6.4.7, 7.3.1)
        s = self.session()
        self.populate(s, 2)
        s.select()
        old = list(s.view)
        _, tagged = s.ok(b"COPY 1 INBOX")
        s.ok(b"NOOP")
        self.assertEqual(len(s.view), 3)
        copy_dst = int(code_of(tagged, b"COPYUID").split()[2])
        s.ok(b"FETCH 3 (UID)")
        self.assertEqual(s.view[2], copy_dst)

    def test_move_to_the_selected_mailbox(self):
        # RFC 6851 3.1: MOVE is COPY + STORE \Deleted + EXPUNGE done at once;
        # nothing exempts the selected mailbox, so the message gets a new UID
        # (imaptest's move script checks the same)
        s = self.session()
        self.populate(s, 3)
        s.select()
        old = list(s.view)
        lines, tagged = s.ok(b"MOVE 2 INBOX")
        code = code_of(b"\n".join(lines + [tagged]), b"COPYUID")
        self.assertIsNotNone(code, lines)
        self.assertEqual(parse_set(code.split()[1]), {old[1]})
        new_uid = int(code.split()[2])
        self.assertGreater(new_uid, old[2])
        s.ok(b"NOOP")
        s.ok(b"FETCH 1:* (UID)")
        self.assertEqual(s.view, [old[0], old[2], new_uid])

    def test_uid_move_with_qresync_uses_vanished(self):
        s1 = self.session("s1")
        s1.ok(b"CREATE dest")
        self.populate(s1, 3)
        s1.ok(b"ENABLE QRESYNC")
        s1.qresync = True
        s1.select()
        uid = s1.view[1]
        lines, _ = s1.ok(b"UID MOVE %d dest" % uid)
        self.assertIn(b"* VANISHED %d" % uid, lines, "RFC 7162 3.2.10 / RFC 6851 3.3: %r" % lines)
        self.assertEqual(len(s1.view), 2)
        # nothing to move: OK, no expunge (RFC 3501 6.4.8, RFC 6851 3.3)
        lines, _ = s1.ok(b"UID MOVE %d dest" % (uid + 1000))
        self.assertFalse(untagged_with(lines, rb"VANISHED|EXPUNGE"), lines)


class TestSearch(ConformanceCase):
    """RFC 3501 6.4.4 / RFC 9051 6.4.4 search keys and sets."""

    def six_minus_two(self, s):
        self.populate(s, 6)
        s.select()
        uids = list(s.view)
        s.ok(b"STORE 2 +FLAGS.SILENT (\\Deleted)")
        s.ok(b"EXPUNGE")
        return [uids[0]] + uids[2:]

    def search(self, s, criteria):
        lines, _ = s.ok(b"SEARCH " + criteria)
        return sorted(search_result(lines))

    def test_sets_after_the_uid_map_broke(self):
        s = self.session()
        u = self.six_minus_two(s)  # messages 1..5 have UIDs u[0..4]
        cases = [(b"ALL", [1, 2, 3, 4, 5]), (b"1:3,5", [1, 2, 3, 5]), (b"4:2", [2, 3, 4]),
                 (b"UID %d:%d,%d" % (u[0], u[1], u[3]), [1, 2, 4]),
                 (b"UID %d:%d" % (u[3], u[1]), [2, 3, 4]),
                 (b"1:3 NOT UID %d" % u[2], [1, 2]), (b"NOT 2,4", [1, 3, 5]),
                 (b"OR 1 UID %d" % u[2], [1, 3]), (b"*", [5]), (b"UID *", [5]),
                 (b"*:3", [3, 4, 5]), (b"1,4,*", [1, 4, 5]),
                 (b"UID %d:*" % (u[4] + 50), [5]), (b"(OR 1 2) (OR 2 3)", [2])]
        for criteria, want in cases:
            with self.subTest(criteria=criteria):
                self.assertEqual(self.search(s, criteria), want)
        lines, _ = s.ok(b"UID SEARCH 2:3")
        self.assertEqual(sorted(search_result(lines)), [u[1], u[2]])

    def test_address_keys_search_the_envelope_addresses(self):
        # RFC 3501 6.4.4: FROM/TO/CC/BCC look in "the envelope structure's"
        # field: comments and folding inside an addr-spec are no part of
        # the address (RFC 5322 3.4.1 CFWS), so <local (c)@ (c) host> is
        # local@host; a trailing comment is the display name in ENVELOPE
        s = self.session()
        s.append(b"From: <alpha (a note)@ (more)\r\n beta.example>\r\n"
                 b"To: gamma@delta.example (Real Gamma), Name <eps@zeta.example>\r\n"
                 b"Cc: team: one@g.example, two@g.example;\r\n"
                 b"Subject: addresses\r\n\r\nbody\r\n")
        s.append(msg(b"other"))
        s.select()
        cases = [(b"FROM alpha@beta.example", [1]), (b'FROM "alpha@beta"', [1]),
                 (b"FROM lpha@beta.exampl", [1]), (b"TO gamma@delta.example", [1]),
                 (b'TO "Real Gamma"', [1]), (b"TO eps@zeta.example", [1]),
                 (b"CC two@g.example", [1]), (b"FROM user1@example.org", [2]),
                 (b"FROM zeta.example", [])]
        for criteria, want in cases:
            with self.subTest(criteria=criteria):
                self.assertEqual(self.search(s, criteria), want)

    def test_star_in_an_empty_mailbox(self):
        # RFC 9051 section 9 (seq-number): a message number beyond the last
        # message is BAD, "this includes '*' if the selected mailbox is
        # empty"; as a UID "*" is then UIDNEXT and simply matches nothing
        s = self.session()
        s.ok(b"CREATE empty")
        s.select(b"empty")
        for cmd in (b"FETCH 1:* (FLAGS)", b"FETCH * (UID)", b"STORE 1:* +FLAGS (\\Seen)",
                    b"COPY * INBOX"):
            with self.subTest(cmd=cmd):
                status, lines, line = s.command(cmd)
                self.assertEqual(status, b"BAD", line)
                self.assertEqual(fetches(lines), [])
        for cmd in (b"UID FETCH 1:* (FLAGS)", b"UID STORE 1:* +FLAGS (\\Seen)",
                    b"UID COPY 1:* INBOX", b"SEARCH 1:*", b"UID SEARCH 1:*"):
            with self.subTest(cmd=cmd):
                lines, _ = s.ok(cmd)
                self.assertEqual(fetches(lines), [])
                self.assertEqual(search_result(lines), [])

    def test_empty_result_format(self):
        s = self.session()
        self.populate(s, 1)
        s.select()
        lines, _ = s.ok(b"SEARCH DELETED")
        self.assertIn(b"* SEARCH", lines, "empty result: '* SEARCH' without a trailing SP")

    def test_flag_keys(self):
        s = self.session()
        self.populate(s, 5, flags={1: b"$Hello", 2: b"\\Seen \\Flagged", 3: b"\\Answered $Hello",
                                   4: b"\\Flagged \\Draft", 5: b"\\Deleted \\Answered"})
        s.select()
        cases = [(b"ANSWERED", [3, 5]), (b"UNANSWERED", [1, 2, 4]), (b"DELETED", [5]),
                 (b"UNDELETED", [1, 2, 3, 4]), (b"DRAFT", [4]), (b"UNDRAFT", [1, 2, 3, 5]),
                 (b"FLAGGED", [2, 4]), (b"UNFLAGGED", [1, 3, 5]), (b"SEEN", [2]),
                 (b"UNSEEN", [1, 3, 4, 5]), (b"KEYWORD $Hello", [1, 3]),
                 (b"UNKEYWORD $Hello", [2, 4, 5]), (b"NEW", [1, 3, 4, 5]), (b"OLD", []),
                 (b"RECENT", [1, 2, 3, 4, 5])]
        for criteria, want in cases:
            with self.subTest(criteria=criteria):
                self.assertEqual(self.search(s, criteria), want)

    def test_nil_is_a_string_and_size_boundaries(self):
        # NIL where an astring is expected is the string "NIL" (RFC 3501 4.5)
        s = self.session()
        s.append(msg(b"vanilla ice", b"it is nil here\r\n"))
        s.append(msg(b"other", b"nothing\r\n", extra=b"X-Custom: \r\n"))
        s.select()
        self.assertEqual(self.search(s, b"SUBJECT NIL"), [1])
        self.assertEqual(self.search(s, b"BODY nil"), [1])
        self.assertEqual(self.search(s, b'HEADER X-Custom ""'), [2])
        size = int(fetch_of(s.ok(b"FETCH 1 (RFC822.SIZE)")[0], 1, b"RFC822.SIZE"))
        # LARGER / SMALLER are strict (RFC 3501 6.4.4)
        self.assertNotIn(1, self.search(s, b"LARGER %d" % size))
        self.assertIn(1, self.search(s, b"LARGER %d" % (size - 1)))
        self.assertNotIn(1, self.search(s, b"SMALLER %d" % size))
        self.assertIn(1, self.search(s, b"SMALLER %d" % (size + 1)))

    def test_nil_as_list_pattern(self):
        # list-mailbox = 1*list-char / string: NIL is the pattern "NIL"
        # (RFC 3501 9; imaptest's nil script)
        s = self.session()
        s.ok(b'LIST "" NIL')

    def test_searchres_save(self):
        # RFC 5182: RETURN (SAVE) alone answers nothing; $ is the saved set
        s = self.session()
        self.populate(s, 4, flags={2: b"\\Flagged", 4: b"\\Flagged"})
        s.select()
        lines, _ = s.ok(b"SEARCH RETURN (SAVE) FLAGGED")
        self.assertFalse(untagged_with(lines, rb"^\* E?SEARCH"), lines)
        lines, _ = s.ok(b"FETCH $ (UID)")
        self.assertEqual(sorted(n for n, _ in fetches(lines)), [2, 4])

    def test_esearch_formats(self):
        # RFC 4731 3.1: (TAG "tag"), UID, ALL / MIN / MAX / COUNT
        s = self.session()
        u = self.six_minus_two(s)
        s.ok(b"STORE 2,4 +FLAGS.SILENT (\\Seen)")

        def esearch(cmd):
            tag = s.next_tag()
            status, lines, _ = s.command(cmd, tag=tag)
            self.assertEqual(status, b"OK")
            found = untagged_with(lines, rb"^\* ESEARCH")
            self.assertEqual(len(found), 1, lines)
            prefix = b'* ESEARCH (TAG "' + tag + b'")'
            self.assertTrue(found[0].startswith(prefix), found)
            return found[0][len(prefix):]

        self.assertEqual(esearch(b"SEARCH RETURN (MIN) ALL"), b" MIN 1")
        self.assertEqual(esearch(b"SEARCH RETURN (MAX) ALL"), b" MAX 5")
        self.assertEqual(esearch(b"SEARCH RETURN (COUNT) ALL"), b" COUNT 5")
        rest = esearch(b"SEARCH RETURN () ALL")
        self.assertTrue(rest.startswith(b" ALL "), rest)
        self.assertEqual(parse_set(rest[5:]), {1, 2, 3, 4, 5})
        rest = esearch(b"UID SEARCH RETURN (ALL) SEEN")
        self.assertTrue(rest.startswith(b" UID ALL "), rest)
        self.assertEqual(parse_set(rest[9:]), {u[1], u[3]})
        self.assertEqual(esearch(b"UID SEARCH RETURN (MIN MAX) SEEN"),
                         b" UID MIN %d MAX %d" % (u[1], u[3]))
        self.assertEqual(esearch(b"SEARCH RETURN (MIN) 1000"), b"")
        self.assertEqual(esearch(b"SEARCH RETURN (COUNT) 1000"), b" COUNT 0")
        self.assertEqual(esearch(b"UID SEARCH RETURN () UID 99999"), b" UID")


class TestCondstoreQresync(ConformanceCase):
    """RFC 7162."""

    def test_modseq_in_every_unsolicited_fetch(self):
        # Once CONDSTORE is enabled, untagged FETCH responses caused by flag
        # changes carry MODSEQ (RFC 7162 3.1.4)
        s1, s2 = self.session("s1"), self.session("s2")
        self.populate(s1, 3)
        lines, _ = s2.ok(b"ENABLE CONDSTORE")
        self.assertIn(b"* ENABLED CONDSTORE", lines)
        lines, _ = s2.select()
        self.assertRegex(b"\n".join(lines), rb"\* OK \[HIGHESTMODSEQ [1-9][0-9]*\]")
        s1.select()
        s1.ok(b"STORE 2 +FLAGS (\\Flagged)")
        lines, _ = s2.ok(b"NOOP")
        items = dict(fetches(lines)).get(2)
        self.assertIsNotNone(items, lines)
        self.assertIsNotNone(fetch_item(items, b"MODSEQ"), "MODSEQ missing: %r" % lines)
        lines, _ = s2.ok(b"STORE 3 +FLAGS (\\Answered)")
        self.assertIsNotNone(fetch_of(lines, 3, b"MODSEQ"), lines)

    def test_modseq_search_changedsince_unchangedsince(self):
        s = self.session()
        self.populate(s, 4)
        s.select(extra=b" (CONDSTORE)")
        modseq = {}
        for n in (1, 3, 2, 4):
            lines, _ = s.ok(b"STORE %d +FLAGS (\\Seen)" % n)
            modseq[n] = int(fetch_of(lines, n, b"MODSEQ")[0])
        self.assertEqual(sorted(modseq.values()), [modseq[1], modseq[3], modseq[2], modseq[4]],
                         "mod-sequences grow with each change (RFC 7162 3.1.1)")
        lines, _ = s.ok(b"SEARCH MODSEQ %d" % modseq[3])
        self.assertIn(b"* SEARCH 2 3 4 (MODSEQ %d)" % modseq[4], lines,
                      "RFC 7162 3.1.5: matches with the highest mod-sequence: %r" % lines)
        lines, _ = s.ok(b"SEARCH MODSEQ %d" % (modseq[4] + 1))
        self.assertIn(b"* SEARCH", lines)
        lines, _ = s.ok(b"FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % modseq[2])
        got = fetches(lines)
        self.assertEqual([n for n, _ in got], [4], "only what changed after the given modseq")
        self.assertIsNotNone(fetch_item(got[0][1], b"MODSEQ"), "CHANGEDSINCE implies MODSEQ")
        lines, tagged = s.ok(b"STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Flagged)")
        self.assertIsNotNone(code_of(tagged, b"MODIFIED"),
                             "UNCHANGEDSINCE 0 always fails (RFC 7162 3.1.3): %r" % tagged)
        lines, _ = s.ok(b"FETCH 1 (FLAGS)")
        self.assertNotIn(b"\\flagged", flags_of(lines, 1))
        lines, _ = s.ok(b"SEARCH RETURN (MAX) MODSEQ %d" % modseq[1])
        self.assertRegex(lines[-1], rb"MAX 4 MODSEQ %d$" % modseq[4])
        lines, _ = s.ok(b"STATUS INBOX (HIGHESTMODSEQ)")
        self.assertGreaterEqual(int(re.search(rb"HIGHESTMODSEQ (\d+)", lines[0]).group(1)),
                                modseq[4])

    def test_qresync_vanished_instead_of_expunge(self):
        s1, s2 = self.session("s1"), self.session("s2")
        self.populate(s1, 4)
        for s in (s1, s2):
            lines, _ = s.ok(b"ENABLE QRESYNC")
            self.assertTrue(untagged_with(lines, rb"^\* ENABLED .*QRESYNC"), lines)
            s.qresync = True
            s.select()
        uids = list(s1.view)
        lines, _ = s1.ok(b"FETCH 1 (MODSEQ)")
        before = int(fetch_of(lines, 1, b"MODSEQ")[0])
        s1.ok(b"STORE 2,3 +FLAGS.SILENT (\\Deleted)")
        lines, _ = s1.ok(b"EXPUNGE")
        vanished = untagged_with(lines, rb"^\* VANISHED ")
        self.assertEqual(len(vanished), 1, lines)
        self.assertEqual(parse_set(vanished[0].split()[-1]), {uids[1], uids[2]})
        lines, _ = s2.ok(b"NOOP")
        self.assertTrue(untagged_with(lines, rb"^\* VANISHED [0-9]"), lines)
        self.assertEqual(s2.view, [uids[0], uids[3]])
        # with QRESYNC, unsolicited FETCH carries UID and MODSEQ (RFC 7162
        # 3.2.4, RFC 5162 erratum 1807): without UID a client cannot use it
        s1.ok(b"STORE 2 +FLAGS (\\Flagged)")
        lines, _ = s2.ok(b"NOOP")
        items = dict(fetches(lines)).get(2)
        self.assertIsNotNone(items, lines)
        self.assertEqual(fetch_item(items, b"UID"), b"%d" % uids[3], "UID missing: %r" % lines)
        self.assertIsNotNone(fetch_item(items, b"MODSEQ"), "MODSEQ missing: %r" % lines)
        lines, _ = s2.ok(b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % before)
        earlier = untagged_with(lines, rb"^\* VANISHED \(EARLIER\) ")
        self.assertEqual(len(earlier), 1, "RFC 7162 3.2.6: %r" % lines)
        self.assertEqual(parse_set(earlier[0].split()[-1]), {uids[1], uids[2]})

    def test_qresync_expunge_and_move_report_highestmodseq(self):
        # RFC 7162 3.2.7 / 3.2.9: after ENABLE QRESYNC the tagged OK of
        # EXPUNGE and UID EXPUNGE carries [HIGHESTMODSEQ n] (RFC 6851 4.4:
        # MOVE too), so a client can resynchronize later from there; without
        # QRESYNC nothing changes
        s = self.session()
        self.populate(s, 6)
        s.ok(b"CREATE dest")
        lines, _ = s.ok(b"ENABLE QRESYNC")
        s.qresync = True
        select_lines, _ = s.select()
        at_select = int(code_of(b" ".join(select_lines), b"HIGHESTMODSEQ"))
        uids = list(s.view)
        s.ok(b"STORE 1,2 +FLAGS.SILENT (\\Deleted)")
        _, tagged = s.ok(b"EXPUNGE")
        after_expunge = code_of(tagged, b"HIGHESTMODSEQ")
        self.assertIsNotNone(after_expunge, "EXPUNGE: %r" % tagged)
        self.assertGreaterEqual(int(after_expunge), at_select)
        s.ok(b"UID STORE %d +FLAGS.SILENT (\\Deleted)" % uids[2])
        _, tagged = s.ok(b"UID EXPUNGE %d" % uids[2])
        after_uid_expunge = code_of(tagged, b"HIGHESTMODSEQ")
        self.assertIsNotNone(after_uid_expunge, "UID EXPUNGE: %r" % tagged)
        self.assertGreaterEqual(int(after_uid_expunge), int(after_expunge))
        _, tagged = s.ok(b"UID MOVE %d dest" % uids[3])
        self.assertIsNotNone(code_of(tagged, b"HIGHESTMODSEQ"), "UID MOVE: %r" % tagged)
        # the value is one the client may resynchronize from: nothing it
        # has already been told about comes back as changed or vanished
        lines, _ = s.ok(b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)"
                        % int(after_uid_expunge))
        self.assertFalse(untagged_with(lines, rb"^\* VANISHED \(EARLIER\) .*\b%d\b" % uids[0]),
                         lines)


class TestListAndSubscriptions(ConformanceCase):
    """RFC 3501 6.3.8 / 6.3.9, RFC 5258 LIST-EXTENDED, RFC 3348 CHILDREN."""

    def names(self, lines, verb=b"LIST"):
        out = {}
        for line in lines:
            if line.upper().startswith(b"* " + verb + b" "):
                values = parse_all(line[len(verb) + 3:])
                out[bytes(values[2])] = {f.lower() for f in values[0]}
                if len(values) > 3:
                    out[bytes(values[2])].add(b"ext:" + repr(values[3:]).lower().encode())
        return out

    def setUp(self):
        super().setUp()
        self.s = self.session()
        lines, _ = self.s.ok(b'LIST "" ""')
        self.assertEqual(len(lines), 1, lines)
        values = parse_all(lines[0][7:])
        self.assertEqual(values[2], b"", "LIST \"\" \"\" returns the root name \"\"")
        self.sep = bytes(values[1])
        sep = self.sep
        for name in (b"p", b"p%stest" % sep, b"p%stest2" % sep, b"p%stest3" % sep,
                     b"p%stest3%stest4%stest5" % (sep, sep, sep)):
            self.s.ok(b"CREATE " + quote(name))

    def p(self, *parts):
        return self.sep.join((b"p",) + parts)

    def listing(self, ref, pattern):
        lines, _ = self.s.ok(b"LIST %s %s" % (quote(ref), quote(pattern)))
        return self.names(lines)

    def test_percent_and_star(self):
        got = self.listing(b"", self.p(b"%"))
        self.assertEqual(set(got), {self.p(b"test"), self.p(b"test2"), self.p(b"test3")})
        # % at the end returns the levels in between, \Noselect if they are no
        # mailbox (RFC 3501 6.3.8)
        got = self.listing(b"", self.p(b"test3", b"%"))
        self.assertEqual(set(got), {self.p(b"test3", b"test4")})
        flags = got[self.p(b"test3", b"test4")]
        if not ({b"\\noselect", b"\\nonexistent"} & flags):
            self.s.ok(b"SELECT " + quote(self.p(b"test3", b"test4")))  # then it is a mailbox
        got = self.listing(b"", self.p(b"%", b"%"))
        self.assertEqual(set(got), {self.p(b"test3", b"test4")})
        got = self.listing(b"", self.p(b"*"))
        self.assertTrue({self.p(b"test"), self.p(b"test2"), self.p(b"test3"),
                         self.p(b"test3", b"test4", b"test5")} <= set(got), got)
        self.assertEqual(self.listing(self.p(b""), b"*"), got, "reference + pattern (6.3.8)")
        self.assertEqual(set(self.listing(b"", self.p(b"*test4"))), {self.p(b"test3", b"test4")})
        self.assertEqual(set(self.listing(b"", self.p(b"%3", b"%"))),
                         {self.p(b"test3", b"test4")})
        self.s.ok(b"DELETE " + quote(self.p(b"test2")))
        self.assertNotIn(self.p(b"test2"), self.listing(b"", self.p(b"*")))

    def test_inbox_and_special_names(self):
        for pattern in (b"INBOX", b"inbox", b"InBoX"):
            got = self.listing(b"", pattern)
            self.assertEqual(list(got), [b"INBOX"], "INBOX is case-insensitive (RFC 3501 5.1)")
        # with wildcards too: INBOX is listed when "INBOX" matches the
        # pattern, and the name INBOX is case-insensitive (RFC 9051 5.1,
        # 6.3.9), so "inbox*" and "iNb%" list it as INBOX
        for pattern in (b"inbox*", b"iNb%", b"%nbox", b"*BOX"):
            got = self.listing(b"", pattern)
            self.assertIn(b"INBOX", got, "LIST \"\" %r" % pattern)
        status, _, _ = self.s.command(b"DELETE INBOX")
        self.assertEqual(status, b"NO", "deleting INBOX is an error (RFC 3501 6.3.4)")
        status, _, _ = self.s.command(b"CREATE " + quote(self.p(b"test")))
        self.assertEqual(status, b"NO", "CREATE of an existing name (RFC 3501 6.3.3)")
        # trailing separator: the name is created without it (RFC 3501 6.3.3)
        self.s.ok(b"CREATE " + quote(b"q" + self.sep))
        self.assertEqual(list(self.listing(b"", b"q")), [b"q"])
        # modified UTF-7 names round-trip (RFC 3501 5.1.3)
        self.s.ok(b'CREATE "Entw&APw-rfe"')
        self.assertEqual(list(self.listing(b"", b"Entw*")), [b"Entw&APw-rfe"])
        self.s.ok(b'CREATE "quo\\"te"')
        self.assertEqual(list(self.listing(b"", b"quo*")), [b'quo"te'])

    def test_rename_moves_inferiors(self):
        self.s.ok(b"RENAME %s %s" % (quote(self.p(b"test3")), quote(self.p(b"moved"))))
        got = self.listing(b"", self.p(b"*"))
        self.assertIn(self.p(b"moved", b"test4", b"test5"), got, "RFC 3501 6.3.5")
        self.assertNotIn(self.p(b"test3"), got)
        status, _, _ = self.s.command(b"RENAME %s %s" % (quote(self.p(b"test")),
                                                         quote(self.p(b"moved"))))
        self.assertEqual(status, b"NO", "RENAME onto an existing name")

    def test_lsub_parent_is_noselect(self):
        # RFC 3501 6.3.9: a % match on an unsubscribed parent of a
        # subscribed name is returned with \Noselect
        self.s.ok(b"SUBSCRIBE " + quote(self.p(b"test")))
        self.s.ok(b"SUBSCRIBE " + quote(self.p(b"test3", b"test4", b"test5")))
        lines, _ = self.s.ok(b"LSUB \"\" " + quote(self.p(b"%")))
        got = self.names(lines, b"LSUB")
        self.assertEqual(set(got), {self.p(b"test"), self.p(b"test3")}, lines)
        self.assertIn(b"\\noselect", got[self.p(b"test3")])
        self.assertNotIn(b"\\noselect", got[self.p(b"test")])
        self.s.ok(b"UNSUBSCRIBE " + quote(self.p(b"test")))
        lines, _ = self.s.ok(b"LSUB \"\" " + quote(self.p(b"*")))
        self.assertEqual(set(self.names(lines, b"LSUB")), {self.p(b"test3", b"test4", b"test5")})

    def test_list_extended(self):
        s, p = self.s, self.p
        s.ok(b"SUBSCRIBE " + quote(p(b"test")))
        s.ok(b"SUBSCRIBE " + quote(p(b"test3", b"test4", b"test5")))
        # several patterns (RFC 5258 3)
        lines, _ = s.ok(b'LIST "" (%s %s)' % (quote(p(b"*2")), quote(p(b"test"))))
        self.assertEqual(set(self.names(lines)), {p(b"test2"), p(b"test")})
        # (SUBSCRIBED): only subscribed names, each with \Subscribed
        lines, _ = s.ok(b'LIST (SUBSCRIBED) "" %s' % quote(p(b"*")))
        got = self.names(lines)
        self.assertEqual(set(got), {p(b"test"), p(b"test3", b"test4", b"test5")})
        self.assertTrue(all(b"\\subscribed" in f for f in got.values()), got)
        # RETURN (CHILDREN)
        lines, _ = s.ok(b'LIST "" %s RETURN (CHILDREN)' % quote(p(b"%")))
        got = self.names(lines)
        self.assertIn(b"\\haschildren", got[p(b"test3")])
        self.assertIn(b"\\hasnochildren", got[p(b"test")])
        # RECURSIVEMATCH: a parent of subscribed children gets CHILDINFO
        lines, _ = s.ok(b'LIST (SUBSCRIBED RECURSIVEMATCH) "" %s' % quote(p(b"%")))
        got = self.names(lines)
        self.assertIn(p(b"test3"), got, lines)
        self.assertRegex(repr(got[p(b"test3")]), r"childinfo.*subscribed")
        self.assertNotIn(b"\\subscribed", got[p(b"test3")])
        # errors are BAD (RFC 5258 3): RECURSIVEMATCH alone, unknown options
        for bad in (b'LIST (RECURSIVEMATCH) "" "*"', b'LIST (NO-SUCH-OPTION) "" "*"',
                    b'LIST "" "*" RETURN (NO-SUCH-OPTION)'):
            with self.subTest(cmd=bad):
                self.assertEqual(s.command(bad)[0], b"BAD")
        s.ok(b'LIST (REMOTE) "" "%"')

    def test_deleted_mailbox_stays_subscribed(self):
        # RFC 3501 6.3.6: the server MUST NOT unilaterally remove a name
        # from the subscriptions even if that mailbox no longer exists;
        # RFC 5258 3.1/3.4: LIST (SUBSCRIBED) shows it \NonExistent
        s, p = self.s, self.p
        s.ok(b"CREATE " + quote(p(b"gone")))
        s.ok(b"SUBSCRIBE " + quote(p(b"gone")))
        s.ok(b"DELETE " + quote(p(b"gone")))
        lines, _ = s.ok(b'LSUB "" %s' % quote(p(b"gone")))
        self.assertEqual(list(self.names(lines, b"LSUB")), [p(b"gone")], lines)
        lines, _ = s.ok(b'LIST (SUBSCRIBED) "" %s' % quote(p(b"gone")))
        got = self.names(lines)
        self.assertEqual(list(got), [p(b"gone")], lines)
        self.assertTrue({b"\\subscribed", b"\\nonexistent"} <= got[p(b"gone")], lines)

    def test_status_format(self):
        self.s.append(msg(b"one"), mailbox=quote(self.p(b"test")))
        lines, _ = self.s.ok(b"STATUS %s (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)"
                             % quote(self.p(b"test")))
        self.assertEqual(len(lines), 1, lines)
        values = parse_all(lines[0][9:])
        self.assertEqual(bytes(values[0]), self.p(b"test"))
        got = {values[1][k].upper(): int(values[1][k + 1]) for k in range(0, len(values[1]), 2)}
        self.assertEqual(set(got), {b"MESSAGES", b"RECENT", b"UIDNEXT", b"UIDVALIDITY", b"UNSEEN"})
        self.assertEqual((got[b"MESSAGES"], got[b"UNSEEN"]), (1, 1))


class TestBinary(ConformanceCase):
    """RFC 3516 BINARY."""

    def setUp(self):
        super().setUp()
        self.s = self.session()
        self.s.append(BINARY_MSG)
        self.s.select()

    def item(self, req, name):
        lines, _ = self.s.ok(b"FETCH 1 (%s)" % req)
        return fetch_of(lines, 1, name)

    def test_decoded_parts(self):
        got = self.item(b"BINARY.PEEK[2]", b"BINARY[2]")
        self.assertEqual(got, BINARY_PART2)
        self.assertIsInstance(got, Literal8, "content with NUL is sent as literal8 (RFC 3516 4.3)")
        self.assertEqual(self.item(b"BINARY.SIZE[2]", b"BINARY.SIZE[2]"), b"%d" % len(BINARY_PART2))
        self.assertEqual(self.item(b"BINARY.PEEK[3]", b"BINARY[3]"), BINARY_PART3)
        self.assertEqual(self.item(b"BINARY.SIZE[3]", b"BINARY.SIZE[3]"), b"%d" % len(BINARY_PART3))
        self.assertEqual(self.item(b"BINARY.PEEK[1]", b"BINARY[1]"), b"plain seven bit")
        self.assertEqual(self.item(b"BINARY.PEEK[2]<4.5>", b"BINARY[2]<4>"), b"hello")

    def test_unknown_cte(self):
        self.s.append(UNKNOWN_CTE_MSG)
        self.s.ok(b"NOOP")
        status, _, line = self.s.command(b"FETCH 2 (BINARY.PEEK[1])")
        self.assertEqual(status, b"NO", line)
        self.assertIsNotNone(code_of(line, b"UNKNOWN-CTE"), "RFC 3516 4.3: %r" % line)

    def test_append_literal8(self):
        body = b"8bit \xc3\xa9t\xc3\xa9\r\n"
        m = (b"From: a@example.org\r\nSubject: literal8\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: binary\r\n"
             b"\r\n" + body)
        self.s.ok(b"APPEND INBOX ~{%d+}\r\n%s" % (len(m), m))
        self.s.ok(b"NOOP")
        lines, _ = self.s.ok(b"FETCH 2 (BINARY.PEEK[1])")
        self.assertEqual(fetch_of(lines, 2, b"BINARY[1]"), body)


class TestSortThreadIdle(ConformanceCase):
    """RFC 5256 SORT / THREAD, RFC 2177 IDLE, RFC 2342 NAMESPACE."""

    def thread_mailbox(self, s):
        s.append(msg(b"bravo", msgid=b"<b@x>"))
        s.append(msg(b"alpha", msgid=b"<a@x>"))
        s.append(msg(b"Re: alpha", msgid=b"<r@x>",
                     extra=b"In-Reply-To: <a@x>\r\nReferences: <a@x>\r\n"))
        s.append(msg(b"[fwd: Bravo] (fwd)", msgid=b"<f@x>"))
        s.select()

    def test_sort_base_subject(self):
        # RFC 5256 2.1 base subject: "Re:", "[fwd: ...]", "(fwd)" removed,
        # compared case-insensitively; ties by sequence number
        s = self.session()
        self.thread_mailbox(s)
        lines, _ = s.ok(b"SORT (SUBJECT) UTF-8 ALL")
        self.assertEqual(untagged_with(lines, rb"^\* SORT"), [b"* SORT 2 3 1 4"])
        lines, _ = s.ok(b"SORT (REVERSE SUBJECT) UTF-8 ALL")
        self.assertEqual(untagged_with(lines, rb"^\* SORT"), [b"* SORT 1 4 2 3"])
        lines, _ = s.ok(b"UID SORT (SUBJECT) UTF-8 ALL")
        self.assertEqual(untagged_with(lines, rb"^\* SORT"),
                         [b"* SORT %d %d %d %d" % (s.view[1], s.view[2], s.view[0], s.view[3])])
        lines, _ = s.ok(b"SORT (SUBJECT) UTF-8 DELETED")
        self.assertIn(b"* SORT", lines, "empty SORT result: '* SORT' without a trailing SP")

    def test_sort_by_address_of_a_group(self):
        # RFC 5256 3: TO / CC / FROM sort by the addr-mailbox of the first
        # address; a group's first ENVELOPE address is the group start
        # (NIL NIL "group name" NIL), so "undisclosed-recipients:;" sorts
        # as "undisclosed-recipients".  RFC 5957 DISPLAYTO: no display-name,
        # the same mailbox.
        s = self.session()
        for to in (b"zed@example.org", b"undisclosed-recipients:;", b"bob@example.org",
                   b"Team: mia@example.org, al@example.org;", b"Victor <victor@example.org>"):
            s.append(b"From: a@example.org\r\nTo: " + to + b"\r\nSubject: s\r\n"
                     b"Date: Sat, 24 Mar 2007 23:00:00 +0200\r\n\r\nbody\r\n")
        s.select()
        lines, _ = s.ok(b"SORT (TO) UTF-8 ALL")
        self.assertEqual(untagged_with(lines, rb"^\* SORT"), [b"* SORT 3 4 2 5 1"])
        caps = b" ".join(s.command(b"CAPABILITY")[1]).upper()
        if b"SORT=DISPLAY" in caps:
            lines, _ = s.ok(b"SORT (DISPLAYTO) UTF-8 ALL")
            self.assertEqual(untagged_with(lines, rb"^\* SORT"), [b"* SORT 3 4 2 5 1"])

    def test_thread_formats(self):
        # RFC 5256 4: thread-list = "(" ... ")"; ORDEREDSUBJECT and REFERENCES
        s = self.session()
        self.thread_mailbox(s)
        lines, _ = s.ok(b"THREAD ORDEREDSUBJECT UTF-8 ALL")
        self.assertEqual(untagged_with(lines, rb"^\* THREAD"), [b"* THREAD (1 4)(2 3)"])
        lines, _ = s.ok(b"THREAD REFERENCES UTF-8 ALL")
        self.assertEqual(untagged_with(lines, rb"^\* THREAD"), [b"* THREAD (1 4)(2 3)"],
                         "4 is a forward of 1: subjects gathered (RFC 5256 4, step 5)")

    def test_idle_sees_other_session_consistently(self):
        s1, s2 = self.session("s1"), self.session("s2")
        self.populate(s1, 3)
        s1.select()
        s2.select()
        uids = list(s2.view)
        s2.current = b"IDLE"
        s2.idle_start()
        s1.ok(b"STORE 3 +FLAGS (\\Flagged)")
        s1.ok(b"STORE 1 +FLAGS.SILENT (\\Deleted)")
        s1.ok(b"EXPUNGE")
        s1.append(msg(b"new during idle"))
        s2.wait_for(rb"^\* 3 EXISTS$", timeout=5.0)
        s2.idle_done()
        s2.ok(b"NOOP")
        s2.ok(b"FETCH 1:* (UID)")
        self.assertEqual(s2.view[:2], [uids[1], uids[2]])
        self.assertEqual(len(s2.view), 3)
        lines, _ = s2.ok(b"FETCH 2 (FLAGS)")
        self.assertIn(b"\\flagged", flags_of(lines, 2))

    def test_namespace_and_enable_format(self):
        s = self.session()
        lines, _ = s.ok(b"NAMESPACE")
        ns = untagged_with(lines, rb"^\* NAMESPACE ")
        self.assertEqual(len(ns), 1, lines)
        values = parse_all(ns[0][12:])
        self.assertEqual(len(values), 3, "personal, other users, shared (RFC 2342 5): %r" % ns)
        for v in values:
            if v is not None:
                self.assertTrue(all(isinstance(d, list) and len(d) >= 2 and isinstance(d[0], Str)
                                    for d in v), ns)
        self.assertIsNotNone(values[0], "a personal namespace exists")
        lines, _ = s.ok(b"ENABLE X-NO-SUCH-EXTENSION")
        for line in untagged_with(lines, rb"^\* ENABLED"):
            self.assertNotIn(b"X-NO-SUCH", line.upper(), "RFC 5161 3.1: only known extensions")


class TestImap4rev2(ConformanceCase):
    """RFC 9051 once the client ENABLEs IMAP4rev2 (section 6.3.1 and
    Appendix E: no RECENT, no \Recent, SEARCH answers with ESEARCH)."""

    def rev2(self):
        s = self.session()
        status, lines, _ = s.command(b"CAPABILITY")
        if b"IMAP4REV2" not in b" ".join(lines).upper().split():
            if is_mx():
                self.fail("mx-imapd must offer IMAP4rev2 (issue 5)")
            self.skipTest("%s does not offer IMAP4rev2" % TARGET.kind)
        lines, _ = s.ok(b"ENABLE IMAP4rev2")
        self.assertTrue(untagged_with(lines, rb"^\* ENABLED .*IMAP4REV2"), lines)
        return s

    def test_select_search_fetch_in_rev2(self):
        s = self.rev2()
        self.populate(s, 2, flags={2: b"\\Seen"})
        s.ok(b"CREATE other")
        lines, _ = s.select()
        self.assertFalse(untagged_with(lines, rb"^\* \d+ RECENT"),
                         "no RECENT response in IMAP4rev2 (RFC 9051 Appendix E): %r" % lines)
        self.assertTrue(untagged_with(lines, rb"^\* OK \[UIDNEXT \d+\]"), lines)
        lines, _ = s.ok(b"FETCH 1:* (FLAGS)")
        for seq in (1, 2):
            raw = {f.lower() for f in fetch_of(lines, seq, b"FLAGS")}
            self.assertNotIn(b"\\recent", raw, "no \\Recent in IMAP4rev2: %r" % lines)
        tag = s.next_tag()
        status, lines, _ = s.command(b"SEARCH UNSEEN", tag=tag)
        self.assertFalse(untagged_with(lines, rb"^\* SEARCH"), "rev2 answers SEARCH with ESEARCH")
        self.assertIn(b'* ESEARCH (TAG "' + tag + b'") ALL 1', lines)
        lines, _ = s.select(b"other")
        self.assertTrue([l for l in lines if code_of(l, b"CLOSED") is not None],
                        "[CLOSED] when one mailbox replaces another (RFC 9051 7.1): %r" % lines)


class TestGeneral(ConformanceCase):
    """RFC 3501 6.1, 7.1.5, 2.2.2: tags, case, errors, LOGOUT."""

    def test_tags_case_and_unknown_commands(self):
        s = self.session()
        status, _, line = s.command(b"nOoP", tag=b"a.b-c_9")
        self.assertEqual(status, b"OK", line)
        self.assertTrue(line.startswith(b"a.b-c_9 OK"), "tag echoed exactly: %r" % line)
        self.assertEqual(s.command(b"FROBNICATE")[0], b"BAD")
        self.assertEqual(s.command(b"SELECT")[0], b"BAD", "missing argument")
        self.assertEqual(s.command(b"FETCH 1 (FLAGS)")[0], b"BAD",
                         "FETCH needs the selected state")
        lines, _ = s.ok(b"select inbox")
        self.assertTrue(untagged_with(lines, rb"^\* 0 EXISTS$"), lines)

    def test_logout_bye_before_tagged_ok(self):
        s = self.session()
        status, lines, _ = s.command(b"LOGOUT")
        self.assertEqual(status, b"OK")
        self.assertTrue(lines and lines[-1].startswith(b"* BYE"), lines)

    def test_pipelined_commands_all_answered(self):
        # RFC 3501 5.5: commands may be pipelined; the server may complete
        # them in any order, but each gets its tagged answer exactly once
        s = self.session()
        self.populate(s, 2)
        s.select()
        s.send(b"P1 FETCH 1 (UID)\r\nP2 NOOP\r\nP3 FETCH 2 (UID)\r\n")
        s.current = b"FETCH"
        answered = []
        while len(answered) < 3:
            line = s.read_line()
            if not line.startswith(b"* "):
                answered.append(line.split(b" ")[:2])
        self.assertEqual(sorted(answered), [[b"P1", b"OK"], [b"P2", b"OK"], [b"P3", b"OK"]])


if __name__ == "__main__":
    unittest.main(verbosity=2)

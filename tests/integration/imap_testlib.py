"""imap_testlib - what the IMAP/POP3 tests share: the server under test,
accounts, mail delivery, clients and message builders.

The server under test is mx-imapd in a full cluster (mxlaunch.Cluster: mail
enters by SMTP through mx-inbound -> mx-delivery -> mx-store).  With
MX_IMAP_TARGET=dovecot the same tests run against Debian's Dovecot
(mxlaunch.Dovecot, mail delivered by dovecot-lda): a self-check that the
tests ask what the RFCs say, not what our implementation happens to do.
Tests of things only mxcluster promises (LDAP-driven rate limits, PROXY v2,
store figures) are skipped there with skip_unless_mx().

Every test class gets its own server (setUpClass) and its own fresh
accounts (add_account), so tests do not see each other's mail.
"""

import email.utils
import imaplib
import os
import re
import socket
import time
import unittest

from mxlaunch import Cluster, Dovecot, client_tls_context

TARGET = os.environ.get("MX_IMAP_TARGET", "mx-imapd")
TIMEOUT = 20
HOST = "127.0.0.1"

imaplib._MAXLINE = 10 * 1024 * 1024  # big FETCH/SEARCH answers are legitimate


def is_mx():
    return TARGET != "dovecot"


def skip_unless_mx(reason):
    """skip_unless_mx - for behaviour mxcluster promises beyond the RFCs."""
    return unittest.skipUnless(is_mx(), "%s (mxcluster only)" % reason)


class MxTarget:
    """The full cluster with mx-imapd."""

    kind = "mx-imapd"

    def __init__(self, imap_overrides=None):
        self.cluster = Cluster(log_level=os.environ.get("MX_TEST_LOG_LEVEL", "info"),
                               imap_overrides=imap_overrides)
        self.host = HOST
        self._counter = 0

    @property
    def cert(self):
        return self.cluster.cert

    def port(self, name):
        return self.cluster.port(name)

    def add_account(self, prefix="u", shard="shard1", quota_bytes=None, quota_messages=None):
        self._counter += 1
        name = "%s%d%s" % (prefix, self._counter, os.urandom(2).hex())
        return self.cluster.add_account(name, shard=shard, quota_bytes=quota_bytes,
                                        quota_messages=quota_messages)

    def disabled_account(self):
        return "bob@example.test", "bob-secret"

    def deliver(self, user, message):
        self.cluster.deliver(user, message)

    def deliver_many(self, user, messages):
        self.cluster.deliver_many(user, messages)

    def server_pid(self):
        return self.cluster.imapd.pid

    def alive(self):
        return self.cluster.imapd.running

    def log(self):
        return self.cluster.imapd.log()

    def close(self):
        """close - stop everything; fail if mx-imapd's log holds a sanitizer
        report (an ASan/UBSan build prints them, leaks at exit included)."""
        report = ""
        imapd = self.cluster.imapd
        if imapd is not None:
            imapd.stop()
            try:
                log = imapd.log()
            except OSError:
                log = ""
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                at = log.find(marker)
                if at >= 0:
                    report = log[max(0, at - 200):at + 3000]
                    break
        self.cluster.close()
        if report:
            raise AssertionError("mx-imapd sanitizer report:\n" + report)


class DovecotTarget:
    """Debian's Dovecot as the reference (MX_IMAP_TARGET=dovecot).

    Accounts come from a pool written into the passwd-file before the start
    (Dovecot re-reads a changed passwd-file only when its mtime moves to a
    new second, which would make quick add_account calls race)."""

    kind = "dovecot"
    POOL = 300

    def __init__(self, imap_overrides=None, host="127.0.0.2"):
        # 127.0.0.2: Dovecot calls a client whose address equals its own
        # "secured" and would not advertise LOGINDISABLED.
        self.host = host
        self.pool = ["u%03d%s@example.test" % (i, os.urandom(2).hex()) for i in range(self.POOL)]
        users = {u: u.split("@")[0] + "-secret" for u in self.pool}
        users["bob@example.test"] = "bob-secret"
        self.users = users
        self.server = Dovecot(users, host=self.host, quotas={u: 1048576 for u in self.pool[-20:]},
                              extra_passwd={"bob@example.test": "nologin reason=Account_disabled"})
        self._next = 0
        self._next_quota = self.POOL - 20

    @property
    def cert(self):
        return self.server.cert

    def port(self, name):
        return self.server.port(name)

    def add_account(self, prefix="u", shard="shard1", quota_bytes=None, quota_messages=None):
        # accounts with a quota get the pool's 1 MiB ones (as frank's)
        if quota_bytes:
            user = self.pool[self._next_quota]
            self._next_quota += 1
        else:
            user = self.pool[self._next]
            self._next += 1
        return user, self.users[user]

    def disabled_account(self):
        return "bob@example.test", "bob-secret"

    def deliver(self, user, message):
        self.server.deliver(user, message)

    def deliver_many(self, user, messages):
        for m in messages:
            self.server.deliver(user, m)

    def server_pid(self):
        return self.server.pid

    def alive(self):
        return self.server.proc.running

    def log(self):
        return self.server.log()

    def close(self):
        self.server.close()


def start_target(imap_overrides=None, dovecot_host="127.0.0.2"):
    """start_target - the server under test.  DOVECOT_HOST: where the
    reference listens (127.0.0.1 for clients that check the certificate's
    name: it is issued for localhost and 127.0.0.1)."""
    if TARGET == "dovecot":
        return DovecotTarget(imap_overrides, host=dovecot_host)
    return MxTarget(imap_overrides)


# --- clients ---

def tls_context(target):
    return client_tls_context(target.cert)


def imaps(target, timeout=TIMEOUT):
    """imaps - imaplib over implicit TLS (993 style)."""
    return imaplib.IMAP4_SSL(target.host, target.port("imaps"),
                             ssl_context=tls_context(target), timeout=timeout)


def imap_plain(target, timeout=TIMEOUT):
    """imap_plain - imaplib on the plain port (STARTTLS not yet done)."""
    return imaplib.IMAP4(target.host, target.port("imap"), timeout=timeout)


def login(target, user, password, timeout=TIMEOUT):
    m = imaps(target, timeout=timeout)
    typ, _ = m.login(user, password)
    assert typ == "OK"
    return m


def ok(testcase, result, what=""):
    """ok - assert an imaplib (typ, data) answer is OK; returns data."""
    typ, data = result
    testcase.assertEqual(typ, "OK", "%s: %r" % (what, data))
    return data


def refused(call):
    """refused - the status of an imaplib call expected to fail: "NO" or
    "BAD" (imaplib raises on BAD), or "OK" if it did not fail."""
    try:
        return call()[0]
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as e:
        return "BAD" if " BAD " in " %s " % e or "BAD" in str(e) else "NO"


def untagged(m, name):
    """untagged - and forget the untagged responses NAME imaplib collected."""
    return m.untagged_responses.pop(name.upper(), [])


class ImapError(Exception):
    pass


class RawImap:
    """A small IMAP client over a raw (TLS) socket: what imaplib cannot do
    (IDLE, pipelining, hostile input, exact response text).  Responses are
    lines (bytes, without CRLF) with literals inlined as {n}\\r\\n<data>."""

    def __init__(self, target, tls=True, port=None, timeout=TIMEOUT, sock=None):
        self.target = target
        if sock is None:
            raw = socket.create_connection(
                (target.host, port or target.port("imaps" if tls else "imap")), timeout=timeout)
            sock = tls_context(target).wrap_socket(raw) if tls else raw
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""
        self.tag_counter = 0
        self.greeting = self.read_line()

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        self.sock.sendall(data)

    def starttls(self):
        self.command(b"STARTTLS", check=True)
        self.sock = tls_context(self.target).wrap_socket(self.sock)
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by server")
        self.buf += chunk

    def read_line(self):
        """read_line - one response line with its literals inlined."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            line, self.buf = self.buf.split(b"\r\n", 1)
            out += line
            m = re.search(rb"\{(\d+)\}$", line)
            if not m:
                return out
            n = int(m.group(1))
            while len(self.buf) < n:
                self._fill()
            out += b"\r\n" + self.buf[:n]
            self.buf = self.buf[n:]

    def next_tag(self):
        self.tag_counter += 1
        return b"T%04d" % self.tag_counter

    def command(self, cmd, check=False, tag=None):
        """command - send TAG CMD and read up to the tagged answer; returns
        (status bytes e.g. b"OK", untagged lines, the tagged line)."""
        tag = tag or self.next_tag()
        if isinstance(cmd, str):
            cmd = cmd.encode()
        self.send(tag + b" " + cmd + b"\r\n")
        return self.read_until_tagged(tag, check=check)

    def read_until_tagged(self, tag, check=False):
        lines = []
        while True:
            line = self.read_line()
            if line.startswith(tag + b" "):
                status = line[len(tag) + 1:].split(b" ", 1)[0].upper()
                if check and status != b"OK":
                    raise ImapError("%r -> %r" % (tag, line))
                return status, lines, line
            lines.append(line)

    def login(self, user, password):
        status, lines, line = self.command(b"LOGIN %s %s" % (quote(user), quote(password)))
        if status != b"OK":
            raise ImapError(line)
        return lines

    def idle_start(self):
        tag = self.next_tag()
        self.send(tag + b" IDLE\r\n")
        line = self.read_line()
        if not line.startswith(b"+"):
            raise ImapError("IDLE refused: %r" % line)
        self.idle_tag = tag

    def wait_for(self, pattern, timeout=5.0):
        """wait_for - read untagged lines until one matches PATTERN (regex
        bytes); returns the lines read.  TimeoutError if none in time."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no %r within %.1fs; saw %r" % (pattern, timeout, seen))
            self.sock.settimeout(left)
            try:
                line = self.read_line()
            except socket.timeout:
                raise TimeoutError("no %r within %.1fs; saw %r" % (pattern, timeout, seen))
            seen.append(line)
            if re.search(pattern, line):
                self.sock.settimeout(TIMEOUT)
                return seen

    def idle_done(self):
        self.send(b"DONE\r\n")
        return self.read_until_tagged(self.idle_tag, check=True)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def quote(s):
    if isinstance(s, str):
        s = s.encode()
    return b'"' + s.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def server_still_serves(testcase, target, user, password):
    """server_still_serves - a fresh connection logs in, selects and logs out."""
    m = login(target, user, password)
    ok(testcase, m.select("INBOX"), "SELECT after abuse")
    m.logout()


# --- messages ---

def make_message(subject="test", body="hello\r\n", sender="Sender <sender@remote.test>",
                 to="rcpt@example.test", date=None, msgid=None, headers=(),
                 content_type=None, cte=None):
    """make_message - an RFC 5322 message as CRLF bytes."""
    lines = ["From: %s" % sender, "To: %s" % to, "Subject: %s" % subject,
             "Date: %s" % (date or email.utils.formatdate(localtime=False)),
             "Message-ID: %s" % (msgid or email.utils.make_msgid(domain="remote.test")),
             "MIME-Version: 1.0"]
    lines.append("Content-Type: %s" % (content_type or "text/plain; charset=us-ascii"))
    if cte:
        lines.append("Content-Transfer-Encoding: %s" % cte)
    lines += list(headers)
    data = "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n"
    if isinstance(body, str):
        body = body.encode("utf-8")
    return data + body


def japanese_iso2022(subject="会議の予定", body="明日の会議は東京で行います。\r\n"):
    """japanese_iso2022 - a message in ISO-2022-JP, as Japanese mailers send:
    subject in an RFC 2047 B-word, body 7bit ISO-2022-JP."""
    from email.header import Header
    encoded_subject = Header(subject, "iso-2022-jp").encode()
    return make_message(subject=encoded_subject, body=body.encode("iso-2022-jp"),
                        content_type="text/plain; charset=ISO-2022-JP", cte="7bit")


def japanese_utf8_base64(subject="請求書の送付",
                         body="請求書を添付いたします。よろしくお願いします。\r\n"):
    """japanese_utf8_base64 - a UTF-8 message with a base64 body and an
    RFC 2047 B-encoded subject."""
    import base64
    from email.header import Header
    encoded_subject = Header(subject, "utf-8").encode()
    payload = base64.encodebytes(body.encode("utf-8")).replace(b"\n", b"\r\n")
    return make_message(subject=encoded_subject, body=payload,
                        content_type="text/plain; charset=UTF-8", cte="base64")


def multipart_message(subject="multipart"):
    """multipart_message - multipart/mixed with a text part, a nested
    multipart/alternative (text + html) and a base64 attachment:
    part 1 = text/plain, 2 = multipart/alternative (2.1 text, 2.2 html),
    3 = application/octet-stream."""
    boundary, inner = "outer-boundary-42", "inner-boundary-17"
    body = ("This is a multi-part message in MIME format.\r\n"
            "--%(b)s\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "\r\n"
            "first part text\r\n"
            "--%(b)s\r\n"
            "Content-Type: multipart/alternative; boundary=\"%(i)s\"\r\n"
            "\r\n"
            "--%(i)s\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "\r\n"
            "alternative plain\r\n"
            "--%(i)s\r\n"
            "Content-Type: text/html; charset=us-ascii\r\n"
            "\r\n"
            "<p>alternative html</p>\r\n"
            "--%(i)s--\r\n"
            "--%(b)s\r\n"
            "Content-Type: application/octet-stream; name=\"data.bin\"\r\n"
            "Content-Disposition: attachment; filename=\"data.bin\"\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            "\r\n"
            "AAECAwQFBgcICQ==\r\n"
            "--%(b)s--\r\n") % {"b": boundary, "i": inner}
    return make_message(subject=subject, body=body,
                        content_type='multipart/mixed; boundary="%s"' % boundary)


def forwarded_message(subject="forwarded"):
    """forwarded_message - multipart/mixed: part 1 text/plain, part 2 a
    message/rfc822 (inner subject "inner message", inner body "inner body
    text")."""
    inner = make_message(subject="inner message", body="inner body text\r\n",
                         sender="Inner <inner@remote.test>", msgid="<inner@remote.test>")
    boundary = "fwd-boundary-9"
    body = (b"--%(b)s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            b"see the attached message\r\n"
            b"--%(b)s\r\nContent-Type: message/rfc822\r\n\r\n" % {b"b": boundary.encode()}
            + inner + b"\r\n--%s--\r\n" % boundary.encode())
    return make_message(subject=subject, body=body,
                        content_type='multipart/mixed; boundary="%s"' % boundary)


def fetch_map(data):
    """fetch_map - imaplib FETCH data -> {seq: raw bytes of the response}
    (a literal's bytes joined into its line)."""
    out = {}
    for item in data:
        if item is None or item == b")":
            continue
        if isinstance(item, tuple):
            head, literal = item
            seq = int(head.split(b" ", 1)[0])
            out[seq] = out.get(seq, b"") + head + b"\r\n" + literal
        else:
            seq = int(item.split(b" ", 1)[0])
            out[seq] = out.get(seq, b"") + item
    return out

"""inbound_testlib - what the mx-inbound integration tests share: a raw SMTP
client for protocol abuse (smtplib cannot send broken input), polling, and
the process memory probe. Standard library only.

Every socket has a timeout: a test that waits for a reply that never comes
fails after TIMEOUT seconds instead of hanging the suite."""

import os
import re
import socket
import ssl
import time
import unittest

from mxlaunch import Slapd
from mxlaunch.inbound import Inbound, TestSink, client_tls_context

TIMEOUT = 15.0

_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


class Reply:
    """One SMTP reply: code, the text of each line, the enhanced code."""

    def __init__(self, code, lines):
        self.code = code
        self.lines = lines
        first = lines[-1].split(" ", 1) if lines else [""]
        self.enhanced = first[0] if _ENHANCED.match(first[0]) else None
        self.text = "\n".join(lines)

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.text)


class ConnectionClosed(Exception):
    """The server closed the connection where a reply was expected."""


class RawSMTP:
    """A byte-exact SMTP client over one socket (plain, or TLS after
    starttls()). send() writes exactly what it is given, in one write."""

    def __init__(self, port, host="127.0.0.1", timeout=TIMEOUT, tls_context=None,
                 read_greeting=True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        if tls_context is not None:
            self.sock = tls_context.wrap_socket(self.sock, server_hostname="mx.example.test")
        self.buf = b""
        self.greeting = self.reply() if read_greeting else None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ConnectionClosed("server closed the connection; unparsed: %r" % self.buf[:200])
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode("utf-8", "replace")

    def reply(self):
        lines = []
        while True:
            line = self.line()
            if len(line) < 3 or not line[:3].isdigit():
                raise AssertionError("malformed reply line %r" % line)
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return Reply(int(line[:3]), lines)
            if line[3] != "-":
                raise AssertionError("malformed reply line %r" % line)

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def ehlo(self, name="client.example.org"):
        reply = self.cmd("EHLO " + name)
        if reply.code != 250:
            raise AssertionError("EHLO refused: %r" % reply)
        return reply

    def is_closed(self, timeout=5.0):
        """is_closed - True when the server closed the connection (EOF or
        reset) within timeout with nothing more to read."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, ssl.SSLError):
            return False
        finally:
            try:
                self.sock.settimeout(TIMEOUT)
            except OSError:
                pass
        if chunk:
            self.buf += chunk
            return False
        return True

    def read_until_closed(self):
        """read_until_closed - every reply until the server closes."""
        out = []
        while True:
            try:
                out.append(self.reply())
            except ConnectionClosed:
                return out

    def starttls(self, context):
        """starttls - TLS handshake over the same socket; returns the reply
        to STARTTLS. Nothing may be buffered unread (it would be plaintext
        injected before the handshake)."""
        reply = self.cmd("STARTTLS")
        if reply.code != 220:
            raise AssertionError("STARTTLS refused: %r" % reply)
        if self.buf:
            raise AssertionError("server sent data after 220 to STARTTLS: %r" % self.buf)
        self.sock = context.wrap_socket(self.sock, server_hostname="mx.example.test")
        return reply

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_until(predicate, timeout=20.0, what="condition", interval=0.05):
    """wait_until - poll predicate until true; AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def vmrss_kb(pid):
    """vmrss_kb - resident memory of a process (kB), from /proc."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def message(subject, body="Hello.\r\n", headers=()):
    """message - an RFC 5322 message (bytes, CRLF line ends)."""
    lines = ["From: <sender@example.org>", "To: <alice@example.test>", "Subject: " + subject]
    lines += list(headers)
    text = "\r\n".join(lines) + "\r\n\r\n" + body
    return text.encode("utf-8") if isinstance(text, str) else text


def queued_id(reply):
    """queued_id - the message id in "250 2.0.0 Ok: queued as ID"."""
    m = re.search(r"queued as (\S+)", reply.text if isinstance(reply, Reply) else reply)
    if not m:
        raise AssertionError("no queue id in %r" % (reply,))
    return m.group(1)


def no_sanitizer_report(mx):
    """no_sanitizer_report - the daemon's log holds no sanitizer report."""
    log = mx.log()
    for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
        if marker in log:
            return False
    return True


def all_files(directory):
    """all_files - every regular file below directory (relative paths)."""
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)



class InboundTestCase(unittest.TestCase):
    """A real slapd + mx-test-sink + mx-inbound per test class. Subclasses
    set inbound_kwargs / sink_kwargs. After every test the daemon must still
    run and its log must hold no sanitizer report."""

    inbound_kwargs = {}
    sink_kwargs = {}
    ldap = sink = mx = None

    @classmethod
    def setUpClass(cls):
        try:
            cls.ldap = Slapd()
            cls.sink = TestSink(**cls.sink_kwargs)
            cls.mx = Inbound(cls.ldap, cls.sink.endpoint, **cls.inbound_kwargs)
            cls.tls = client_tls_context(cls.mx.cert)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for name in ("mx", "sink", "ldap"):
            obj = getattr(cls, name, None)
            if obj is not None:
                obj.close()
                setattr(cls, name, None)

    def tearDown(self):
        if self.mx is not None:
            self.assertTrue(self.mx.running, "mx-inbound died; log:\n" + self.mx.log()[-3000:])
            self.assertTrue(no_sanitizer_report(self.mx),
                            "sanitizer report in the log:\n" + self.mx.log()[-6000:])
            # no session left a half-written message behind (aborted DATA,
            # refused BDAT, RSET, disconnects all remove their tmp file)
            tmp = os.path.join(self.mx.spool_dir, "tmp")
            wait_until(lambda: not all_files(tmp), 10, "an empty spool tmp/ (leaked files: %s)"
                       % all_files(tmp))

    def raw(self, instance="mta", **kw):
        return RawSMTP(self.mx.port(instance), **kw)

    def wait_delivered(self, queue_id, timeout=20.0):
        """wait_delivered - the sink holds queue_id and the spool is empty."""
        wait_until(lambda: queue_id in self.sink.messages(), timeout,
                   "message %s at the sink" % queue_id)
        wait_until(lambda: not self.mx.spool_entries(), timeout, "an empty spool")
        # mx-inbound removes the spool entry first and logs afterwards
        self.wait_logged("event=handoff.done id=%s " % queue_id)
        return self.sink.messages()[queue_id]

    def wait_logged(self, text, timeout=10.0):
        """wait_logged - text appears in mx-inbound's log (it is written
        after the action it reports, so a test must not race it)."""
        wait_until(lambda: text in self.mx.log(), timeout, "%r in the log" % text)

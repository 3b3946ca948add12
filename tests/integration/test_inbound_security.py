"""mx-inbound: security - the relay battery, LDAP filter metacharacters in
addresses, SMTP smuggling, STARTTLS command injection (CVE-2011-0411 class)
and the PROXY protocol v2 trust boundary. Real daemon, real slapd.

Run: ctest -R inbound_security"""

import os
import socket
import ssl
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from inbound_testlib import InboundTestCase, RawSMTP, TIMEOUT, queued_id  # noqa: E402

PROXY_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2_header(src, dst, src_port=4321, dst_port=25, command=1):
    """proxy_v2_header - a PROXY v2 header for IPv4 TCP (command 1 = PROXY,
    0 = LOCAL)."""
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", src_port, dst_port)
    return PROXY_SIG + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(body)) + body


class RelayTest(InboundTestCase):
    """The mta instance hosts example.test and relays for nobody."""

    def rcpt_reply(self, rcpt, sender="x@example.org"):
        with self.raw() as c:
            c.ehlo()
            self.assertEqual(c.cmd("MAIL FROM:<%s>" % sender).code, 250)
            return c.cmd("RCPT TO:<%s>" % rcpt)

    def test_relay_battery(self):
        # (address, acceptable (code, enhanced) replies)
        relay = {(550, "5.7.1"), (554, "5.7.1")}
        syntax = {(501, "5.1.3")}
        cases = [
            ("user%other.test@example.test", {(550, "5.7.1")}),
            ("user%other.test%example.test@example.test", {(550, "5.7.1")}),
            ("other.test!user@example.test", {(550, "5.7.1")}),
            ('"user@other.test"@example.test', {(550, "5.7.1")}),
            ('"user%other.test"@example.test', relay),
            ('"other.test!user"@example.test', relay),
            ("@example.test:user@other.test", relay),
            ("@example.test,@example.test:user@other.test", relay),
            ("user@other.test@example.test", syntax),
            ("user@[127.0.0.1]", {(554, "5.7.1")}),
            ("user@[IPv6:::1]", {(554, "5.7.1")}),
            ("postmaster@[127.0.0.1]", {(554, "5.7.1")}),
            ("user@example.test.", syntax | relay),
            ("alice@example.test.", syntax | relay),
            ("user@other.test", {(554, "5.7.1")}),
            ("user@sub.example.test", {(554, "5.7.1")}),
            ("user@example.test.other.test", {(554, "5.7.1")}),
        ]
        for rcpt, allowed in cases:
            with self.subTest(rcpt=rcpt):
                reply = self.rcpt_reply(rcpt)
                self.assertIn((reply.code, reply.enhanced), allowed, reply)

    def test_source_route_variant(self):
        # <@example.test:user@other.test> as a client would literally send it
        with self.raw() as c:
            c.ehlo()
            self.assertEqual(c.cmd("MAIL FROM:<x@example.org>").code, 250)
            reply = c.cmd("RCPT TO:<@example.test:user@other.test>")
            self.assertIn(reply.code, (550, 554))
            self.assertEqual(reply.enhanced, "5.7.1")

    def test_our_domain_in_sender_does_not_relay(self):
        for sender in ("alice@example.test", "postmaster@example.test", ""):
            with self.subTest(sender=sender):
                reply = self.rcpt_reply("user@other.test", sender=sender)
                self.assertEqual((reply.code, reply.enhanced), (554, "5.7.1"))

    def test_domain_case_insensitive(self):
        for rcpt in ("alice@EXAMPLE.TEST", "alice@Example.Test"):
            with self.subTest(rcpt=rcpt):
                self.assertEqual(self.rcpt_reply(rcpt).code, 250)

    def test_relay_refused_on_unauthenticated_msa_too(self):
        # the msa refuses MAIL before TLS+AUTH, so nothing can be relayed there
        with self.raw("msa") as c:
            c.ehlo()
            self.assertEqual(c.cmd("MAIL FROM:<x@example.org>").code, 530)
            self.assertEqual(c.cmd("RCPT TO:<user@other.test>").code, 503)

    def test_ldap_metacharacters(self):
        """Filter metacharacters must never widen the search: unknown (550
        5.1.1) or a syntax refusal (501 5.1.3), never 250, never our failure
        (451); "!" may also be taken for a bang path (550 5.7.1). One
        session per address: the refusals count as errors."""
        local_parts = [
            "*", "a*", "*e", "al*ce", '"(alice)"', "(alice)", '"alice)(mail=*"',
            "alice)(mail=*", "alice)(|(mail=*", '"*)(objectClass=*"', "\\2a", '"\\\\2a"',
            '"*"', "alice\\", '"al\\"ice"', "alice|bob", "&", "!alice", '"alice\\00"',
        ]
        allowed = {(550, "5.1.1"), (501, "5.1.3"), (550, "5.7.1")}
        for local in local_parts:
            with self.subTest(local=local):
                reply = self.rcpt_reply("%s@example.test" % local)
                self.assertIn((reply.code, reply.enhanced), allowed, reply)
        for rcpt in ("alice@*", "alice@example.*", "alice@*.test", "alice@example.test)(x=*",
                     "alice@(example.test)", "*@*"):
            with self.subTest(rcpt=rcpt):
                reply = self.rcpt_reply(rcpt)
                self.assertIn((reply.code, reply.enhanced), {(501, "5.1.3"), (554, "5.7.1")}, reply)
        self.assertNotIn("event=rcpt.ambiguous_address", self.mx.log())
        self.assertNotIn("event=rcpt.directory_unavailable", self.mx.log())


class SmugglingTest(InboundTestCase):
    """Only <CRLF>.<CRLF> ends DATA; look-alikes make the message refused."""

    def smuggle(self, payload, subject):
        """smuggle - send MAIL/RCPT/DATA, then the body with payload and the
        real terminator and QUIT in one write; every reply after 354."""
        with self.raw() as c:
            c.ehlo()
            self.assertEqual(c.cmd("MAIL FROM:<x@example.org>").code, 250)
            self.assertEqual(c.cmd("RCPT TO:<alice@example.test>").code, 250)
            self.assertEqual(c.cmd("DATA").code, 354)
            c.send(b"Subject: " + subject + b"\r\n\r\nfirst line" + payload +
                   b"\r\n.\r\nQUIT\r\n")
            return c.read_until_closed()

    def assert_no_smuggled(self, subject):
        time.sleep(0.5)  # time for a (wrong) hand-off to reach the sink
        for _, _, body in self.sink.messages().values():
            self.assertNotIn(subject, body)
            self.assertNotIn(b"smuggled", body)
        self.assertNotIn("from=evil@x", self.mx.log())
        self.assertEqual(self.mx.spool_entries(), [])

    def test_variants(self):
        variants = {
            b"lf-dot-lf": b"\n.\nsmuggled",
            b"crlf-dot-lf": b"\r\n.\nsmuggled",
            b"lf-dot-crlf": b"\n.\r\nsmuggled",
            b"cr-dot-crlf": b"\r.\r\nsmuggled",
            b"cr-dot-cr": b"\r.\rsmuggled",
            b"crlf-dot-cr": b"\r\n.\rsmuggled",
            b"bare-lf": b"\nsmuggled",
            b"bare-cr": b"\rsmuggled",
        }
        for name, payload in variants.items():
            with self.subTest(variant=name):
                subject = b"variant " + name
                replies = self.smuggle(payload, subject)
                codes = [r.code for r in replies]
                self.assertEqual(codes, [550, 221], replies)
                self.assertEqual(replies[0].enhanced, "5.6.0")
                self.assert_no_smuggled(subject)

    def test_smuggled_second_message(self):
        payload = (b"\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                   b"smuggled\r\n.\r\n")
        subject = b"classic smuggling"
        replies = self.smuggle(payload, subject)
        self.assertTrue(replies, "no reply at all")
        self.assertEqual((replies[0].code, replies[0].enhanced), (550, "5.6.0"), replies)
        # what follows the refused message are protocol errors, never a
        # transaction: no 250 for MAIL, no 354 for DATA
        for r in replies[1:]:
            self.assertNotIn(r.code, (250, 354), replies)
        self.assertEqual(replies[-1].code, 221)
        self.assert_no_smuggled(subject)

    def test_valid_message_still_accepted(self):
        """Control: the same session shape with a clean body is accepted."""
        replies = self.smuggle(b"\r\nsecond line", b"clean")
        self.assertEqual([r.code for r in replies], [250, 221], replies)
        qid = queued_id(replies[0])
        _, _, body = self.wait_delivered(qid)
        self.assertTrue(body.endswith(b"first line\r\nsecond line\r\n"))

    def test_nul_in_data_refused(self):
        replies = self.smuggle(b"\r\nnul\x00byte", b"nul")
        self.assertEqual(replies[0].code, 550, replies)
        self.assertEqual(replies[-1].code, 221)


class StartTlsInjectionTest(InboundTestCase):
    """Input pipelined after STARTTLS is never acted upon."""

    def test_pipelined_rset_discarded(self):
        with self.raw() as c:
            c.ehlo()
            c.send(b"STARTTLS\r\nRSET\r\n")  # one packet
            reply = c.reply()
            self.assertEqual(reply.code, 220)
            self.assertEqual(c.buf, b"")
            c.sock = self.tls.wrap_socket(c.sock, server_hostname="mx.example.test")
            c.send(b"EHLO client.example.org\r\n")
            first = c.reply()
            self.assertEqual(first.code, 250)
            self.assertTrue(first.lines[0].startswith("mx.example.test"),
                            "first reply after the handshake is not our EHLO's: %r" % first)
            self.assertIn("PIPELINING", first.lines)
            self.assertNotIn("STARTTLS", first.lines)
            self.assertEqual(c.cmd("NOOP").code, 250)
            self.assertEqual(c.buf, b"")
        self.assertIn("event=smtp.starttls_pipelined_input_discarded", self.mx.log())

    def test_pipelined_transaction_discarded(self):
        with self.raw() as c:
            c.ehlo()
            c.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<alice@example.test>\r\n")
            self.assertEqual(c.reply().code, 220)
            c.sock = self.tls.wrap_socket(c.sock, server_hostname="mx.example.test")
            self.assertEqual(c.cmd("EHLO client.example.org").code, 250)
            # the injected MAIL did not start a transaction
            self.assertEqual(c.cmd("RCPT TO:<alice@example.test>").code, 503)
            self.assertEqual(c.cmd("DATA").code, 503)

    def test_state_reset_after_starttls(self):
        with self.raw() as c:
            c.ehlo()
            self.assertEqual(c.cmd("MAIL FROM:<x@example.org>").code, 250)
            c.starttls(self.tls)
            # RFC 3207 4.2: the client must EHLO again; the MAIL is forgotten
            self.assertEqual(c.cmd("MAIL FROM:<x@example.org>").code, 503)
            c.ehlo()
            self.assertEqual(c.cmd("RCPT TO:<alice@example.test>").code, 503)
            self.assertEqual(c.cmd("STARTTLS").code, 503)

    def test_proxy_header_from_untrusted_client(self):
        """No proxy_from configured: a PROXY header is just bad SMTP."""
        with self.raw() as c:
            c.send(proxy_v2_header("203.0.113.9", "198.51.100.1"))
            replies = c.read_until_closed()
            self.assertTrue(replies)
            self.assertTrue(all(r.code >= 500 or r.code == 221 for r in replies), replies)
            self.assertTrue(any(500 <= r.code < 600 for r in replies), replies)
        self.assertNotIn("peer=203.0.113.9", self.mx.log())


class ProxyTest(InboundTestCase):
    """proxy_from = 127.0.0.1: every connection from it starts with PROXY v2."""

    inbound_kwargs = {"instance_overrides": {"mta": {"proxy_from": '[ "127.0.0.1" ]'},
                                             "msa": {"proxy_from": '[ "127.0.0.1" ]'}}}

    def test_proxied_address_used(self):
        with RawSMTP(self.mx.port("mta"), read_greeting=False) as c:
            c.send(proxy_v2_header("203.0.113.9", "198.51.100.1"))
            self.assertEqual(c.reply().code, 220)
            ehlo = c.ehlo()
            self.assertIn("[203.0.113.9]", ehlo.lines[0])
            self.assertEqual(c.cmd("MAIL FROM:<x@example.org>").code, 250)
            self.assertEqual(c.cmd("RCPT TO:<alice@example.test>").code, 250)
            self.assertEqual(c.cmd("DATA").code, 354)
            c.send(b"Subject: proxied\r\n\r\nx\r\n.\r\n")
            qid = queued_id(c.reply())
        self.assertIn("event=smtp.connect", self.mx.log())
        self.assertRegex(self.mx.log(), r"event=smtp\.connect sid=\S+ peer=203\.0\.113\.9 ")
        _, _, body = self.wait_delivered(qid)
        self.assertIn(b"[203.0.113.9]", body[:body.index(b"Subject:")])

    def test_header_split_across_writes(self):
        header = proxy_v2_header("203.0.113.10", "198.51.100.1")
        with RawSMTP(self.mx.port("mta"), read_greeting=False) as c:
            for i in range(0, len(header), 5):
                c.send(header[i:i + 5])
                time.sleep(0.02)
            self.assertEqual(c.reply().code, 220)
            self.assertIn("[203.0.113.10]", c.ehlo().lines[0])

    def test_local_command(self):
        """LOCAL (a balancer's health check): the connection's own address."""
        with RawSMTP(self.mx.port("mta"), read_greeting=False) as c:
            c.send(proxy_v2_header("203.0.113.11", "198.51.100.1", command=0))
            self.assertEqual(c.reply().code, 220)
            self.assertIn("[127.0.0.1]", c.ehlo().lines[0])

    def test_garbage_header_closes(self):
        with RawSMTP(self.mx.port("mta"), read_greeting=False) as c:
            c.send(b"EHLO client.example.org\r\n")
            self.assertTrue(c.is_closed(), "a trusted balancer sent no PROXY header")
            self.assertEqual(c.buf, b"", "the server answered instead of closing")
        with RawSMTP(self.mx.port("mta"), read_greeting=False) as c:
            bad = bytearray(proxy_v2_header("203.0.113.12", "198.51.100.1"))
            bad[12] = 0x31  # version 3
            c.send(bytes(bad))
            self.assertTrue(c.is_closed())
            self.assertEqual(c.buf, b"")
        self.assertIn("event=smtp.proxy_header_invalid", self.mx.log())
        self.assertNotIn("peer=203.0.113.12", self.mx.log())

    def _tls_after_proxy(self, header, one_write):
        """_tls_after_proxy - a RawSMTP over TLS on msa_tls after header.
        one_write: the header and the ClientHello in the same segment (as a
        balancer forwarding a fast client does)."""
        sock = socket.create_connection(("127.0.0.1", self.mx.port("msa_tls")), timeout=TIMEOUT)
        c = RawSMTP.__new__(RawSMTP)
        c.buf = b""
        try:
            if one_write:
                c.sock = BioSocket(sock, self.tls, header)
            else:
                sock.sendall(header)
                c.sock = self.tls.wrap_socket(sock, server_hostname="mx.example.test")
        except BaseException:
            sock.close()
            raise
        return c

    def test_implicit_tls_behind_balancer(self):
        """465 behind a balancer: PROXY header first, then the TLS handshake."""
        for one_write in (False, True):
            with self.subTest(one_write=one_write):
                header = proxy_v2_header("203.0.113.13", "198.51.100.1", dst_port=465)
                with self._tls_after_proxy(header, one_write) as c:
                    self.assertEqual(c.reply().code, 220)
                    ehlo = c.ehlo()
                    self.assertIn("[203.0.113.13]", ehlo.lines[0])
                    self.assertIn("AUTH PLAIN LOGIN", ehlo.lines)
                    self.assertEqual(c.cmd("QUIT").code, 221)


class BioSocket:
    """BioSocket - TLS client over a plain socket through memory BIOs, so the
    ClientHello can be sent in the same write as bytes that precede it."""

    def __init__(self, sock, context, prefix):
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing,
                                    server_hostname="mx.example.test")
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        sock.sendall(prefix + self.outgoing.read())
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._pull()
        self._flush()

    def _flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _pull(self):
        data = self.sock.recv(65536)
        if not data:
            self.incoming.write_eof()
            raise ConnectionResetError("closed during TLS")
        self.incoming.write(data)

    def sendall(self, data):
        self.tls.write(data)
        self._flush()

    def recv(self, n):
        while True:
            try:
                return self.tls.read(n)
            except ssl.SSLWantReadError:
                try:
                    self._pull()
                except ConnectionResetError:
                    return b""
            except ssl.SSLZeroReturnError:
                return b""

    def settimeout(self, t):
        self.sock.settimeout(t)

    def close(self):
        self.sock.close()

if __name__ == "__main__":
    unittest.main(verbosity=2)

"""mx-inbound: the submission (msa) instance on both ports - 587-style
(STARTTLS required) and 465-style (implicit TLS) - with smtplib and swaks:
TLS before AUTH, AUTH PLAIN/LOGIN against LDAP, sender ownership, RFC 6409
fix-ups, AUTH failure limits.

Run: ctest -R inbound_msa"""

import base64
import os
import re
import shutil
import smtplib
import ssl
import subprocess
import sys
import unittest
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from inbound_testlib import InboundTestCase, RawSMTP, TIMEOUT, queued_id, wait_until  # noqa: E402

SWAKS = shutil.which("swaks") or "/usr/bin/swaks"


def b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def plain(user, password, authzid=""):
    return b64("%s\0%s\0%s" % (authzid, user, password))


class MsaCase(InboundTestCase):
    def submission(self):
        """submission - smtplib on port msa after STARTTLS (not logged in)."""
        s = smtplib.SMTP("127.0.0.1", self.mx.port("msa"), local_hostname="laptop.example.org",
                         timeout=TIMEOUT)
        s.starttls(context=self.tls)
        s.ehlo()
        return s

    def submission_tls(self):
        s = smtplib.SMTP_SSL("127.0.0.1", self.mx.port("msa_tls"), context=self.tls,
                             local_hostname="laptop.example.org", timeout=TIMEOUT)
        s.ehlo()
        return s

    def raw_tls(self):
        """raw_tls - RawSMTP on msa after EHLO + STARTTLS + EHLO."""
        c = self.raw("msa")
        c.ehlo()
        c.starttls(self.tls)
        c.ehlo()
        return c


class SubmissionTest(MsaCase):

    def test_plaintext_port_requires_tls(self):
        with self.raw("msa") as c:
            ehlo = c.ehlo()
            self.assertIn("STARTTLS", ehlo.lines)
            self.assertFalse([l for l in ehlo.lines if l.startswith("AUTH")],
                             "AUTH offered before TLS")
            reply = c.cmd("MAIL FROM:<alice@example.test>")
            self.assertEqual((reply.code, reply.enhanced), (530, "5.7.0"))
            reply = c.cmd("AUTH PLAIN " + plain("alice@example.test", "alice-secret"))
            self.assertIn(reply.code, (530, 538))
            self.assertNotEqual(reply.code, 235)
            # after STARTTLS AUTH is offered
            c.starttls(self.tls)
            ehlo = c.ehlo()
            self.assertIn("AUTH PLAIN LOGIN", ehlo.lines)
            self.assertNotIn("STARTTLS", ehlo.lines)

    def test_mail_before_auth(self):
        with self.raw_tls() as c:
            reply = c.cmd("MAIL FROM:<alice@example.test>")
            self.assertEqual((reply.code, reply.enhanced), (530, "5.7.0"))

    def test_auth_plain_and_login(self):
        for user in ("alice@example.test", "alice"):
            for mech in ("PLAIN", "LOGIN"):
                with self.subTest(user=user, mech=mech):
                    s = self.submission()
                    try:
                        s.user, s.password = user, "alice-secret"
                        method = s.auth_plain if mech == "PLAIN" else s.auth_login
                        code, text = s.auth(mech, method)
                        self.assertEqual(code, 235)
                        self.assertTrue(text.startswith(b"2.7.0"))
                        # AUTH again is refused
                        self.assertEqual(s.docmd("AUTH", "PLAIN " + plain(user, "alice-secret"))[0],
                                         503)
                    finally:
                        s.quit()

    def test_auth_plain_two_step_and_cancel(self):
        with self.raw_tls() as c:
            self.assertEqual(c.cmd("AUTH PLAIN").code, 334)
            self.assertEqual(c.cmd("*").code, 501)
            self.assertEqual(c.cmd("AUTH LOGIN").code, 334)
            self.assertEqual(c.cmd(b64("alice@example.test")).code, 334)
            reply = c.cmd(b64("alice-secret"))
            self.assertEqual((reply.code, reply.enhanced), (235, "2.7.0"))

    def test_auth_failures(self):
        cases = [
            ("alice@example.test", "wrong-secret"),
            ("bob@example.test", "bob-secret"),          # disabled account
            ("erin@example.test", "erin-secret"),        # deleted account
            ("nobody@example.test", "nobody-secret"),
            ("*", "alice-secret"),                       # filter metacharacter
            ("alice)(uid=*", "alice-secret"),
        ]
        for user, password in cases:
            with self.subTest(user=user):
                with self.raw_tls() as c:
                    reply = c.cmd("AUTH PLAIN " + plain(user, password))
                    self.assertEqual((reply.code, reply.enhanced), (535, "5.7.8"), reply)
                    self.assertEqual(c.cmd("MAIL FROM:<alice@example.test>").code, 530)
        log = self.mx.log()
        self.assertNotIn("wrong-secret", log, "a password was logged")
        self.assertNotIn("bob-secret", log, "a password was logged")

    def test_authzid_other_than_authcid_refused(self):
        with self.raw_tls() as c:
            # carol's own credentials, asking to act as alice
            reply = c.cmd("AUTH PLAIN " + plain("carol@example.test", "carol-secret",
                                                authzid="alice@example.test"))
            self.assertEqual((reply.code, reply.enhanced), (535, "5.7.8"), reply)
            self.assertEqual(c.cmd("MAIL FROM:<alice@example.test>").code, 530)
            # the same authzid as authcid is fine
            reply = c.cmd("AUTH PLAIN " + plain("carol@example.test", "carol-secret",
                                                authzid="carol@example.test"))
            self.assertEqual(reply.code, 235)

    def test_empty_password_never_accepted(self):
        with self.raw_tls() as c:
            # RFC 4616: passwd = 1*SAFE, so PLAIN with an empty one is malformed
            reply = c.cmd("AUTH PLAIN " + plain("alice@example.test", ""))
            self.assertIn((reply.code, reply.enhanced), {(535, "5.7.8"), (501, "5.5.2")}, reply)
            self.assertEqual(c.cmd("AUTH LOGIN").code, 334)
            self.assertEqual(c.cmd(b64("alice@example.test")).code, 334)
            reply = c.cmd("")  # empty password
            self.assertEqual((reply.code, reply.enhanced), (535, "5.7.8"), reply)
            self.assertEqual(c.cmd("MAIL FROM:<alice@example.test>").code, 530)

    def test_auth_directory_down(self):
        with self.raw_tls() as c:
            self.ldap.stop()
            try:
                reply = c.cmd("AUTH PLAIN " + plain("carol@example.test", "carol-secret"))
            finally:
                self.ldap.start()
            self.assertEqual((reply.code, reply.enhanced), (454, "4.7.0"), reply)

        def works():
            with self.raw_tls() as c2:
                return c2.cmd("AUTH PLAIN " + plain("carol@example.test", "carol-secret")).code == 235
        wait_until(works, 15, "AUTH to work once slapd is back")

    def test_sender_ownership(self):
        s = self.submission()
        try:
            s.login("alice@example.test", "alice-secret")
            code, text = s.mail("carol@example.test")
            self.assertEqual((code, text[:5]), (553, b"5.7.1"))
            self.assertEqual(s.mail("<>")[0], 553)  # the null sender is nobody's
            self.assertEqual(s.mail("alice.smith@example.test")[0], 250)
            s.rset()
            self.assertEqual(s.mail("a@example.test")[0], 250)
            s.rset()
            self.assertEqual(s.mail("alice@EXAMPLE.TEST")[0], 250)
        finally:
            s.quit()

    def test_submit_adds_date_and_message_id(self):
        msg = b"From: Alice <alice@example.test>\r\nTo: carol@example.test\r\nSubject: bare\r\n\r\nhi\r\n"
        s = self.submission()
        try:
            s.login("alice@example.test", "alice-secret")
            s.mail("alice@example.test")
            s.rcpt("carol@example.test")
            code, text = s.data(msg)
            self.assertEqual(code, 250)
        finally:
            s.quit()
        qid = queued_id(text.decode())
        _, _, body = self.wait_delivered(qid)
        head = body[:body.index(b"\r\n\r\n")].decode()
        dates = re.findall(r"(?im)^Date:[ \t]*([^\r\n]*)", head)
        ids = re.findall(r"(?im)^Message-ID:[ \t]*([^\r\n]*)", head)
        self.assertEqual(len(dates), 1, head)
        self.assertEqual(len(ids), 1, head)
        self.assertRegex(dates[0], r"\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")
        self.assertRegex(ids[0], r"^<[^<>@\s]+@[^<>@\s]+>$")
        self.assertTrue(body.endswith(msg))
        env = self.sink.envelopes()[qid]
        self.assertEqual(env["auth_user"], ["alice@example.test"])

    def test_date_in_body_is_not_a_header(self):
        msg = (b"From: alice@example.test\r\nSubject: body date\r\n\r\n"
               b"Date: Tue, 1 Sep 2026 10:00:00 +0200\r\nMessage-ID: <not@header>\r\n")
        s = self.submission()
        try:
            s.login("alice", "alice-secret")
            s.mail("alice@example.test")
            s.rcpt("carol@example.test")
            code, text = s.data(msg)
            self.assertEqual(code, 250)
        finally:
            s.quit()
        _, _, body = self.wait_delivered(queued_id(text.decode()))
        head = body[:body.index(b"\r\n\r\n")].decode()
        self.assertEqual(len(re.findall(r"(?im)^Date:", head)), 1, head)
        self.assertEqual(len(re.findall(r"(?im)^Message-ID:", head)), 1, head)
        self.assertNotIn("<not@header>", head)

    def test_submit_keeps_own_date_and_message_id(self):
        date = "Tue, 1 Sep 2026 10:00:00 +0200"
        mid = "<own-id-123@laptop.example.org>"
        msg = ("From: alice@example.test\r\nTo: carol@example.test\r\nDate: %s\r\n"
               "Message-ID: %s\r\nSubject: own\r\n\r\nhi\r\n" % (date, mid)).encode()
        s = self.submission()
        try:
            s.login("alice", "alice-secret")
            s.mail("alice@example.test")
            s.rcpt("carol@example.test")
            code, text = s.data(msg)
            self.assertEqual(code, 250)
        finally:
            s.quit()
        _, _, body = self.wait_delivered(queued_id(text.decode()))
        head = body[:body.index(b"\r\n\r\n")].decode()
        self.assertEqual(re.findall(r"(?im)^Date:[ \t]*([^\r\n]*)", head), [date])
        self.assertEqual(re.findall(r"(?im)^Message-ID:[ \t]*([^\r\n]*)", head), [mid])

    def test_unqualified_addresses_qualified(self):
        with self.raw_tls() as c:
            self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "alice-secret")).code, 235)
            self.assertEqual(c.cmd("MAIL FROM:<alice>").code, 250)
            self.assertEqual(c.cmd("RCPT TO:<carol>").code, 250)
            self.assertEqual(c.cmd("DATA").code, 354)
            c.send(b"Subject: qualify\r\n\r\nx\r\n.\r\n")
            qid = queued_id(c.reply())
        sender, rcpts, _ = self.wait_delivered(qid)
        self.assertEqual(sender, "alice@example.test")
        self.assertEqual(rcpts, ["carol@example.test"])

    def test_unqualified_not_qualified_on_mta(self):
        with self.raw() as c:
            c.ehlo()
            self.assertEqual(c.cmd("MAIL FROM:<alice>").code, 501)

    def test_relay_for_authenticated_user(self):
        s = self.submission()
        try:
            s.login("alice@example.test", "alice-secret")
            s.mail("alice@example.test")
            self.assertEqual(s.rcpt("friend@partner.test")[0], 250)
            self.assertEqual(s.rcpt("someone@[192.0.2.7]")[0], 250)
            # the relay hacks stay refused even for a user
            self.assertEqual(s.rcpt("user%other.test@example.test")[0], 550)
            code, text = s.data(b"Subject: out\r\n\r\nhi\r\n")
            self.assertEqual(code, 250)
        finally:
            s.quit()
        _, rcpts, _ = self.wait_delivered(queued_id(text.decode()))
        self.assertEqual(rcpts, ["friend@partner.test", "someone@[192.0.2.7]"])

    def test_quoted_recipient_with_space(self):
        """A quoted local part may hold spaces; the spool entry must keep it
        whole (a 250 followed by a "damaged" entry would lose the mail)."""
        with self.raw_tls() as c:
            self.assertEqual(c.cmd("AUTH PLAIN " + plain("alice", "alice-secret")).code, 235)
            self.assertEqual(c.cmd("MAIL FROM:<alice@example.test>").code, 250)
            self.assertEqual(c.cmd('RCPT TO:<"john doe"@partner.test> '
                                   'ORCPT=rfc822;"john+20doe"@partner.test').code, 250)
            self.assertEqual(c.cmd("RCPT TO:<carol@example.test>").code, 250)
            self.assertEqual(c.cmd("DATA").code, 354)
            c.send(b"Subject: spaces\r\n\r\nx\r\n.\r\n")
            qid = queued_id(c.reply())
        _, rcpts, _ = self.wait_delivered(qid)
        self.assertEqual(rcpts, ['"john doe"@partner.test', "carol@example.test"])
        self.assertEqual(self.sink.envelopes()[qid]["orcpt"],
                         ['rfc822;"john doe"@partner.test', ""])
        self.assertNotIn("handoff.damaged_entry", self.mx.log())

    def test_implicit_tls_port(self):
        s = self.submission_tls()
        try:
            self.assertTrue(s.has_extn("auth"))
            self.assertFalse(s.has_extn("starttls"))
            self.assertIn(s.sock.version(), ("TLSv1.2", "TLSv1.3"))
            code, _ = s.docmd("MAIL", "FROM:<alice@example.test>")
            self.assertEqual(code, 530)
            s.login("alice@example.test", "alice-secret")
            s.mail("alice@example.test")
            s.rcpt("carol@example.test")
            s.rcpt("friend@partner.test")
            code, text = s.data(b"Subject: implicit\r\n\r\nvia 465\r\n")
            self.assertEqual(code, 250)
        finally:
            s.quit()
        sender, rcpts, body = self.wait_delivered(queued_id(text.decode()))
        self.assertEqual((sender, rcpts), ("alice@example.test",
                                           ["carol@example.test", "friend@partner.test"]))
        self.assertIn(b"TLS", body[:body.index(b"Subject:")])

    def test_implicit_tls_refuses_wrong_password(self):
        s = self.submission_tls()
        try:
            with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
                s.login("alice@example.test", "nope")
            self.assertEqual(cm.exception.smtp_code, 535)
        finally:
            s.close()

    def _old_tls_context(self, max_version):
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/1.1 on purpose
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers("ALL:@SECLEVEL=0")  # let the client itself offer old versions
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = max_version
        return ctx

    def test_tls_version_at_least_1_2(self):
        for port in ("msa", "msa_tls"):
            with self.subTest(port=port):
                # control: this client can talk TLS 1.2
                ok = self._old_tls_context(ssl.TLSVersion.TLSv1_2)
                if port == "msa":
                    with self.raw("msa") as c:
                        c.ehlo()
                        c.starttls(ok)
                        self.assertEqual(c.sock.version(), "TLSv1.2")
                else:
                    with RawSMTP(self.mx.port(port), tls_context=ok) as c:
                        self.assertEqual(c.sock.version(), "TLSv1.2")
                old = self._old_tls_context(ssl.TLSVersion.TLSv1_1)
                with self.assertRaises(ssl.SSLError) as cm:
                    if port == "msa":
                        with self.raw("msa") as c:
                            c.ehlo()
                            c.starttls(old)
                            c.cmd("EHLO x")
                    else:
                        with RawSMTP(self.mx.port(port), tls_context=old) as c:
                            pass
                # the server refused with a protocol_version alert (not the
                # client's own library, not a bare EOF)
                self.assertIn("PROTOCOL_VERSION", str(cm.exception))


class SwaksTest(MsaCase):

    def swaks(self, *args):
        argv = [SWAKS, "--server", "127.0.0.1:%d" % self.mx.port(args[0])] + list(args[1:])
        return subprocess.run(argv + ["--timeout", "15"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=60, text=True)

    @unittest.skipUnless(os.path.exists(SWAKS), "swaks not installed")
    def test_swaks_starttls(self):
        r = self.swaks("msa", "--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test",
                       "--auth-password", "alice-secret", "--from", "alice@example.test",
                       "--to", "carol@example.test", "--header", "Subject: swaks starttls")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("<-  220 2.0.0", r.stdout)
        self.assertIn("<~  235 2.7.0", r.stdout)
        m = re.search(r"<~  250 2.0.0 Ok: queued as (\S+)", r.stdout)
        self.assertTrue(m, r.stdout)
        sender, rcpts, body = self.wait_delivered(m.group(1))
        self.assertEqual((sender, rcpts), ("alice@example.test", ["carol@example.test"]))
        self.assertIn(b"Subject: swaks starttls", body)

    @unittest.skipUnless(os.path.exists(SWAKS), "swaks not installed")
    def test_swaks_implicit_tls(self):
        r = self.swaks("msa_tls", "--tlsc", "--auth", "LOGIN", "--auth-user", "alice",
                       "--auth-password", "alice-secret", "--from", "alice.smith@example.test",
                       "--to", "dave@example.test", "--header", "Subject: swaks tlsc")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("<~  235 2.7.0", r.stdout)
        m = re.search(r"<~  250 2.0.0 Ok: queued as (\S+)", r.stdout)
        self.assertTrue(m, r.stdout)
        sender, rcpts, _ = self.wait_delivered(m.group(1))
        self.assertEqual((sender, rcpts), ("alice.smith@example.test", ["dave@example.test"]))

    @unittest.skipUnless(os.path.exists(SWAKS), "swaks not installed")
    def test_swaks_wrong_password_fails(self):
        r = self.swaks("msa", "--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test",
                       "--auth-password", "not-it", "--from", "alice@example.test",
                       "--to", "carol@example.test")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("535 5.7.8", r.stdout)

    @unittest.skipUnless(os.path.exists(SWAKS), "swaks not installed")
    def test_swaks_without_tls_refused(self):
        r = self.swaks("msa", "--auth", "PLAIN", "--auth-user", "alice@example.test",
                       "--auth-password", "alice-secret", "--from", "alice@example.test",
                       "--to", "carol@example.test")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertNotIn("235 ", r.stdout)


class AuthLimitTest(MsaCase):
    """Failed-AUTH limits: 2 per account, 5 per client address."""

    inbound_kwargs = {"inbound_overrides": {"auth_max_failures_per_ip": "5",
                                            "auth_max_failures_per_account": "2"}}

    def auth(self, user, password):
        with self.raw_tls() as c:
            return c.cmd("AUTH PLAIN " + plain(user, password))

    def test_failure_limits(self):
        # two wrong passwords for carol, each login spelled differently
        self.assertEqual(self.auth("carol", "bad").code, 535)
        self.assertEqual(self.auth("CAROL@Example.Test", "bad").code, 535)
        # carol's account is now blocked, however it is spelled, even with
        # her right password
        for login in ("carol@example.test", "Carol"):
            reply = self.auth(login, "carol-secret")
            self.assertEqual((reply.code, reply.enhanced), (454, "4.7.0"), login)
        # the address has 2 failures of 5: alice still logs in
        self.assertEqual(self.auth("alice@example.test", "alice-secret").code, 235)
        # unknown logins count for the address (not for any account)
        for user in ("frank", "nobody1", "nobody2"):
            self.assertEqual(self.auth(user, "bad").code, 535)
        # 5 failures from 127.0.0.1: nobody from here gets in now
        reply = self.auth("alice@example.test", "alice-secret")
        self.assertEqual((reply.code, reply.enhanced), (454, "4.7.0"))
        self.assertIn("event=smtp.auth_ip_blocked", self.mx.log())
        self.assertIn("event=smtp.auth_account_blocked", self.mx.log())

if __name__ == "__main__":
    unittest.main(verbosity=2)

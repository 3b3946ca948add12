"""test_pop3 - mx-imapd's POP3 side as Python's poplib uses it: RFC 1939
(STAT LIST UIDL RETR TOP DELE RSET NOOP QUIT, the UPDATE state), RFC 2449
CAPA, RFC 2595 STLS, RFC 5034 AUTH PLAIN.  Mail arrives by SMTP through
mx-inbound -> mx-delivery -> mx-store; passwords are checked by LDAP bind.

MX_IMAP_TARGET=dovecot runs the file against Dovecot's POP3 server.
"""

import base64
import os
import poplib
import shutil
import socket
import subprocess
import unittest

from imap_testlib import (TIMEOUT, login, make_message, ok, skip_unless_mx, start_target,
                          tls_context)


def pop3s(target):
    return poplib.POP3_SSL(target.host, target.port("pop3s"), context=tls_context(target),
                           timeout=TIMEOUT)


def pop3_plain(target):
    return poplib.POP3(target.host, target.port("pop3"), timeout=TIMEOUT)


class Pop3Case(unittest.TestCase):
    target = None

    @classmethod
    def setUpClass(cls):
        cls.target = start_target()

    @classmethod
    def tearDownClass(cls):
        if cls.target:
            cls.target.close()

    def mailbox(self, n=3):
        user, pw = self.target.add_account()
        self.messages = [make_message(subject="pop %d" % i,
                                      body="line one of %d\r\n.starts with a dot\r\n"
                                           "line three\r\nline four\r\n" % i)
                         for i in range(1, n + 1)]
        if n:
            self.target.deliver_many(user, self.messages)
        return user, pw

    def session(self, user, pw):
        p = pop3s(self.target)
        p.user(user)
        p.pass_(pw)
        self.addCleanup(_quit_quietly, p)
        return p


def _quit_quietly(p):
    try:
        p.quit()
    except (poplib.error_proto, OSError, EOFError, AttributeError):
        pass  # already quit (poplib drops its socket) or dropped by the test


def retr_bytes(p, which):
    resp, lines, octets = p.retr(which)
    return b"\r\n".join(lines) + b"\r\n"


class TestPop3Auth(Pop3Case):

    def test_capa_and_stls_before_user(self):
        user, pw = self.mailbox(0)
        p = pop3_plain(self.target)
        self.addCleanup(_quit_quietly, p)
        self.assertTrue(p.getwelcome().startswith(b"+OK"))
        capa = p.capa()
        self.assertIn("STLS", capa)
        # USER/PASS are refused on the unencrypted connection
        with self.assertRaises(poplib.error_proto):
            p.user(user)
            p.pass_(pw)
        p.stls(context=tls_context(self.target))
        capa = p.capa()
        self.assertNotIn("STLS", capa)
        self.assertIn("USER", capa)
        self.assertIn("UIDL", capa)
        self.assertIn("TOP", capa)
        self.assertIn("PLAIN", capa.get("SASL", []))
        p.user(user)
        self.assertTrue(p.pass_(pw).startswith(b"+OK"))

    def test_pop3s_login(self):
        user, pw = self.mailbox(1)
        p = self.session(user, pw)
        self.assertEqual(p.stat()[0], 1)

    def test_wrong_password(self):
        user, _ = self.mailbox(0)
        p = pop3s(self.target)
        self.addCleanup(_quit_quietly, p)
        p.user(user)
        with self.assertRaises(poplib.error_proto) as cm:
            p.pass_("wrong-secret")
        self.assertTrue(str(cm.exception).startswith("b'-ERR"), cm.exception)

    def test_disabled_account_clear_error(self):
        user, pw = self.target.disabled_account()
        p = pop3s(self.target)
        self.addCleanup(_quit_quietly, p)
        with self.assertRaises(poplib.error_proto) as cm:
            p.user(user)
            p.pass_(pw)
        self.assertIn("disabled", str(cm.exception).lower())

    def test_auth_plain_initial_response(self):
        user, pw = self.mailbox(1)
        p = pop3s(self.target)
        self.addCleanup(_quit_quietly, p)
        token = base64.b64encode(("\0%s\0%s" % (user, pw)).encode())
        self.assertTrue(p._shortcmd("AUTH PLAIN " + token.decode()).startswith(b"+OK"))
        self.assertEqual(p.stat()[0], 1)

    def test_auth_plain_continuation(self):
        user, pw = self.mailbox(0)
        p = pop3s(self.target)
        self.addCleanup(_quit_quietly, p)
        p._putcmd("AUTH PLAIN")
        line, _ = p._getline()
        self.assertTrue(line.startswith(b"+"), line)
        token = base64.b64encode(("\0%s\0%s" % (user, pw)).encode())
        p._putcmd(token.decode())
        self.assertTrue(p._getresp().startswith(b"+OK"))

    def test_auth_plain_wrong(self):
        user, _ = self.mailbox(0)
        p = pop3s(self.target)
        self.addCleanup(_quit_quietly, p)
        token = base64.b64encode(("\0%s\0bad" % user).encode())
        with self.assertRaises(poplib.error_proto):
            p._shortcmd("AUTH PLAIN " + token.decode())

    def test_commands_before_login_refused(self):
        # each on its own connection: a server may hang up after a few
        # errors in the AUTHORIZATION state
        for cmd in ("STAT", "LIST", "RETR 1", "DELE 1", "UIDL"):
            p = pop3s(self.target)
            self.addCleanup(_quit_quietly, p)
            with self.assertRaises(poplib.error_proto, msg=cmd):
                p._shortcmd(cmd)


class TestPop3Transaction(Pop3Case):

    def test_stat_list_retr_sizes(self):
        user, pw = self.mailbox(3)
        p = self.session(user, pw)
        count, size = p.stat()
        self.assertEqual(count, 3)
        resp, listing, _ = p.list()
        sizes = {int(a): int(b) for a, b in (l.split() for l in listing)}
        self.assertEqual(sorted(sizes), [1, 2, 3])
        self.assertEqual(sum(sizes.values()), size)
        for n in (1, 2, 3):
            body = retr_bytes(p, n)
            # RETR undoes dot-stuffing (poplib) and the size is the octets
            self.assertIn(b"\r\n.starts with a dot\r\n", body)
            self.assertEqual(len(body), sizes[n], "message %d" % n)
            self.assertIn(b"Subject: pop %d" % n, body)
        self.assertTrue(p.list(2).startswith(b"+OK 2 "))
        with self.assertRaises(poplib.error_proto):
            p.list(9)
        with self.assertRaises(poplib.error_proto):
            p.retr(9)

    def test_retr_is_the_delivered_message(self):
        user, pw = self.mailbox(1)
        p = self.session(user, pw)
        body = retr_bytes(p, 1)
        # the store may add trace headers (Delivered-To, Received) at the top
        self.assertTrue(body.endswith(self.messages[0]), body[-200:])

    def test_top(self):
        user, pw = self.mailbox(1)
        p = self.session(user, pw)
        resp, lines, _ = p.top(1, 0)
        text = b"\r\n".join(lines)
        self.assertIn(b"Subject: pop 1", text)
        self.assertNotIn(b"line one", text)
        resp, lines, _ = p.top(1, 2)
        self.assertEqual(lines[-2:], [b"line one of 1", b".starts with a dot"])
        with self.assertRaises(poplib.error_proto):
            p.top(5, 0)

    @skip_unless_mx("the store's index is ours to destroy")
    def test_uidl_survives_a_lost_index(self):
        # The index is lost and rebuilt from the Maildir: UIDVALIDITY and
        # UIDs change (IMAP clients resynchronise), POP3 UIDLs must not, or
        # every POP3 client downloads the whole mailbox again.
        user, pw = self.mailbox(3)
        p = self.session(user, pw)
        before = dict(l.split() for l in p.uidl()[1])
        p.quit()
        store = self.target.cluster.shard_of(user)
        store.stop()
        shutil.rmtree(os.path.join(store.root, ".index"))
        tool = os.path.join(os.environ["MX_BUILD_DIR"], "store", "mxctl-store")
        out = subprocess.run([tool, "-c", store.config_path, "reindex", user],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        store.start()
        p = self.session(user, pw)
        after = dict(l.split() for l in p.uidl()[1])
        self.assertEqual(sorted(after.values()), sorted(before.values()))
        for n, uidl in after.items():  # and each still names the same message
            self.assertEqual(retr_bytes(p, int(n)).count(b"Subject: pop"), 1)

    def test_uidl_stable_across_sessions(self):
        user, pw = self.mailbox(3)
        p = self.session(user, pw)
        resp, first, _ = p.uidl()
        uids = dict(l.split() for l in first)
        self.assertEqual(len(set(uids.values())), 3)
        for uid in uids.values():
            # RFC 1939: 1 to 70 characters 0x21-0x7E
            self.assertTrue(1 <= len(uid) <= 70 and all(0x21 <= c <= 0x7e for c in uid), uid)
        self.assertEqual(p.uidl(2).split()[-1], uids[b"2"])
        p.quit()
        # an IMAP flag change and a new message do not change them
        m = login(self.target, user, pw)
        m.select("INBOX")
        ok(self, m.store("1", "+FLAGS", "(\\Flagged)"), "STORE")
        m.logout()
        self.target.deliver(user, make_message(subject="fourth"))
        p = self.session(user, pw)
        resp, again, _ = p.uidl()
        again = dict(l.split() for l in again)
        self.assertEqual({k: again[k] for k in uids}, uids)
        self.assertEqual(len(again), 4)
        self.assertNotIn(again[b"4"], uids.values())

    def test_dele_rset_and_quit(self):
        user, pw = self.mailbox(3)
        p = self.session(user, pw)
        uid3 = p.uidl(3).split()[-1]
        p.dele(1)
        with self.assertRaises(poplib.error_proto):
            p.retr(1)  # marked deleted
        with self.assertRaises(poplib.error_proto):
            p.dele(1)  # already deleted
        self.assertEqual(p.stat()[0], 2)
        p.rset()
        self.assertEqual(p.stat()[0], 3)
        p.dele(2)
        self.assertTrue(p.noop().startswith(b"+OK"))
        self.assertTrue(p.quit().startswith(b"+OK"))
        p = self.session(user, pw)
        self.assertEqual(p.stat()[0], 2)
        # message numbers are renumbered, UIDs are not
        self.assertEqual(p.uidl(2).split()[-1], uid3)

    def test_dropped_connection_deletes_nothing(self):
        user, pw = self.mailbox(2)
        p = self.session(user, pw)
        p.dele(1)
        p.dele(2)
        # drop without QUIT: no UPDATE state, nothing is deleted
        p.sock.shutdown(socket.SHUT_RDWR)
        p.sock.close()
        p = self.session(user, pw)
        self.assertEqual(p.stat()[0], 2)

    def test_last_not_supported(self):
        user, pw = self.mailbox(1)
        p = self.session(user, pw)
        with self.assertRaises(poplib.error_proto):
            p._shortcmd("LAST")

    def test_unknown_command(self):
        user, pw = self.mailbox(0)
        p = self.session(user, pw)
        with self.assertRaises(poplib.error_proto):
            p._shortcmd("XYZZY")
        self.assertTrue(p.noop().startswith(b"+OK"))

    def test_deleted_by_imap_gone_in_pop(self):
        user, pw = self.mailbox(2)
        m = login(self.target, user, pw)
        m.select("INBOX")
        m.store("1", "+FLAGS", "(\\Deleted)")
        m.expunge()
        m.logout()
        p = self.session(user, pw)
        self.assertEqual(p.stat()[0], 1)
        self.assertIn(b"Subject: pop 2", retr_bytes(p, 1))


if __name__ == "__main__":
    unittest.main(verbosity=2)

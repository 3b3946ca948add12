"""test_imap_extensions - the IMAP extensions issue 5 lists, as their RFCs
define them: IDLE (2177) with changes made by other sessions (and other
mx-imapd instances), ENABLE (5161), CONDSTORE/QRESYNC (7162), QUOTA (9208),
SORT/THREAD (5256), ESEARCH (4731), LIST-EXTENDED (5258), LIST-STATUS
(5819), SPECIAL-USE (6154), CHILDREN (3348), ID (2971), COMPRESS=DEFLATE
(4978, optional), UTF8=ACCEPT (6855), UNSELECT (3691).

Real mail: messages arrive by SMTP through mx-inbound -> mx-delivery ->
mx-store.  MX_IMAP_TARGET=dovecot runs the file against Dovecot; what
Dovecot does not implement is skipped there, never on mx-imapd.
"""

import base64
import re
import time
import unittest
import zlib

from imap_testlib import RawImap, is_mx, make_message, quote, skip_unless_mx, start_target

EVENT_TIMEOUT = 5.0  # "promptly": a change reaches an IDLE session within this


def caps(r):
    status, lines, _ = r.command(b"CAPABILITY")
    found = set()
    for line in lines:
        if line.startswith(b"* CAPABILITY"):
            found |= set(line.upper().split()[2:])
    return found


class ExtCase(unittest.TestCase):
    target = None

    @classmethod
    def setUpClass(cls):
        cls.target = start_target()

    @classmethod
    def tearDownClass(cls):
        if cls.target:
            cls.target.close()

    def raw(self, user=None, password=None, tls=True):
        r = RawImap(self.target, tls=tls)
        self.addCleanup(r.close)
        if user:
            r.login(user, password)
        return r

    def user_with_mail(self, n=3, **kw):
        user, pw = self.target.add_account(**kw)
        if n:
            self.target.deliver_many(user, [make_message(subject="message %d" % i,
                                                         body="text %d\r\n" % i)
                                            for i in range(1, n + 1)])
        return user, pw

    def require(self, r, cap):
        """require - CAP must be advertised by mx-imapd; Dovecot may lack it."""
        have = caps(r)
        if cap.upper() not in have:
            if not is_mx():
                self.skipTest("%s not offered by %s" % (cap, self.target.kind))
            self.fail("%s not advertised after login: %s" % (cap, sorted(have)))

    def cmd_ok(self, r, cmd):
        status, lines, line = r.command(cmd)
        self.assertEqual(status, b"OK", "%r -> %r %r" % (cmd, line, lines[-3:]))
        return lines


class TestIdle(ExtCase):
    """RFC 2177 IDLE; untagged updates reach every session of a mailbox."""

    def idle_session(self, user, pw):
        r = self.raw(user, pw)
        self.require(r, b"IDLE")
        self.cmd_ok(r, b"SELECT INBOX")
        r.idle_start()
        return r

    def test_idle_sees_new_mail_from_smtp(self):
        user, pw = self.user_with_mail(1)
        r = self.idle_session(user, pw)
        self.target.deliver(user, make_message(subject="arrives during IDLE"))
        r.wait_for(rb"^\* 2 EXISTS", timeout=EVENT_TIMEOUT)
        r.idle_done()

    def test_idle_sees_flags_and_expunge_from_other_session(self):
        user, pw = self.user_with_mail(3)
        r = self.idle_session(user, pw)
        other = self.raw(user, pw)
        self.cmd_ok(other, b"SELECT INBOX")
        self.cmd_ok(other, b"STORE 2 +FLAGS (\\Flagged)")
        seen = r.wait_for(rb"^\* 2 FETCH \(.*FLAGS \(", timeout=EVENT_TIMEOUT)
        self.assertIn(b"\\Flagged", seen[-1])
        self.cmd_ok(other, b"STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.cmd_ok(other, b"EXPUNGE")
        r.wait_for(rb"^\* 1 EXPUNGE", timeout=EVENT_TIMEOUT)
        r.idle_done()
        status, lines, _ = r.command(b"FETCH 1:* (FLAGS)")
        self.assertEqual(len([l for l in lines if b" FETCH " in l]), 2, lines)

    def test_idle_sees_append_from_other_session(self):
        user, pw = self.user_with_mail(0)
        r = self.idle_session(user, pw)
        other = self.raw(user, pw)
        msg = make_message(subject="appended elsewhere")
        self.cmd_ok(other, b"APPEND INBOX {%d+}\r\n%s" % (len(msg), msg))
        r.wait_for(rb"^\* 1 EXISTS", timeout=EVENT_TIMEOUT)
        r.idle_done()

    def test_non_idle_session_sees_changes_at_noop(self):
        user, pw = self.user_with_mail(2)
        r = self.raw(user, pw)
        self.cmd_ok(r, b"SELECT INBOX")
        other = self.raw(user, pw)
        self.cmd_ok(other, b"SELECT INBOX")
        self.cmd_ok(other, b"STORE 1 +FLAGS (\\Answered)")
        self.target.deliver(user, make_message(subject="third"))
        deadline = time.monotonic() + EVENT_TIMEOUT
        text = b""
        while time.monotonic() < deadline:
            text += b"\n".join(self.cmd_ok(r, b"NOOP")) + b"\n"
            if b"* 3 EXISTS" in text and b"\\Answered" in text:
                break
            time.sleep(0.2)
        self.assertIn(b"* 3 EXISTS", text)
        self.assertRegex(text, rb"\* 1 FETCH \(.*\\Answered")
        # expunges are only reported at NOOP, not during FETCH/STORE/SEARCH
        # of the other session (RFC 3501 7.4.1); NOOP must report them
        self.cmd_ok(other, b"STORE 2 +FLAGS.SILENT (\\Deleted)")
        self.cmd_ok(other, b"EXPUNGE")
        deadline = time.monotonic() + EVENT_TIMEOUT
        text = b""
        while time.monotonic() < deadline and b"* 2 EXPUNGE" not in text:
            text += b"\n".join(self.cmd_ok(r, b"NOOP")) + b"\n"
            time.sleep(0.2)
        self.assertIn(b"* 2 EXPUNGE", text)

    def test_idle_done_then_commands_work(self):
        user, pw = self.user_with_mail(1)
        r = self.idle_session(user, pw)
        r.idle_done()
        self.cmd_ok(r, b"NOOP")
        self.cmd_ok(r, b"FETCH 1 (UID)")

    @skip_unless_mx("several mx-imapd instances over one store")
    def test_idle_across_frontend_instances(self):
        from mxlaunch import Imapd
        cluster = self.target.cluster
        second = Imapd(cluster.ldap, cluster.shards, log_level="info", node_id=5,
                       cert=cluster.imapd.cert, key=cluster.imapd.key)
        self.addCleanup(second.close)
        user, pw = self.user_with_mail(1)
        r = self.idle_session(user, pw)
        other = RawImap(self.target, port=second.port("imaps"))
        self.addCleanup(other.close)
        other.login(user, pw)
        self.cmd_ok(other, b"SELECT INBOX")
        self.cmd_ok(other, b"STORE 1 +FLAGS (\\Flagged)")
        r.wait_for(rb"^\* 1 FETCH \(.*\\Flagged", timeout=EVENT_TIMEOUT)
        msg = make_message(subject="via the other frontend")
        self.cmd_ok(other, b"APPEND INBOX {%d+}\r\n%s" % (len(msg), msg))
        r.wait_for(rb"^\* 2 EXISTS", timeout=EVENT_TIMEOUT)
        r.idle_done()


class TestEnableCondstoreQresync(ExtCase):
    """RFC 5161 ENABLE, RFC 7162 CONDSTORE and QRESYNC."""

    def selected(self, n=3, enable=None):
        user, pw = self.user_with_mail(n)
        r = self.raw(user, pw)
        if enable:
            self.require(r, enable)
            lines = self.cmd_ok(r, b"ENABLE " + enable)
            self.assertTrue(any(l.upper().startswith(b"* ENABLED") and enable in l.upper()
                                for l in lines), lines)
        return user, pw, r

    def test_enable_condstore_reports_modseq_without_select_parameter(self):
        user, pw, r = self.selected(2, enable=b"CONDSTORE")
        lines = self.cmd_ok(r, b"SELECT INBOX")
        # once CONDSTORE is enabled every SELECT reports HIGHESTMODSEQ and
        # FETCH responses for flag changes carry MODSEQ (RFC 7162 3.1)
        self.assertTrue(any(b"[HIGHESTMODSEQ " in l for l in lines), lines)
        lines = self.cmd_ok(r, b"STORE 1 +FLAGS (\\Answered)")
        self.assertTrue(any(re.match(rb"\* 1 FETCH \(.*MODSEQ \(\d+\)", l) for l in lines), lines)

    def test_enable_unknown_is_ignored(self):
        user, pw = self.user_with_mail(0)
        r = self.raw(user, pw)
        self.require(r, b"ENABLE")
        lines = self.cmd_ok(r, b"ENABLE X-NO-SUCH-EXTENSION")
        self.assertFalse(any(b"X-NO-SUCH" in l for l in lines), lines)

    @skip_unless_mx("Dovecot accepts ENABLE before login, against RFC 5161 3.1")
    def test_enable_before_login_is_refused(self):
        r = self.raw()
        self.assertIn(r.command(b"ENABLE CONDSTORE")[0], (b"BAD", b"NO"))

    def test_select_condstore_highestmodseq_and_fetch_modseq(self):
        user, pw, r = self.selected(3)
        self.require(r, b"CONDSTORE")
        lines = self.cmd_ok(r, b"SELECT INBOX (CONDSTORE)")
        m = re.search(rb"\[HIGHESTMODSEQ (\d+)\]", b" ".join(lines))
        self.assertIsNotNone(m, lines)
        highest = int(m.group(1))
        lines = self.cmd_ok(r, b"FETCH 1:* (MODSEQ)")
        modseqs = [int(x) for x in re.findall(rb"MODSEQ \((\d+)\)", b" ".join(lines))]
        self.assertEqual(len(modseqs), 3)
        self.assertLessEqual(max(modseqs), highest)
        lines = self.cmd_ok(r, b"STORE 2 +FLAGS (\\Seen)")
        # with CONDSTORE on, STORE's FETCH responses carry MODSEQ
        m = re.search(rb"\* 2 FETCH \(.*MODSEQ \((\d+)\)", b" ".join(lines))
        self.assertIsNotNone(m, lines)
        new = int(m.group(1))
        self.assertGreater(new, highest)
        lines = self.cmd_ok(r, b"FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % highest)
        fetched = [l for l in lines if b" FETCH " in l]
        self.assertEqual(len(fetched), 1, lines)
        self.assertTrue(fetched[0].startswith(b"* 2 FETCH"), fetched)
        lines = self.cmd_ok(r, b"SEARCH MODSEQ %d" % (highest + 1))
        self.assertTrue(any(re.match(rb"\* SEARCH 2( \(MODSEQ \d+\))?$", l) for l in lines), lines)
        # a new session sees the same HIGHESTMODSEQ (it is the store's)
        r2 = self.raw(user, pw)
        lines = self.cmd_ok(r2, b"SELECT INBOX (CONDSTORE)")
        self.assertIn(b"[HIGHESTMODSEQ %d]" % new, b" ".join(lines))

    def test_store_unchangedsince_modified(self):
        user, pw, r = self.selected(3)
        self.require(r, b"CONDSTORE")
        lines = self.cmd_ok(r, b"SELECT INBOX (CONDSTORE)")
        lines = self.cmd_ok(r, b"FETCH 1:3 (MODSEQ)")
        mod = {int(a): int(b) for a, b in
               re.findall(rb"\* (\d+) FETCH \(.*?MODSEQ \((\d+)\)", b"\n".join(lines))}
        other = self.raw(user, pw)
        self.cmd_ok(other, b"SELECT INBOX")
        self.cmd_ok(other, b"STORE 2 +FLAGS (\\Flagged)")  # message 2 changes
        status, lines, line = r.command(
            b"STORE 1:3 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % max(mod[1], mod[3]))
        self.assertEqual(status, b"OK", line)
        self.assertRegex(line, rb"\[MODIFIED 2\]")
        lines = self.cmd_ok(r, b"FETCH 2 (FLAGS)")
        self.assertNotIn(b"\\Seen", b" ".join(l for l in lines if b"* 2 FETCH" in l))
        # UNCHANGEDSINCE 0 always fails (RFC 7162 3.1.3)
        status, lines, line = r.command(b"STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Draft)")
        self.assertIn(b"[MODIFIED 1]", line)
        # UID STORE reports UIDs in MODIFIED
        uid2 = re.search(rb"UID (\d+)", b" ".join(self.cmd_ok(r, b"FETCH 2 (UID)"))).group(1)
        status, lines, line = r.command(b"UID STORE %s (UNCHANGEDSINCE 1) +FLAGS (\\Draft)"
                                        % uid2)
        self.assertIn(b"[MODIFIED %s]" % uid2, line)

    def test_qresync_select_vanished_earlier(self):
        user, pw, r = self.selected(5, enable=b"QRESYNC")
        lines = self.cmd_ok(r, b"SELECT INBOX")
        joined = b" ".join(lines)
        uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", joined).group(1))
        modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", joined).group(1))
        uids = [int(u) for u in re.findall(rb"UID (\d+)",
                                           b" ".join(self.cmd_ok(r, b"FETCH 1:* (UID)")))]
        self.cmd_ok(r, b"LOGOUT")
        # meanwhile: message 2 expunged, message 4 flagged
        other = self.raw(user, pw)
        self.cmd_ok(other, b"SELECT INBOX")
        self.cmd_ok(other, b"STORE 4 +FLAGS (\\Flagged)")
        self.cmd_ok(other, b"STORE 2 +FLAGS.SILENT (\\Deleted)")
        self.cmd_ok(other, b"EXPUNGE")
        self.cmd_ok(other, b"LOGOUT")
        r = self.raw(user, pw)
        self.cmd_ok(r, b"ENABLE QRESYNC")
        lines = self.cmd_ok(r, b"SELECT INBOX (QRESYNC (%d %d %d:%d))"
                            % (uidvalidity, modseq, uids[0], uids[-1]))
        joined = b"\n".join(lines)
        vanished = re.search(rb"\* VANISHED \(EARLIER\) (\S+)", joined)
        self.assertIsNotNone(vanished, lines)
        self.assertEqual(vanished.group(1), b"%d" % uids[1])
        changed = [l for l in lines if l.startswith(b"* 3 FETCH (")]
        self.assertEqual(len(changed), 1, lines)
        self.assertIn(b"UID %d" % uids[3], changed[0])
        self.assertIn(b"\\Flagged", changed[0])
        # in QRESYNC mode EXPUNGE answers VANISHED, not EXPUNGE
        self.cmd_ok(r, b"STORE 1 +FLAGS.SILENT (\\Deleted)")
        lines = self.cmd_ok(r, b"EXPUNGE")
        self.assertTrue(any(l == b"* VANISHED %d" % uids[0] for l in lines), lines)
        self.assertFalse(any(re.match(rb"\* \d+ EXPUNGE", l) for l in lines), lines)

    def test_qresync_wrong_uidvalidity_is_full_select(self):
        user, pw, r = self.selected(2, enable=b"QRESYNC")
        lines = self.cmd_ok(r, b"SELECT INBOX (QRESYNC (1 1))")
        self.assertFalse(any(b"VANISHED" in l for l in lines), lines)
        self.assertTrue(any(re.match(rb"\* 2 EXISTS", l) for l in lines), lines)

    def test_enable_imap4rev2(self):
        user, pw = self.user_with_mail(3)
        r = self.raw(user, pw)
        self.require(r, b"IMAP4REV2")
        lines = self.cmd_ok(r, b"ENABLE IMAP4rev2")
        self.assertTrue(any(l.upper().startswith(b"* ENABLED") and b"IMAP4REV2" in l.upper()
                            for l in lines), lines)
        lines = self.cmd_ok(r, b"SELECT INBOX")
        # RFC 9051 removed \Recent and the RECENT response
        self.assertFalse(any(re.match(rb"\* \d+ RECENT", l) for l in lines), lines)
        lines = self.cmd_ok(r, b"FETCH 1:* (FLAGS)")
        self.assertFalse(any(b"\\Recent" in l for l in lines), lines)
        # a plain SEARCH is answered with ESEARCH, as RETURN (ALL) (RFC 9051 6.4.4)
        tag = r.next_tag()
        r.send(tag + b" SEARCH ALL\r\n")
        status, lines, _ = r.read_until_tagged(tag)
        self.assertEqual(status, b"OK")
        self.assertFalse(any(l.startswith(b"* SEARCH") for l in lines), lines)
        es = [l for l in lines if l.startswith(b"* ESEARCH")]
        self.assertEqual(len(es), 1, lines)
        self.assertIn(b'(TAG "%s")' % tag, es[0])
        self.assertRegex(es[0], rb"ALL 1:3$")

    def test_utf8_accept(self):
        user, pw = self.user_with_mail(0)
        r = self.raw(user, pw)
        self.require(r, b"UTF8=ACCEPT")
        lines = self.cmd_ok(r, b"ENABLE UTF8=ACCEPT")
        self.assertTrue(any(b"UTF8=ACCEPT" in l.upper() for l in lines), lines)
        name = "Projekt-Übersicht-日本".encode("utf-8")
        self.cmd_ok(r, b"CREATE " + quote(name))
        lines = self.cmd_ok(r, b'LIST "" "*"')
        self.assertTrue(any(name in l for l in lines), lines)  # raw UTF-8, not mUTF-7
        self.cmd_ok(r, b"SELECT " + quote(name))


class TestQuota(ExtCase):
    """RFC 9208 (RFC 2087) QUOTA: figures from the store."""

    def test_getquotaroot_and_getquota(self):
        user, pw = self.target.add_account(quota_bytes=1048576)
        r = self.raw(user, pw)
        self.require(r, b"QUOTA")
        lines = self.cmd_ok(r, b"GETQUOTAROOT INBOX")
        joined = b"\n".join(lines)
        root = re.search(rb"\* QUOTAROOT INBOX (\"[^\"]*\"|\S+)", joined)
        self.assertIsNotNone(root, lines)
        m = re.search(rb"\* QUOTA (\"[^\"]*\"|\S+) \(.*STORAGE (\d+) (\d+)", joined)
        self.assertIsNotNone(m, lines)
        used0, limit = int(m.group(2)), int(m.group(3))
        self.assertEqual(limit, 1024)  # KiB: 1 MiB
        big = make_message(subject="big", body=("x" * 70 + "\r\n") * 300)  # ~21 KiB
        self.target.deliver(user, big)
        lines = self.cmd_ok(r, b"GETQUOTA " + root.group(1))
        m = re.search(rb"STORAGE (\d+) (\d+)", b" ".join(lines))
        self.assertIsNotNone(m, lines)
        self.assertGreaterEqual(int(m.group(1)) - used0, len(big) // 1024 - 1)

    @skip_unless_mx("the store's own figures")
    def test_quota_matches_store(self):
        user, pw = self.target.add_account(quota_bytes=2 * 1048576)
        self.target.deliver(user, make_message(body=("y" * 70 + "\r\n") * 100))
        store = self.target.cluster.shard_of(user).request("quota_get", user=user)
        r = self.raw(user, pw)
        lines = self.cmd_ok(r, b"GETQUOTAROOT INBOX")
        m = re.search(rb"STORAGE (\d+) (\d+)", b" ".join(lines))
        self.assertIsNotNone(m, lines)
        self.assertEqual(int(m.group(1)), (store.get("quota_used") + 1023) // 1024)
        self.assertEqual(int(m.group(2)), 2048)

    def test_append_over_quota_refused(self):
        user, pw = self.target.add_account(quota_bytes=1048576)
        r = self.raw(user, pw)
        big = make_message(body=("z" * 998 + "\r\n") * 1100)  # > 1 MiB
        status, _, line = r.command(b"APPEND INBOX {%d+}\r\n%s" % (len(big), big))
        self.assertEqual(status, b"NO", line)
        self.assertIn(b"[OVERQUOTA]", line)  # RFC 9208 / RFC 5530


class TestSortThread(ExtCase):
    """RFC 5256 SORT and THREAD (REFERENCES, ORDEREDSUBJECT)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.user, cls.pw = cls.target.add_account()
        mk = make_message
        cls.target.deliver_many(cls.user, [
            mk(subject="Banana", sender="zed@remote.test", date="Tue, 03 Mar 2020 10:00:00 +0000",
               msgid="<root@t>", body="x" * 10),
            mk(subject="Re: Banana", sender="amy@remote.test",
               date="Wed, 04 Mar 2020 10:00:00 +0000", msgid="<reply1@t>",
               headers=("In-Reply-To: <root@t>", "References: <root@t>"), body="x" * 800),
            mk(subject="apple", sender="bob@remote.test", date="Mon, 02 Mar 2020 10:00:00 +0000",
               msgid="<other@t>", body="x" * 300),
            mk(subject="Re: Re: banana", sender="cat@remote.test",
               date="Thu, 05 Mar 2020 10:00:00 +0000", msgid="<reply2@t>",
               headers=("In-Reply-To: <reply1@t>", "References: <root@t> <reply1@t>"),
               body="x" * 50),
        ])

    def setUp(self):
        self.r = self.raw(self.user, self.pw)
        self.cmd_ok(self.r, b"SELECT INBOX")

    def sort(self, criteria, uid=False):
        self.require(self.r, b"SORT")
        lines = self.cmd_ok(self.r, b"%sSORT (%s) UTF-8 ALL" % (b"UID " if uid else b"", criteria))
        found = [l for l in lines if l.startswith(b"* SORT")]
        self.assertEqual(len(found), 1, lines)
        return [int(x) for x in found[0].split()[2:]]

    def test_sort_keys(self):
        # base subject: Re:/Fwd stripped, case-insensitive (RFC 5256 2.1)
        self.assertEqual(self.sort(b"SUBJECT")[0], 3)
        self.assertEqual(self.sort(b"SUBJECT ARRIVAL"), [3, 1, 2, 4])
        self.assertEqual(self.sort(b"DATE"), [3, 1, 2, 4])
        self.assertEqual(self.sort(b"REVERSE DATE"), [4, 2, 1, 3])
        self.assertEqual(self.sort(b"FROM"), [2, 3, 4, 1])
        self.assertEqual(self.sort(b"SIZE"), [1, 4, 3, 2])
        self.assertEqual(self.sort(b"ARRIVAL"), [1, 2, 3, 4])
        self.assertEqual(self.sort(b"REVERSE SIZE"), [2, 3, 4, 1])

    def test_uid_sort(self):
        uids = [int(u) for u in re.findall(rb"UID (\d+)",
                                           b" ".join(self.cmd_ok(self.r, b"FETCH 1:* (UID)")))]
        self.assertEqual(self.sort(b"DATE", uid=True), [uids[2], uids[0], uids[1], uids[3]])

    def test_sort_display(self):
        # RFC 5957 DISPLAYFROM: the display name, else the address
        self.require(self.r, b"SORT=DISPLAY")
        lines = self.cmd_ok(self.r, b"SORT (DISPLAYFROM) UTF-8 ALL")
        found = [l for l in lines if l.startswith(b"* SORT")]
        self.assertEqual(len(found), 1, lines)
        # no display names here: amy, bob, cat, zed by address
        self.assertEqual([int(x) for x in found[0].split()[2:]], [2, 3, 4, 1])

    def test_sort_bad_key(self):
        self.require(self.r, b"SORT")
        self.assertEqual(self.r.command(b"SORT (NOSUCHKEY) UTF-8 ALL")[0], b"BAD")

    def thread(self, algorithm):
        self.require(self.r, b"THREAD=" + algorithm)
        lines = self.cmd_ok(self.r, b"THREAD %s UTF-8 ALL" % algorithm)
        found = [l for l in lines if l.startswith(b"* THREAD")]
        self.assertEqual(len(found), 1, lines)
        return found[0][len(b"* THREAD "):]

    def test_thread_references(self):
        # 1 <- 2 <- 4, 3 alone; threads in order of their first message date
        self.assertEqual(self.thread(b"REFERENCES"), b"(3)(1 2 4)")

    def test_thread_orderedsubject(self):
        # threads by base subject, ordered by first date; the later
        # messages are siblings under the first (RFC 5256 3, its example)
        self.assertEqual(self.thread(b"ORDEREDSUBJECT"), b"(3)(1 (2)(4))")


class TestEsearchList(ExtCase):
    """RFC 4731 ESEARCH, RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS,
    RFC 6154 SPECIAL-USE, RFC 3348 CHILDREN, RFC 2971 ID, RFC 3691 UNSELECT."""

    def test_esearch(self):
        user, pw = self.user_with_mail(5)
        r = self.raw(user, pw)
        self.require(r, b"ESEARCH")
        self.cmd_ok(r, b"SELECT INBOX")
        self.cmd_ok(r, b"STORE 2,4 +FLAGS (\\Seen)")
        tag = r.next_tag()
        r.send(tag + b" SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN\r\n")
        status, lines, _ = r.read_until_tagged(tag)
        self.assertEqual(status, b"OK")
        es = [l for l in lines if l.startswith(b"* ESEARCH")]
        self.assertEqual(len(es), 1, lines)
        self.assertIn(b'(TAG "%s")' % tag, es[0])
        self.assertIn(b"MIN 1", es[0])
        self.assertIn(b"MAX 5", es[0])
        self.assertIn(b"COUNT 3", es[0])
        self.assertRegex(es[0], rb"ALL 1,3,5\b")
        lines = self.cmd_ok(r, b"UID SEARCH RETURN () ALL")
        es = [l for l in lines if l.startswith(b"* ESEARCH")]
        self.assertRegex(es[0], rb"\) UID ALL \d+")
        # nothing matches: no MIN/MAX, COUNT 0
        lines = self.cmd_ok(r, b"SEARCH RETURN (COUNT MIN) SUBJECT no-such-subject")
        es = [l for l in lines if l.startswith(b"* ESEARCH")]
        self.assertIn(b"COUNT 0", es[0])
        self.assertNotIn(b"MIN", es[0])

    def test_searchres(self):
        # RFC 5182: RETURN (SAVE) keeps the result as "$" for later commands
        user, pw = self.user_with_mail(4)
        r = self.raw(user, pw)
        self.require(r, b"SEARCHRES")
        self.cmd_ok(r, b"SELECT INBOX")
        lines = self.cmd_ok(r, b"SEARCH RETURN (SAVE) OR SUBJECT \"message 2\" "
                               b"SUBJECT \"message 4\"")
        self.assertFalse(any(l.startswith(b"* SEARCH") or l.startswith(b"* ESEARCH")
                             for l in lines), lines)  # SAVE alone returns nothing
        lines = self.cmd_ok(r, b"FETCH $ (UID)")
        self.assertEqual(sorted(int(l.split()[1]) for l in lines if b" FETCH " in l), [2, 4])
        self.cmd_ok(r, b"STORE $ +FLAGS (\\Flagged)")
        lines = self.cmd_ok(r, b"SEARCH FLAGGED")
        self.assertTrue(any(re.match(rb"\* (E?SEARCH.*\b2[,:]4\b|SEARCH 2 4$)", l)
                            for l in lines), lines)

    def test_list_extended_selection_and_return(self):
        user, pw = self.user_with_mail(0)
        r = self.raw(user, pw)
        self.require(r, b"LIST-EXTENDED")
        self.cmd_ok(r, b"CREATE parent")
        self.cmd_ok(r, b"CREATE parent/child")
        # a server may subscribe what CREATE made; only parent/child stays
        r.command(b"UNSUBSCRIBE parent")
        r.command(b"UNSUBSCRIBE parent/child")
        self.cmd_ok(r, b"SUBSCRIBE parent/child")
        lines = self.cmd_ok(r, b'LIST (SUBSCRIBED) "" "parent*"')
        listed = [l for l in lines if l.startswith(b"* LIST")]
        self.assertTrue(any(l.endswith(b"parent/child") or l.endswith(b'"parent/child"')
                            for l in listed), listed)
        self.assertTrue(all(b"\\Subscribed" in l for l in listed if b"child" in l), listed)
        self.assertFalse(any(l.endswith(b" parent") for l in listed), listed)
        lines = self.cmd_ok(r, b'LIST "" "parent" RETURN (CHILDREN)')
        self.assertTrue(any(b"\\HasChildren" in l for l in lines), lines)
        # several patterns at once
        lines = self.cmd_ok(r, b'LIST "" ("INBOX" "parent")')
        self.assertEqual(len([l for l in lines if l.startswith(b"* LIST")]), 2, lines)
        # RECURSIVEMATCH: parent has a subscribed child
        lines = self.cmd_ok(r, b'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
        self.assertTrue(any(b"CHILDINFO" in l and b"SUBSCRIBED" in l for l in lines), lines)

    def test_list_status(self):
        user, pw = self.user_with_mail(2)
        r = self.raw(user, pw)
        self.require(r, b"LIST-STATUS")
        lines = self.cmd_ok(r, b'LIST "" "INBOX" RETURN (STATUS (MESSAGES UNSEEN UIDNEXT))')
        st = [l for l in lines if l.startswith(b"* STATUS")]
        self.assertEqual(len(st), 1, lines)
        self.assertIn(b"MESSAGES 2", st[0])
        self.assertIn(b"UNSEEN 2", st[0])

    def test_special_use(self):
        user, pw = self.user_with_mail(0)
        r = self.raw(user, pw)
        self.require(r, b"SPECIAL-USE")
        lines = self.cmd_ok(r, b'LIST (SPECIAL-USE) "" "*"')
        listed = [l for l in lines if l.startswith(b"* LIST")]
        uses = set(re.findall(rb"\\(Drafts|Sent|Trash|Junk)\b", b" ".join(listed)))
        self.assertEqual(uses, {b"Drafts", b"Sent", b"Trash", b"Junk"}, listed)
        self.assertFalse(any(l.endswith(b"INBOX") for l in listed), listed)
        lines = self.cmd_ok(r, b'LIST "" "*" RETURN (SPECIAL-USE)')
        self.assertGreaterEqual(len([l for l in lines if re.search(rb"\\(Sent|Trash)", l)]), 2)

    def test_children(self):
        user, pw = self.user_with_mail(0)
        r = self.raw(user, pw)
        self.require(r, b"CHILDREN")
        self.cmd_ok(r, b"CREATE a1")
        self.cmd_ok(r, b"CREATE a1/b1")
        lines = self.cmd_ok(r, b'LIST "" "a1*"')
        by = {l.rsplit(b" ", 1)[1].strip(b'"'): l for l in lines if l.startswith(b"* LIST")}
        self.assertIn(b"\\HasChildren", by[b"a1"])
        self.assertIn(b"\\HasNoChildren", by[b"a1/b1"])

    def test_id(self):
        r = self.raw()
        self.require(r, b"ID")
        lines = self.cmd_ok(r, b'ID ("name" "mxcluster-tests" "version" "1")')
        self.assertTrue(any(l.startswith(b"* ID ") for l in lines), lines)
        lines = self.cmd_ok(r, b"ID NIL")
        self.assertTrue(any(l.startswith(b"* ID ") for l in lines), lines)

    def test_unselect(self):
        user, pw = self.user_with_mail(1)
        r = self.raw(user, pw)
        self.require(r, b"UNSELECT")
        self.cmd_ok(r, b"SELECT INBOX")
        self.cmd_ok(r, b"UNSELECT")
        self.assertIn(r.command(b"FETCH 1 FLAGS")[0], (b"BAD", b"NO"))

    def test_namespace_and_capabilities_issue_5(self):
        user, pw = self.user_with_mail(0)
        r = self.raw(user, pw)
        have = caps(r)
        wanted = [b"IMAP4REV1", b"IDLE", b"UIDPLUS", b"MOVE", b"NAMESPACE", b"ID", b"ENABLE",
                  b"SASL-IR", b"UNSELECT", b"CHILDREN", b"LIST-EXTENDED", b"LIST-STATUS",
                  b"SPECIAL-USE", b"CONDSTORE", b"QRESYNC", b"QUOTA", b"ESEARCH", b"SORT",
                  b"THREAD=REFERENCES", b"THREAD=ORDEREDSUBJECT", b"BINARY"]
        if is_mx():
            wanted += [b"IMAP4REV2", b"UTF8=ACCEPT"]
        self.assertTrue(b"LITERAL+" in have or b"LITERAL-" in have, have)
        self.assertEqual([w for w in wanted if w not in have], [], sorted(have))


class TestCompress(ExtCase):
    """RFC 4978 COMPRESS=DEFLATE (optional in issue 5: skipped if absent)."""

    def test_compress_deflate(self):
        user, pw = self.user_with_mail(2)
        r = self.raw(user, pw)
        if b"COMPRESS=DEFLATE" not in caps(r):
            self.skipTest("COMPRESS=DEFLATE not advertised")
        self.cmd_ok(r, b"COMPRESS DEFLATE")
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        decomp = zlib.decompressobj(-15)
        sock = r.sock

        def send(data):
            sock.sendall(comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH))

        def read_until(tag):
            out = b""
            while not re.search(rb"(^|\r\n)" + tag + rb" (OK|NO|BAD)[^\r\n]*\r\n", out):
                chunk = sock.recv(65536)
                if not chunk:
                    raise EOFError(out)
                out += decomp.decompress(chunk)
            return out
        send(b"C1 SELECT INBOX\r\n")
        self.assertIn(b"* 2 EXISTS", read_until(b"C1"))
        send(b"C2 FETCH 1:2 (BODY.PEEK[])\r\n")
        out = read_until(b"C2")
        self.assertIn(b"text 1", out)
        self.assertIn(b"C2 OK", out)
        send(b"C3 COMPRESS DEFLATE\r\n")  # a second COMPRESS is refused
        self.assertRegex(read_until(b"C3"), rb"C3 (NO|BAD)")


class TestAuthenticateReuse(ExtCase):
    """AUTHENTICATE PLAIN works on the plain port after STARTTLS."""

    def test_starttls_authenticate(self):
        user, pw = self.user_with_mail(0)
        r = self.raw(tls=False)
        r.starttls()
        token = base64.b64encode(("\0%s\0%s" % (user, pw)).encode())
        self.cmd_ok(r, b"AUTHENTICATE PLAIN " + token)
        self.cmd_ok(r, b"SELECT INBOX")


if __name__ == "__main__":
    unittest.main(verbosity=2)

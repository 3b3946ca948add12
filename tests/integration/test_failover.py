"""test_failover - the "Must show" list of issue 6 on a real cluster.

Three nodes in network namespaces (deploy/mxlaunch/hacluster.py): corosync +
mx-ha everywhere, the shard1 store pair on node1/node2 with synchronous
replication, mx-imapd on all three behind HAProxy (PROXY v2, mx-ha agent
checks), mx-inbound + mx-delivery + HAProxy + the clients on an "edge"
namespace.  Root is needed (namespaces); skipped with the reason otherwise.

test_failover_under_load (MX_FAILOVER_ROUNDS rounds, default 10): while SMTP
deliveries and IMAP clients appending, flagging and expunging run through
HAProxy, the shard's primary node is taken out - kill -9 of all its
processes, or (every other round) its link cut.  Then:
  - the surviving node is promoted, with a higher epoch;
  - every APPEND that got OK [APPENDUID v u] is there with UID u in a
    mailbox whose UIDVALIDITY never changed, every OK'd STORE +FLAGS shows,
    every OK'd EXPUNGE is gone;
  - every message that got 250 from mx-inbound reaches the new primary;
  - clients reconnect through HAProxy and see the same UIDVALIDITY.
The old node then comes back (restart / link healed), must rejoin as the
replica and catch up before the next round takes out the other node.

test_partition_minority_never_acks: node cut off alone (1 | 2).  A writer
inside the cut node hammers its own store directly (no HAProxy, no bus
failover: the strongest temptation to acknowledge); every write it ever got
OK for must be on the majority's new primary, the cut store must answer
STALE_EPOCH, the majority promotes; after healing the old primary rejoins as
replica, catches up, and both stores hold exactly the same data (compared
after a switchover back: every mailbox's UIDVALIDITY, UIDs, flags and POP3
UIDLs, and the message files on disk).

Run (as root): ctest -R '^failover$', or by hand
    MX_BUILD_DIR=build/release MX_SOURCE_DIR=. python3 tests/integration/test_failover.py
Knobs: MX_FAILOVER_ROUNDS (10), MX_HAPROXY_AGENT=0 (HAProxy health checks
only, without mx-ha's agent), MX_LOG_LEVEL (info).  On a failure the logs
of every component are kept and their directory printed.  Every log is also
searched for sanitizer reports and mx-ha's ha.map_conflict (two maps with one
epoch), which fail the test even when the checks above passed.
"""

import imaplib
import os
import random
import re
import shutil
import sys
import threading
import time
import unittest

sys.path.insert(0, os.environ.get("MX_SOURCE_DIR", ".") + "/deploy")
from mxlaunch import build_dir, procs  # noqa: E402
from mxlaunch import netns  # noqa: E402
from mxlaunch.hacluster import HaCluster, wait_imap_ok  # noqa: E402

ROUNDS = int(os.environ.get("MX_FAILOVER_ROUNDS", "10"))
OK, STALE_EPOCH = 0, 7
FETCH_FLAGS, FETCH_POP3_UIDL = 0x1, 0x80
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
IMAP_WORKERS = 2
# How long the new primary may take to be agreed: corosync notices a dead
# node in ~1.1 s (token 500 ms), plus one STATE round and a store poll.
FAILOVER_TIMEOUT = 15.0
# A 250'd message sits in mx-inbound's spool / mx-delivery's retry until the
# new primary takes it.
DELIVERY_TIMEOUT = 60.0


def _why_not():
    ok, why = netns.available()
    if not ok:
        return why
    for tool in ("haproxy", "corosync"):
        if not shutil.which(tool) and not os.access("/usr/sbin/" + tool, os.X_OK):
            return "%s is not installed" % tool
    for rel in ("store/mx-store", "ha/mx-ha", "ha/mxctl", "imap-frontend/mx-imapd",
                "delivery/mx-delivery", "inbound/mx-inbound", "tests/tools/mx-store-cli"):
        if not os.access(os.path.join(build_dir(), rel), os.X_OK):
            return "%s is not built in %s" % (rel, build_dir())
    return ""


WHY_NOT = _why_not()


def new_id():
    return random.choice("01234567") + "".join(random.choice(ALPHABET) for _ in range(25))


def message(token, to):
    return ("From: Load <load@remote.test>\r\nTo: %s\r\nSubject: failover %s\r\n"
            "Message-ID: <%s@failover.test>\r\nX-Token: %s\r\n\r\n%s\r\n"
            % (to, token, token, token, "body line of the failover test\r\n" * 8)).encode()


class Ledger:
    """What the cluster acknowledged, per mailbox: the ground truth the
    survivors are checked against.  Only acknowledged operations are
    recorded; an operation whose answer was lost (the connection died) may
    or may not have happened, and both are correct."""

    def __init__(self):
        self.lock = threading.Lock()
        self.appended = {}     # (mailbox, token) -> uid
        self.flagged = set()   # (mailbox, uid)
        self.expunged = set()  # (mailbox, uid): EXPUNGE answered OK
        self.deleting = set()  # (mailbox, uid): STORE \Deleted sent (may be gone)
        self.uidvalidity = {}  # mailbox -> the one UIDVALIDITY ever seen
        self.smtp_accepted = []  # tokens that got 250
        self.errors = []       # protocol violations seen by the workers

    def note_uidvalidity(self, mailbox, value):
        with self.lock:
            first = self.uidvalidity.setdefault(mailbox, value)
            if first != value:
                self.errors.append("%s: UIDVALIDITY changed %d -> %d" % (mailbox, first, value))


class ImapWorker(threading.Thread):
    """One IMAP client on its own mailbox: APPEND, STORE +FLAGS \\Flagged,
    now and then STORE \\Deleted + EXPUNGE; reconnects through HAProxy
    whenever the connection fails or a command is refused."""

    def __init__(self, cluster, user, password, mailbox, ledger, stop):
        super().__init__(name="imap-%s" % mailbox, daemon=True)
        self.cluster, self.user, self.password = cluster, user, password
        self.mailbox, self.ledger, self.stop = mailbox, ledger, stop
        self.client = None
        self.ok_after = {}  # round -> commands OK'd (progress after a failover)
        self.count = 0
        self.reconnects = 0

    def connect(self):
        client = self.cluster.imap_connect(timeout=5.0)
        try:
            client.login(self.user, self.password)
            typ, _ = client.select('"%s"' % self.mailbox)
            if typ != "OK":
                raise imaplib.IMAP4.error("SELECT %s" % typ)
            typ, data = client.response("UIDVALIDITY")
            if data and data[0]:
                self.ledger.note_uidvalidity(self.mailbox, int(data[0]))
        except BaseException:
            client.shutdown()
            raise
        return client

    def drop(self):
        if self.client is not None:
            try:
                self.client.shutdown()
            except Exception:
                pass
        self.client = None

    def step(self, n):
        token = "%s-%d-%s" % (self.mailbox, n, new_id()[:8])
        typ, data = self.client.append('"%s"' % self.mailbox, None, None,
                                       message(token, self.user))
        if typ != "OK":
            return False
        m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[0] or b"")
        if not m:
            self.ledger.errors.append("APPEND OK without APPENDUID: %r" % data)
            return False
        uidvalidity, uid = int(m.group(1)), int(m.group(2))
        self.ledger.note_uidvalidity(self.mailbox, uidvalidity)
        with self.ledger.lock:
            self.ledger.appended[(self.mailbox, token)] = uid
        typ, _ = self.client.uid("STORE", str(uid), "+FLAGS", "(\\Flagged)")
        if typ == "OK":
            with self.ledger.lock:
                self.ledger.flagged.add((self.mailbox, uid))
        if n % 4 == 3:
            # From here on the message may legitimately go: an EXPUNGE
            # whose answer is lost, or any later EXPUNGE, removes it.
            with self.ledger.lock:
                self.ledger.deleting.add((self.mailbox, uid))
            typ, _ = self.client.uid("STORE", str(uid), "+FLAGS", "(\\Deleted)")
            if typ == "OK":
                typ, _ = self.client.expunge()
                if typ == "OK":
                    with self.ledger.lock:
                        self.ledger.expunged.add((self.mailbox, uid))
        return True

    def run(self):
        n = 0
        while not self.stop.is_set():
            try:
                if self.client is None:
                    self.client = self.connect()
                    self.reconnects += 1
                if self.step(n):
                    self.count += 1
                n += 1
            except Exception:
                # BYE, reset, refused, a NO from a fenced store: reconnect.
                self.drop()
                self.stop.wait(0.05)
        self.drop()


class SmtpWorker(threading.Thread):
    """SMTP deliveries to one account through mx-inbound (edge)."""

    def __init__(self, cluster, rcpt, ledger, stop):
        super().__init__(name="smtp", daemon=True)
        self.cluster, self.rcpt, self.ledger, self.stop = cluster, rcpt, ledger, stop

    def run(self):
        smtp = None
        n = 0
        while not self.stop.is_set():
            try:
                if smtp is None:
                    smtp = self.cluster.smtp_connect(timeout=10)
                token = "smtp-%d-%s" % (n, new_id()[:8])
                n += 1
                refused = smtp.sendmail("load@remote.test", [self.rcpt],
                                        message(token, self.rcpt))
                if not refused:
                    with self.ledger.lock:
                        self.ledger.smtp_accepted.append(token)
            except Exception:
                if smtp is not None:
                    try:
                        smtp.close()
                    except Exception:
                        pass
                smtp = None
                self.stop.wait(0.1)
            self.stop.wait(0.02)
        if smtp is not None:
            try:
                smtp.quit()
            except Exception:
                pass


def mailbox_tokens(client, mailbox):
    """{token: (uid, flags text)} of MAILBOX and its UIDVALIDITY."""
    typ, _ = client.select('"%s"' % mailbox)
    if typ != "OK":
        raise AssertionError("SELECT %s: %s" % (mailbox, typ))
    uidvalidity = int(client.response("UIDVALIDITY")[1][0])
    typ, data = client.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (X-Token)])")
    if typ != "OK":
        raise AssertionError("UID FETCH %s: %s %r" % (mailbox, typ, data))
    out = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        meta, header = item
        uid = int(re.search(rb"UID (\d+)", meta).group(1))
        flags = re.search(rb"FLAGS \(([^)]*)\)", meta)
        token = re.search(rb"X-Token: (\S+)", header)
        if token:
            out[token.group(1).decode()] = (uid, flags.group(1).decode() if flags else "")
    return uidvalidity, out


@unittest.skipIf(WHY_NOT, WHY_NOT)
class FailoverTest(unittest.TestCase):
    def setUp(self):
        self.hc = HaCluster(log_level=os.environ.get("MX_LOG_LEVEL", "info"),
                            agent_checks=os.environ.get("MX_HAPROXY_AGENT", "1") != "0")
        self.accounts = self.hc.add_accounts(["fo%d" % k for k in range(IMAP_WORKERS)] + ["fomail"])

    def tearDown(self):
        failed = not self._outcome_ok()
        bad = self.sanitizer_reports()
        if failed or bad:
            print("\nlogs kept in %s" % self.hc.dir, file=sys.stderr)
        self.hc.close(keep_logs=failed or bool(bad))
        self.assertEqual(bad, [], "sanitizer reports or map conflicts in these logs")

    def _outcome_ok(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return False
        return not any(test is self for test, _ in result.errors + result.failures)

    def sanitizer_reports(self):
        bad = []
        for path in self.hc.log_files():
            with open(path, errors="replace") as f:
                if re.search(r"AddressSanitizer|LeakSanitizer|runtime error:|"
                             r"event=ha\.map_conflict", f.read()):
                    bad.append(path)
        return bad

    # ---- checks -------------------------------------------------------------

    def login(self, user, password, timeout=20.0):
        client, _ = wait_imap_ok(self.hc, user, password, time.monotonic() + timeout)
        return client

    def check_ledger(self, ledger, round_no):
        self.assertEqual(ledger.errors, [], "round %d" % round_no)
        for k in range(IMAP_WORKERS):
            user, password = self.accounts[k]
            mailbox = "w%d" % k
            client = self.login(user, password)
            try:
                uidvalidity, found = mailbox_tokens(client, mailbox)
            finally:
                client.shutdown()
            self.assertEqual(uidvalidity, ledger.uidvalidity.get(mailbox, uidvalidity),
                             "round %d: %s UIDVALIDITY changed" % (round_no, mailbox))
            with ledger.lock:
                appended = {t: u for (mb, t), u in ledger.appended.items() if mb == mailbox}
                flagged = {u for mb, u in ledger.flagged if mb == mailbox}
                expunged = {u for mb, u in ledger.expunged if mb == mailbox}
                deleting = {u for mb, u in ledger.deleting if mb == mailbox}
            uids = [u for u, _ in found.values()]
            self.assertEqual(len(uids), len(set(uids)), "round %d: a UID used twice" % round_no)
            for token, uid in appended.items():
                if uid in expunged:
                    self.assertNotIn(token, found, "round %d: %s UID %d was expunged (OK) "
                                     "but is back" % (round_no, mailbox, uid))
                    continue
                if uid in deleting and token not in found:
                    continue  # \Deleted was asked for: an unanswered EXPUNGE may have run
                self.assertIn(token, found, "round %d: %s APPEND OK'd as UID %d is lost"
                              % (round_no, mailbox, uid))
                self.assertEqual(found[token][0], uid, "round %d: %s %s changed UID"
                                 % (round_no, mailbox, token))
                if uid in flagged:
                    self.assertIn("\\Flagged", found[token][1],
                                  "round %d: %s UID %d lost its OK'd \\Flagged"
                                  % (round_no, mailbox, uid))
        # Every 250'd message arrives (mx-delivery retries on the new primary).
        user, password = self.accounts[-1]
        with ledger.lock:
            wanted = set(ledger.smtp_accepted)
        missing = {}

        def all_delivered():
            client = self.login(user, password)
            try:
                _, found = mailbox_tokens(client, "INBOX")
            finally:
                client.shutdown()
            missing["now"] = wanted - set(found)
            return not missing["now"]
        procs.wait_until(all_delivered, timeout=DELIVERY_TIMEOUT, interval=0.5,
                         what="every 250'd message in the new primary (missing %r)"
                         % missing.get("now"))

    # ---- the tests ----------------------------------------------------------

    def test_failover_under_load(self):
        hc = self.hc
        for k in range(IMAP_WORKERS):
            user, password = self.accounts[k]
            client = self.login(user, password)
            self.assertEqual(client.create("w%d" % k)[0], "OK")
            client.shutdown()
        ledger = Ledger()
        downtimes = []
        for round_no in range(1, ROUNDS + 1):
            victim, epoch = hc.wait_primary()
            hc.wait_in_sync(timeout=60)
            stop = threading.Event()
            workers = [ImapWorker(hc, self.accounts[k][0], self.accounts[k][1], "w%d" % k,
                                  ledger, stop) for k in range(IMAP_WORKERS)]
            workers.append(SmtpWorker(hc, self.accounts[-1][0], ledger, stop))
            for w in workers:
                w.start()
            try:
                time.sleep(0.8)
                cut = round_no % 2 == 0
                t0 = time.monotonic()
                if cut:
                    hc.drop_link(victim)
                else:
                    hc.kill_node(victim)
                survivor, new_epoch = hc.wait_primary(above_epoch=epoch, exclude=(victim,),
                                                      timeout=FAILOVER_TIMEOUT)
                self.assertNotEqual(survivor, victim)
                self.assertGreater(new_epoch, epoch)
                before = [w.count for w in workers if isinstance(w, ImapWorker)]
                # The clients must make progress on the new primary.
                procs.wait_until(
                    lambda: all(w.count > b for w, b in
                                zip([w for w in workers if isinstance(w, ImapWorker)], before)),
                    timeout=FAILOVER_TIMEOUT, interval=0.05,
                    what="IMAP clients appending again after the failover")
                downtimes.append(time.monotonic() - t0)
                time.sleep(0.3)
            finally:
                stop.set()
                for w in workers:
                    w.join(timeout=30)
            self.check_ledger(ledger, round_no)
            # The old primary comes back as the replica and catches up.
            if cut:
                hc.heal_link(victim)
            else:
                hc.restart_node(victim)
            procs.wait_until(lambda: victim in [i for i in hc.live_nodes()], timeout=5,
                             what="node%d back" % victim)
            hc.wait_primary(above_epoch=epoch)
            hc.wait_in_sync(timeout=60)
            with ledger.lock:
                totals = (len(ledger.appended), len(ledger.flagged), len(ledger.expunged),
                          len(ledger.smtp_accepted))
            print("round %d: %s node%d, epoch %d -> %d on node%d, clients working again "
                  "after %.2fs; so far acknowledged: %d APPEND, %d STORE, %d EXPUNGE, "
                  "%d SMTP 250, all present" % ((round_no, "cut" if cut else "killed", victim,
                                                 epoch, new_epoch, survivor, downtimes[-1])
                                                + totals), file=sys.stderr)
        print("failover: %d rounds, IMAP back after median %.2fs max %.2fs"
              % (len(downtimes), sorted(downtimes)[len(downtimes) // 2], max(downtimes)),
              file=sys.stderr)

    def test_partition_minority_never_acks(self):
        hc = self.hc
        user = self.accounts[0][0]
        victim, epoch = hc.wait_primary()
        hc.wait_in_sync(timeout=60)
        store = hc.stores[victim]
        acked, refused = [], []
        stop = threading.Event()

        def writer():
            # Straight at the cut node's own store, from inside its node.
            n = 0
            while not stop.is_set():
                token = "part-%d-%s" % (n, new_id()[:8])
                n += 1
                try:
                    r = store.request("append", timeout_ms=3000, user=user, mailbox="INBOX",
                                      create=1, body=message(token, user), msgid=new_id())
                except procs.ProcessError:
                    continue  # no answer: nothing acknowledged
                if r.status == OK:
                    acked.append((time.monotonic(), token, r.get("uid")))
                elif r.status == STALE_EPOCH:
                    refused.append(time.monotonic())
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        try:
            time.sleep(1.0)
            self.assertTrue(acked, "the primary acknowledged nothing before the cut")
            t_cut = time.monotonic()
            hc.drop_link(victim)
            survivor, new_epoch = hc.wait_primary(above_epoch=epoch, exclude=(victim,),
                                                  timeout=FAILOVER_TIMEOUT)
            self.assertGreater(new_epoch, epoch)
            # The cut store refuses (STALE_EPOCH) while the majority serves.
            procs.wait_until(lambda: refused and refused[-1] > t_cut, timeout=10,
                             what="the cut store refusing writes")
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join(timeout=30)
        # What the majority serves: every write the minority ever OK'd.
        majority = hc.stores[survivor]
        sel = majority.request("mailbox_select", user=user, mailbox="INBOX")
        self.assertEqual(sel.status, OK, sel)
        client = self.login(*self.accounts[0])
        try:
            uidvalidity, found = mailbox_tokens(client, "INBOX")
        finally:
            client.shutdown()
        self.assertEqual(uidvalidity, sel.get("uidvalidity"))
        late = [(t - t_cut, token) for t, token, _ in acked if t > t_cut]
        for _, token, uid in acked:
            self.assertIn(token, found, "a write the cut primary acknowledged is lost "
                          "(acknowledged %d after the cut: %r)" % (len(late), late[:5]))
            self.assertEqual(found[token][0], uid)
        # New writes on the majority, which the healed node must catch up on.
        client = self.login(*self.accounts[0])
        for n in range(5):
            typ, _ = client.append("INBOX", None, None, message("majority-%d" % n, user))
            self.assertEqual(typ, "OK")
        client.shutdown()
        hc.heal_link(victim)
        hc.wait_primary(above_epoch=epoch)
        hc.wait_in_sync(timeout=60)
        # No divergence: the healed node, made primary again, serves exactly
        # what the majority served.
        before = self.store_state(majority)
        inbox = before.get((user, "INBOX"), (0, {}))[1]
        self.assertGreaterEqual(len(inbox), len(acked) + 5,
                                "the majority's INBOX misses messages: %d" % len(inbox))
        r = hc.ha[survivor].mxctl("cluster", "switchover", "shard1", "node%d" % victim,
                                  timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        hc.wait_primary(exclude=(survivor,), timeout=FAILOVER_TIMEOUT)
        hc.wait_in_sync(timeout=60)
        after = self.store_state(hc.stores[victim])
        self.assertEqual(before, after, "the stores diverge after healing")
        self.assertEqual(self.maildir_files(hc.stores[victim]),
                         self.maildir_files(majority), "the message files diverge")
        print("partition: node%d cut alone; it acknowledged %d writes (%d after the cut, "
              "all on the majority), refused %d with STALE_EPOCH; node%d promoted in epoch %d; "
              "after healing and a switchover back both stores hold the same %d mailboxes"
              % (victim, len(acked), len(late), len(refused), survivor, new_epoch, len(after)),
              file=sys.stderr)

    # ---- helpers ----------------------------------------------------------

    def store_state(self, store):
        """{(user, mailbox): (uidvalidity, {uid: (flags, pop3 uidl)})} of the
        test accounts, read from STORE (which must be the primary)."""
        out = {}
        for user, _ in self.accounts:
            listing = store.request("mailbox_list", user=user)
            self.assertEqual(listing.status, OK, listing)
            for mailbox in listing.all("mailbox"):
                name = mailbox.decode() if isinstance(mailbox, bytes) else mailbox
                sel = store.request("mailbox_select", user=user, mailbox=name)
                self.assertEqual(sel.status, OK, sel)
                f = store.request("message_fetch", user=user, mailbox=name, uid_set="1:*",
                                  fetch_items=FETCH_FLAGS | FETCH_POP3_UIDL)
                self.assertEqual(f.status, OK, f)
                msgs, uid = {}, None
                for k, v in f:
                    if k == "uid":
                        uid = v
                        msgs[uid] = ([], None)
                    elif k == "flag" and uid is not None:
                        msgs[uid][0].append(v)
                    elif k == "pop3_uidl" and uid is not None:
                        msgs[uid] = (msgs[uid][0], v)
                out[(user, name)] = (sel.get("uidvalidity"),
                                     {u: (tuple(sorted(fl)), ul) for u, (fl, ul) in msgs.items()})
        return out

    @staticmethod
    def maildir_files(store):
        found = set()
        for dirpath, dirnames, filenames in os.walk(store.root):
            if ".index" in dirnames:
                dirnames.remove(".index")
            if os.path.basename(dirpath) in ("cur", "new"):
                rel = os.path.relpath(os.path.dirname(dirpath), store.root)
                found |= {(rel, n) for n in filenames if not n.startswith(".")}
        return found


if __name__ == "__main__":
    unittest.main(verbosity=2)

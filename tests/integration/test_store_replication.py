"""test_store_replication - two real mx-store processes replicating one
shard, each under a fake mx-ha (tests/tools/mx-fake-ha: the role, epoch and
replicas come from a file this test writes).

One scenario, in order (each step needs the state the previous one left):
  1. A primary (epoch 1, replica B), B replica: B refuses clients with
     STALE_EPOCH; every append/flag/expunge A acknowledged is on B the
     moment the OK arrives (synchronous replication: same UIDs, same file
     names), B reports in_sync.
  2. Under a burst of concurrent appends, kill -9 A; promote B (epoch 2):
     every message A acknowledged is on B with the same UIDVALIDITY, UID,
     flags and POP3 UIDL.
  3. A rejoins as B's replica and catches up; roles switch back; then an
     unacknowledged write: B down (cannot ack), A commits an append it
     never acknowledges, A is killed, B promoted. A comes back as B's
     replica: its log has a record B never had (epoch histories differ),
     so it is wiped and resynced: afterwards A equals B and the
     unacknowledged message is gone from A too.
  4. A told a newer epoch refuses B's records: B fences itself (no more
     acks); reassigned in that epoch, replication resumes.
  5. B's mx-ha goes silent: after store.ha_lease B refuses writes.

With a short operation log (store.oplog_keep = 100), further tests show the
snapshot resync: a replica away while the primary wrote more than the log
keeps gets a snapshot (index rows and message files at one seq S0, then the
records after S0), ends identical and can be promoted; a replica killed in
the middle of a snapshot comes back, asks for a new one and ends identical;
the primary's log stays bounded.
"""

import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.environ.get("MX_SOURCE_DIR", ".") + "/deploy")
from mxlaunch import procs, stop_all  # noqa: E402
from mxlaunch.inbound import build_dir  # noqa: E402
from mxlaunch.store import FakeHa, Store  # noqa: E402

USER = "alice@example.test"
USER2 = "bob@example.test"
OK, DUPLICATE, TEMPFAIL, STALE_EPOCH = 0, 1, 2, 7
FENCED, PRIMARY, REPLICA = 0, 1, 2
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
FETCH_FLAGS, FETCH_POP3_UIDL = 0x1, 0x80


def new_id():
    return random.choice("01234567") + "".join(random.choice(ALPHABET) for _ in range(25))


def body(n):
    return (b"From: Carol <carol@example.test>\r\nTo: alice@example.test\r\n"
            b"Subject: replicated %d\r\nMessage-ID: <r%d@example.test>\r\n\r\n" % (n, n)
            + b"line of text\r\n" * (1 + n % 50))


def maildir_files(store):
    """{(user dir, folder, subdir, file name)} of every message file."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(store.root):
        if ".index" in dirnames:
            dirnames.remove(".index")
        sub = os.path.basename(dirpath)
        if sub in ("cur", "new"):
            rel = os.path.relpath(os.path.dirname(dirpath), store.root)
            out |= {(rel, sub, n) for n in filenames if not n.startswith(".")}
    return out


def fetch_all(store, user, mailbox):
    """{uid: (flags tuple, pop3 uidl)} and the UIDVALIDITY."""
    sel = store.request("mailbox_select", user=user, mailbox=mailbox)
    assert sel.status == OK, sel
    f = store.request("message_fetch", user=user, mailbox=mailbox, uid_set="1:*",
                      fetch_items=FETCH_FLAGS | FETCH_POP3_UIDL)
    assert f.status == OK, f
    out, uid = {}, None
    for name, value in f:
        if name == "uid":
            uid = value
            out[uid] = ([], None)
        elif name == "flag" and uid is not None:
            out[uid][0].append(value)
        elif name == "pop3_uidl" and uid is not None:
            out[uid] = (out[uid][0], value)
    return sel.get("uidvalidity"), {u: (tuple(sorted(fl)), uidl) for u, (fl, uidl) in out.items()}


class StoreReplicationTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="mxrepl-")
        self.ha = {}
        self.stores = {}
        for name in ("a", "b"):
            os.mkdir(os.path.join(self.dir, name))
            self.ha[name] = FakeHa(self.dir, "ha-" + name)
        self.rep = {name: "tcp://127.0.0.1:%d" % procs.free_port() for name in ("a", "b")}
        for name in ("a", "b"):
            self.stores[name] = Store(root=os.path.join(self.dir, name), ha_control=self.ha[name].endpoint,
                                      replication_listen=self.rep[name], ha_lease="1500ms",
                                      replication_timeout="1s")

    def tearDown(self):
        for s in self.stores.values():
            s.close()
        for h in self.ha.values():
            h.stop()
        if not os.environ.get("MX_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def append(self, store, n, user=USER, mailbox="INBOX", msgid=None, timeout_ms=10000, **kw):
        return store.request("append", timeout_ms=timeout_ms, user=user, mailbox=mailbox, create=1,
                             body=body(n), msgid=msgid or new_id(), **kw)

    def wait_role(self, name, role, epoch, **more):
        def ok(r):
            return (r.get("role") == role and r.get("epoch") == epoch
                    and all(r.get(k) == v for k, v in more.items()))
        return self.ha[name].wait_report(ok, what="role %d epoch %d %r" % (role, epoch, more))

    def test_replication_failover_resync_fencing(self):
        a, b = self.stores["a"], self.stores["b"]
        # ---- 1. A primary, B replica, synchronous ----
        self.ha["b"].assign("replica", 1)
        self.ha["a"].assign("primary", 1, [self.rep["b"]])
        self.wait_role("b", REPLICA, 1)
        self.wait_role("a", PRIMARY, 1)
        # a write before B caught up does not wait for it (B could not be
        # promoted then); once B reports in sync, every write waits for B
        self.ha["b"].wait_report(lambda r: r.get("in_sync") == 1, what="B in sync")
        self.assertEqual(self.append(b, 0).status, STALE_EPOCH, "a replica must refuse writes")
        self.assertEqual(b.request("mailbox_list", user=USER).status, STALE_EPOCH,
                         "a replica must refuse reads")
        acked = {}
        for n in range(1, 16):
            r = self.append(a, n, user=USER if n % 3 else USER2, mailbox="INBOX" if n % 4 else "Work")
            self.assertEqual(r.status, OK, r)
            acked[n] = r
            # synchronous: on B (same file name) the moment A said OK
            self.assertEqual(maildir_files(a), maildir_files(b), "after append %d" % n)
        r = a.request("flags_store", user=USER, mailbox="INBOX", uid_set="1:3", flag_mode=1,
                      fields=[("flag", "\\Seen"), ("flag", "\\Deleted"), ("flag", "$Work")])
        self.assertEqual(r.status, OK, r)
        r = a.request("message_expunge", user=USER, mailbox="INBOX", uid_set="2")
        self.assertEqual(r.status, OK, r)
        self.assertEqual(maildir_files(a), maildir_files(b))
        procs.wait_until(lambda: self.ha["b"].report().get("in_sync") == 1 and
                         self.ha["b"].report().get("seq") == self.ha["a"].report().get("seq") > 0,
                         timeout=15, what="the replica to report in sync at the primary's seq")
        self.assertEqual(self.ha["b"].report()["role"], REPLICA)
        self.assertIn(self.rep["b"], self.ha["a"].report()["peer"])
        before = {(u, m): fetch_all(a, u, m) for u, m in
                  ((USER, "INBOX"), (USER, "Work"), (USER2, "INBOX"), (USER2, "Work"))}

        # ---- 2. kill -9 the primary under load, promote the replica ----
        burst_acked, stop = [], threading.Event()

        def writer(k):
            n = 1000 * (k + 1)
            while not stop.is_set():
                n += 1
                mid = new_id()
                try:
                    r = self.append(a, n, msgid=mid, timeout_ms=1500)
                except procs.ProcessError:
                    continue  # no answer: not acknowledged
                if r.status == OK:
                    burst_acked.append((mid, r.get("uid"), r.get("uidvalidity")))
        threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        a.kill()
        stop.set()
        for t in threads:
            t.join()
        self.assertGreater(len(burst_acked), 5, "the burst got too few acknowledgements to mean much")
        self.ha["b"].assign("primary", 2)  # degraded: A is gone
        self.wait_role("b", PRIMARY, 2)
        for (user, mailbox), (uv, msgs) in before.items():
            uv_b, msgs_b = fetch_all(b, user, mailbox)
            self.assertEqual(uv_b, uv, (user, mailbox))
            for uid, (flags, uidl) in msgs.items():
                self.assertIn(uid, msgs_b, (user, mailbox, uid))
                self.assertEqual(msgs_b[uid], (flags, uidl), (user, mailbox, uid))
        uv_b, msgs_b = fetch_all(b, USER, "INBOX")
        for mid, uid, uv in burst_acked:
            self.assertEqual(uv, uv_b)
            self.assertIn(uid, msgs_b, "acknowledged append %s uid %d lost in the failover" % (mid, uid))
            # the retry of an acknowledged message finds it under the same UID
            r = self.append(b, 0, msgid=mid)
            self.assertEqual((r.status, r.get("uid")), (DUPLICATE, uid))
        self.assertEqual(self.append(b, 50).status, OK)

        # ---- 3. the old primary rejoins; an unacknowledged write; resync ----
        # A comes back as B's replica (epoch 3) and catches up (or resyncs:
        # the kill may have left it a record B never got)
        self.ha["a"].assign("replica", 3)
        self.ha["b"].assign("primary", 3, [self.rep["a"]])
        a.start()
        self.wait_role("a", REPLICA, 3)
        self.wait_role("b", PRIMARY, 3)
        self.ha["a"].wait_report(lambda r: r.get("in_sync") == 1, what="A in sync with B")
        self.assertEqual(maildir_files(a), maildir_files(b), "A caught up with B's epoch-2 writes")
        # switch back (A is in sync): epoch 4, A primary, B replica
        self.ha["b"].assign("replica", 4)
        self.ha["a"].assign("primary", 4, [self.rep["b"]])
        self.wait_role("b", REPLICA, 4)
        self.wait_role("a", PRIMARY, 4)
        self.ha["b"].wait_report(lambda r: r.get("in_sync") == 1, what="B in sync with A")
        # B is down (a paused B would still apply what is queued for it):
        # A commits an append it never acknowledges, then dies
        b.stop()
        lost_id = new_id()
        self.assertEqual(self.append(a, 77, msgid=lost_id, timeout_ms=10000).status, TEMPFAIL)
        # the primary tells its mx-ha that it lost B (so mx-ha can drop it)
        self.ha["a"].wait_report(lambda r: r.get("in_sync") == 0 and self.rep["b"] not in r["peer"],
                                 what="A reporting B lost")
        a.kill()
        self.ha["b"].assign("primary", 5)
        b.start()
        self.wait_role("b", PRIMARY, 5)
        self.assertEqual(self.append(b, 78).status, OK)
        # A's log now ends with an epoch-4 record where B's has epoch 5's
        self.ha["a"].assign("replica", 5)
        self.ha["b"].assign("primary", 5, [self.rep["a"]])
        a.start()
        self.wait_role("a", REPLICA, 5)
        self.ha["a"].wait_report(lambda r: r.get("in_sync") == 1, what="A resynced")
        self.assertIn("store.snapshot_begin", a.log())
        self.assertEqual(maildir_files(a), maildir_files(b))
        self.assertNotIn(lost_id, "".join(n for _, _, n in maildir_files(a)),
                         "the unacknowledged append must be gone after the resync")
        self.assertEqual(self.append(b, 79).status, OK)
        self.assertEqual(maildir_files(a), maildir_files(b))

        # ---- 4. a replica in a newer epoch refuses; the primary fences ----
        self.ha["a"].assign("replica", 6)
        self.wait_role("a", REPLICA, 6)
        r = self.append(b, 80, timeout_ms=3000)
        self.assertEqual(r.status, STALE_EPOCH, "B must not acknowledge once a newer epoch exists")
        self.wait_role("b", FENCED, 6)
        self.ha["b"].assign("primary", 6, [self.rep["a"]])
        self.wait_role("b", PRIMARY, 6)
        self.assertEqual(self.append(b, 81).status, OK)
        self.assertEqual(maildir_files(a), maildir_files(b))

        # ---- 5. mx-ha silent: the lease runs out, the store fences ----
        self.ha["b"].assign("silent", 6)
        time.sleep(2.5)
        self.assertEqual(self.append(b, 82, timeout_ms=3000).status, STALE_EPOCH)
        self.ha["b"].assign("primary", 6, [self.rep["a"]])
        self.wait_role("b", PRIMARY, 6)
        self.assertEqual(self.append(b, 83).status, OK)

    def test_sync_write_waits_for_the_replica_or_degraded_mode(self):
        a, b = self.stores["a"], self.stores["b"]
        self.ha["b"].assign("replica", 1)
        self.ha["a"].assign("primary", 1, [self.rep["b"]])
        self.ha["b"].wait_report(lambda r: r.get("in_sync") == 1, what="B in sync")
        self.assertEqual(self.append(a, 1).status, OK)
        # a paused replica: the write waits for it, then is refused (TEMPFAIL,
        # never OK) once the replica missed store.replication_timeout
        b.proc.pause()
        try:
            started = time.monotonic()
            r = self.append(a, 2, timeout_ms=20000)
            waited = time.monotonic() - started
        finally:
            b.proc.resume()
        self.assertEqual(r.status, TEMPFAIL, "a sync primary acknowledged without its replica")
        self.assertGreaterEqual(waited, 0.9, "refused before store.replication_timeout (1s)")
        self.assertIn("store.writes_unconfirmed", a.log())
        # B gone for good: A reports it lost (a resumed B could catch up
        # again before the report is seen, so it is stopped first)
        b.stop()
        self.ha["a"].wait_report(lambda r: r.get("in_sync") == 0, what="A reporting B lost")
        # a write committed while B is lost, before mx-ha's decision, is
        # never acknowledged either: it is refused when its wait for B times
        # out or when mx-ha drops B, whichever comes first
        result = {}
        retry_id = new_id()
        seq_before = self.ha["a"].report()["seq"]
        t = threading.Thread(target=lambda: result.setdefault(
            "r", self.append(a, 3, msgid=retry_id, timeout_ms=20000)))
        t.start()
        # committed in epoch 1 (A's report shows its seq) before mx-ha decides
        self.ha["a"].wait_report(lambda r: r.get("seq", 0) > seq_before, what="the write committed")
        self.ha["a"].assign("primary", 2)  # degraded: A alone, a new epoch
        t.join(timeout=20)
        self.assertEqual(result["r"].status, TEMPFAIL, result)
        # the refused write is committed all the same: the sender's retry of
        # the same message id answers DUPLICATE instead of storing it twice
        self.assertEqual(self.append(a, 3, msgid=retry_id).status, DUPLICATE)
        self.assertEqual(self.append(a, 4).status, OK)  # degraded: local commit is enough

    def test_replica_with_records_of_its_own_is_resynced(self):
        a, b = self.stores["a"], self.stores["b"]
        self.ha["b"].assign("replica", 1)
        self.ha["a"].assign("primary", 1, [self.rep["b"]])
        self.ha["b"].wait_report(lambda r: r.get("in_sync") == 1, what="B in sync")
        for n in range(3):
            self.assertEqual(self.append(a, n).status, OK)
        # a file the replica's start-up recovery indexes: a record A never wrote
        b.stop()
        stray = os.path.join(b.maildir(USER), "new", "1700000000.M1P1Q1R0123456789abcdef.stray,S=22,W=22")
        with open(stray, "wb") as f:
            f.write(b"Subject: stray\r\n\r\nhi\r\n")
        before = self.ha["b"].report()["reports"]
        b.start()
        # a restarted store reports in_sync 0 until its primary says it caught up
        self.ha["b"].wait_report(lambda r: r.get("in_sync") == 1 and r["reports"] > before,
                                 what="B resynced")
        self.assertIn("store.orphan_indexed", b.log())
        self.assertIn("store.snapshot_begin", b.log())
        self.assertFalse(os.path.exists(stray))
        self.assertEqual(self.append(a, 9).status, OK)
        self.assertEqual(maildir_files(a), maildir_files(b))

    def test_two_replicas_both_have_every_acknowledged_write(self):
        a, b = self.stores["a"], self.stores["b"]
        os.mkdir(os.path.join(self.dir, "c"))
        self.ha["c"] = FakeHa(self.dir, "ha-c")
        self.rep["c"] = "tcp://127.0.0.1:%d" % procs.free_port()
        c = self.stores["c"] = Store(root=os.path.join(self.dir, "c"), ha_control=self.ha["c"].endpoint,
                                     replication_listen=self.rep["c"], ha_lease="1500ms",
                                     replication_timeout="1s")
        for name in ("b", "c"):
            self.ha[name].assign("replica", 1)
        self.ha["a"].assign("primary", 1, [self.rep["b"], self.rep["c"]])
        for name in ("b", "c"):
            self.ha[name].wait_report(lambda r: r.get("in_sync") == 1, what=name + " in sync")
        for n in range(10):
            self.assertEqual(self.append(a, n, mailbox="INBOX" if n % 2 else "Other").status, OK)
            files = maildir_files(a)
            self.assertEqual(files, maildir_files(b))
            self.assertEqual(files, maildir_files(c))
        # C goes away: the write C never confirms is refused, A reports the
        # loss, and mx-ha's reassignment with B alone takes new writes
        c.stop()
        self.assertEqual(self.append(a, 99, timeout_ms=20000).status, TEMPFAIL)
        self.ha["a"].wait_report(lambda r: r.get("in_sync") == 0 and r["peer"] == [self.rep["b"]],
                                 what="A reporting C lost, B kept")
        self.ha["b"].assign("replica", 2)
        self.ha["a"].assign("primary", 2, [self.rep["b"]])
        self.wait_role("a", PRIMARY, 2)
        self.assertEqual(self.append(a, 100).status, OK)
        self.assertEqual(maildir_files(a), maildir_files(b))


    def test_a_replica_catching_up_holds_up_no_write(self):
        """A replica far behind cannot be promoted until told it has
        everything: client writes meanwhile do not wait for it."""
        a, b = self.stores["a"], self.stores["b"]
        b.stop()
        self.ha["a"].assign("primary", 1)  # degraded: B comes later
        self.wait_role("a", PRIMARY, 1)
        tool = os.path.join(build_dir(), "tests", "tools", "mx-store-load")
        out = subprocess.run([tool, a.endpoint, USER, "2000", "32", "16384"], capture_output=True,
                             text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.ha["b"].assign("replica", 2)
        self.ha["a"].assign("primary", 2, [self.rep["b"]])
        b.start()
        procs.wait_until(lambda: "store.replica_catching_up" in a.log(), timeout=20, interval=0.005,
                         what="A shipping B's backlog")
        b.proc.pause()
        try:
            # A sends B nothing more while B is frozen (one message in flight)
            if "store.replica_promotable" in a.log():
                self.skipTest("B caught up with 2000 messages before it could be paused")
            # waiting for the frozen B would end in TEMPFAIL after 1s
            self.assertEqual(self.append(a, 1, timeout_ms=20000).status, OK)
        finally:
            b.proc.resume()
        self.ha["b"].wait_report(lambda r: r.get("in_sync") == 1, timeout=60, what="B in sync")
        # in sync again: every write waits for B
        self.assertEqual(self.append(a, 2).status, OK)
        self.assertEqual(maildir_files(a), maildir_files(b))

    # ---- snapshot resync (store.oplog_keep) ----------------------------------

    def use_oplog_keep(self, keep):
        """Restart both stores with store.oplog_keep = keep (same roots)."""
        for name in ("a", "b"):
            self.stores[name].close()
            self.stores[name] = Store(root=os.path.join(self.dir, name), ha_control=self.ha[name].endpoint,
                                      replication_listen=self.rep[name], ha_lease="1500ms",
                                      replication_timeout="2s", oplog_keep=keep)

    def uidnext(self, store, user, mailbox):
        sel = store.request("mailbox_select", user=user, mailbox=mailbox)
        self.assertEqual(sel.status, OK, sel)
        return sel.get("uidnext")

    def test_snapshot_resync_after_the_log_was_trimmed(self):
        keep = 100
        self.use_oplog_keep(keep)
        a, b = self.stores["a"], self.stores["b"]
        self.ha["b"].assign("replica", 1)
        self.ha["a"].assign("primary", 1, [self.rep["b"]])
        self.ha["b"].wait_report(lambda r: r.get("in_sync") == 1, what="B in sync")
        for n in range(4):
            self.assertEqual(self.append(a, n, mailbox="INBOX" if n % 2 else "Work").status, OK)
        # B goes away; mx-ha reassigns A without it (degraded)
        b.stop()
        self.ha["a"].assign("primary", 2)
        self.wait_role("a", PRIMARY, 2)
        start_seq = self.ha["a"].report()["seq"]
        for n in range(4, 124):
            self.assertEqual(self.append(a, n, user=USER if n % 5 else USER2,
                                         mailbox="INBOX" if n % 2 else "Work").status, OK)
        for mailbox, flag in (("INBOX", "\\Seen"), ("Work", "$Later")):
            r = a.request("flags_store", user=USER, mailbox=mailbox, uid_set="1:*", flag_mode=1,
                          fields=[("flag", flag)])
            self.assertEqual(r.status, OK, r)
        r = a.request("flags_store", user=USER, mailbox="INBOX", uid_set="1:12", flag_mode=1,
                      fields=[("flag", "\\Deleted")])
        self.assertEqual(r.status, OK, r)
        self.assertEqual(a.request("message_expunge", user=USER, mailbox="INBOX", uid_set="1:12").status, OK)
        r = a.request("mailbox_rename", user=USER, mailbox="Work", mailbox_new="Projects")
        self.assertEqual(r.status, OK, r)
        r = a.request("flags_store", user=USER, mailbox="Projects", uid_set="1:*", flag_mode=1,
                      fields=[("flag", "\\Flagged")])
        self.assertEqual(r.status, OK, r)
        seqs = a.oplog_seqs()
        seq = seqs[-1]
        self.assertGreaterEqual(seq - start_seq, 3 * keep, "the primary wrote too few records to trim past B")
        # every store keeps exactly the newest oplog_keep records (none is
        # shipping from A now): the log is bounded
        self.assertEqual(seqs, list(range(seq - keep + 1, seq + 1)))

        # B comes back: the records it needs are gone, so it gets a snapshot
        self.ha["b"].assign("replica", 3)
        self.ha["a"].assign("primary", 3, [self.rep["b"]])
        b.start()
        self.ha["b"].wait_report(lambda r: r.get("in_sync") == 1 and r.get("epoch") == 3, timeout=30,
                                 what="B in sync after a snapshot")
        self.assertIn("store.snapshot_begin", b.log())
        self.assertIn("store.snapshot_end", b.log())
        self.assertIn("store.snapshot_end", a.log())
        self.assertIn("trimmed", a.log())
        self.assertEqual(maildir_files(a), maildir_files(b))
        # shipping goes on on top of the snapshot
        self.assertEqual(self.append(a, 500, mailbox="Projects").status, OK)
        r = a.request("flags_store", user=USER, mailbox="INBOX", uid_set="13:20", flag_mode=2,
                      fields=[("flag", "\\Seen")])
        self.assertEqual(r.status, OK, r)
        self.assertEqual(maildir_files(a), maildir_files(b))
        boxes = ((USER, "INBOX"), (USER, "Projects"), (USER2, "INBOX"), (USER2, "Work"))
        before = {box: fetch_all(a, *box) for box in boxes}
        uidnext = {box: self.uidnext(a, *box) for box in boxes}

        # kill -9 the primary, promote the replica: same UIDVALIDITY, UIDs,
        # flags and UIDLs; UIDNEXT does not go back
        a.kill()
        self.ha["b"].assign("primary", 4)
        self.wait_role("b", PRIMARY, 4)
        for box in boxes:
            self.assertEqual(fetch_all(b, *box), before[box], box)
            self.assertEqual(self.uidnext(b, *box), uidnext[box], box)
            r = self.append(b, 600, user=box[0], mailbox=box[1])
            self.assertEqual((r.status, r.get("uid")), (OK, uidnext[box]), box)
        # B's own log is bounded too
        self.assertLessEqual(len(b.oplog_seqs()), keep)

    def test_replica_killed_during_a_snapshot(self):
        keep = 100
        self.use_oplog_keep(keep)
        a, b = self.stores["a"], self.stores["b"]
        b.stop()
        self.ha["a"].assign("primary", 1)  # degraded: B comes later
        self.wait_role("a", PRIMARY, 1)
        # big enough that the snapshot takes a while: ~120 MB of files
        big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 2000
        for n in range(60):
            r = a.request("append", user=USER, mailbox="INBOX" if n % 3 else "Big", create=1,
                          body=big + b"%d\r\n" % n, msgid=new_id(), timeout_ms=20000)
            self.assertEqual(r.status, OK, r)
        for mailbox in ("INBOX", "Big"):  # enough records to trim past seq 1
            for flag in ("\\Seen", "$One"):
                r = a.request("flags_store", user=USER, mailbox=mailbox, uid_set="1:*", flag_mode=1,
                              fields=[("flag", flag)])
                self.assertEqual(r.status, OK, r)
        self.assertGreater(a.oplog_seqs()[0], 1)

        self.ha["b"].assign("replica", 2)
        self.ha["a"].assign("primary", 2, [self.rep["b"]])
        b.start()
        # the first chunk's files are there: the wipe (and its marker) is
        # committed, the copy is partial
        procs.wait_until(lambda: "store.snapshot_begin" in b.log() and maildir_files(b), timeout=20,
                         interval=0.005, what="B's snapshot to be under way")
        # B wiped itself and cannot be promoted before the copy is done: a
        # client write does not wait for it (with B frozen, waiting would end
        # in TEMPFAIL after store.replication_timeout)
        b.proc.pause()
        self.assertNotIn("store.snapshot_end", b.log(), "the snapshot ended before the pause: make it bigger")
        self.assertEqual(self.append(a, 6, timeout_ms=20000).status, OK)
        b.kill()
        self.assertEqual(self.ha["b"].report().get("in_sync"), 0)
        # back: it knows its copy is partial, skips start-up recovery and
        # asks for a snapshot again; only then is it in sync
        b.start()
        self.ha["b"].wait_report(lambda r: r.get("in_sync") == 1, timeout=60, what="B in sync after a new snapshot")
        log = b.log()
        self.assertIn("store.snapshot_incomplete", log)
        self.assertEqual(log.count("store.snapshot_begin"), 2)
        self.assertIn("store.snapshot_end", log)
        self.assertIn("its last snapshot did not finish", a.log())
        self.assertEqual(maildir_files(a), maildir_files(b))
        self.assertEqual(self.append(a, 7).status, OK)
        before = fetch_all(a, USER, "INBOX"), fetch_all(a, USER, "Big")
        a.kill()
        self.ha["b"].assign("primary", 3)
        self.wait_role("b", PRIMARY, 3)
        self.assertEqual((fetch_all(b, USER, "INBOX"), fetch_all(b, USER, "Big")), before)


if __name__ == "__main__":
    try:
        unittest.main()
    finally:
        stop_all()

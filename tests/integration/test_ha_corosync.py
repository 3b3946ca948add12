"""test_ha_corosync - mx-ha on real Corosync, 3 nodes in network namespaces.

Each node is a network namespace on a private bridge (10.77.0.0/24, used
only inside the namespaces) running its own corosync (knet, token 500 ms),
its own mx-ha, and a mx-fake-store that polls mx-ha exactly as mx-store
does (status report every 200 ms, the assignment in the ack, a lease of
3 polls) and writes its current assignment to a file the test reads.

Shown here:
  - one primary per pair, agreed by all nodes, replicas on the others;
  - kill -9 of the primary node's corosync + mx-ha: another node promotes
    with a higher epoch within a few seconds; the dead node's store fences
    itself (lease); when the node comes back it rejoins as a replica;
  - partition 1 | 2: the single node loses quorum and fences, the two
    elect; never two primaries in the same (highest) epoch; after healing
    one primary and every node shows the same map;
  - mxctl cluster status / switchover; HAProxy agent-check answers.
"""

import os
import re
import shutil
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.environ.get("MX_SOURCE_DIR", ".") + "/deploy")
from mxlaunch import build_dir, start_process, stop_all, wait_until  # noqa: E402
from mxlaunch import netns  # noqa: E402
from mxlaunch.corosync import CorosyncRing  # noqa: E402
from mxlaunch.ha import CONTROL, AGENT_PORT, HaDaemon  # noqa: E402

VIP = "10.77.0.100"
PAIRS = [("shard1", "store", ["node1", "node2", "node3"], VIP + "/24", "eth0"),
         ("imap", "frontend", ["node2", "node3"])]
ASSIGN = re.compile(r"assign role=(\w+) epoch=(\d+)")
DAEMON_LEASE = "1s"


CAN_NETNS, WHY_NOT = netns.available()


class FakeStore:
    """mx-fake-store of one node; state() reads its current assignment."""

    def __init__(self, net, index, workdir):
        self.net, self.index = net, index
        self.out = os.path.join(workdir, "fake-store-node%d.state" % index)
        self.log = os.path.join(workdir, "fake-store-node%d.log" % index)
        binary = os.path.join(build_dir(), "tests", "tools", "mx-fake-store")
        addr = net.address(index)
        argv = net.argv(index, [binary, "-e", CONTROL, "-p", "shard1",
                                "-n", "tcp://%s:7301" % addr, "-r", "tcp://%s:7321" % addr,
                                "-i", "200", "-o", self.out])
        self.proc = start_process("fake-store-node%d" % index, argv, self.log)

    def state(self):
        """(role, epoch), ("none", 0) before the first line."""
        try:
            with open(self.out) as f:
                m = ASSIGN.search(f.read())
        except OSError:
            return ("none", 0)
        return (m.group(1), int(m.group(2))) if m else ("none", 0)


@unittest.skipUnless(CAN_NETNS, WHY_NOT)
class HaCorosyncTest(unittest.TestCase):
    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="mx-ha-test-")
        self.net = netns.NetnsCluster(3)
        self.ring = CorosyncRing(self.net, self.workdir)
        self.ring.wait_quorate([1, 2, 3])
        # the fake stores' lease is 3 polls of 200 ms: ha.daemon_lease above it
        self.ha = {i: HaDaemon(self.net, i, self.workdir, PAIRS, daemon_lease=DAEMON_LEASE,
                               log_level=os.environ.get("MX_HA_LOG_LEVEL", "info")).start()
                   for i in (1, 2, 3)}
        self.stores = {i: FakeStore(self.net, i, self.workdir) for i in (1, 2, 3)}
        self.primary = self.wait_single_primary([1, 2, 3])

    def tearDown(self):
        stop_all()  # processes first, then the namespaces (registry clean-ups)
        # A sanitizer build reports at exit (leaks) or mid-run into the logs;
        # mx-ha logs ha.map_conflict if two different maps ever carried one
        # epoch (a decision without quorum): both fail the test.
        sanitizer = []
        for root, _, files in os.walk(self.workdir):
            for name in files:
                if name.endswith(".log"):
                    with open(os.path.join(root, name), errors="replace") as f:
                        text = f.read()
                    if re.search(r"AddressSanitizer|LeakSanitizer|runtime error:|"
                                 r"event=ha\.map_conflict", text):
                        sanitizer.append(name)
        if self._outcome_ok() and not sanitizer:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print("\nlogs kept in %s" % self.workdir, file=sys.stderr)
        self.assertEqual(sanitizer, [], "sanitizer reports or map conflicts in these logs")

    def _outcome_ok(self):
        """Whether this test has passed so far (keeps the logs otherwise)."""
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return False  # unknown: keep the logs
        return not any(test is self for test, _ in result.errors + result.failures)

    # ---- helpers ----------------------------------------------------------

    def states(self, nodes):
        return {i: self.stores[i].state() for i in nodes}

    def wait_single_primary(self, nodes, above_epoch=0, timeout=10.0):
        """Wait until exactly one of NODES is primary in an epoch above
        ABOVE_EPOCH and all others of NODES are its replicas in that epoch;
        return the primary's index."""
        found = {}

        def settled():
            st = self.states(nodes)
            primaries = [i for i, (role, epoch) in st.items()
                         if role == "primary" and epoch > above_epoch]
            if len(primaries) != 1:
                return False
            epoch = st[primaries[0]][1]
            if any(st[i] != ("replica", epoch) for i in nodes if i != primaries[0]):
                return False
            found["primary"] = primaries[0]
            return True
        wait_until(settled, timeout=timeout, interval=0.05,
                   what="one primary among %s above epoch %d (now %s)"
                   % (nodes, above_epoch, self.states(nodes)))
        return found["primary"]

    def status(self, i):
        r = self.ha[i].mxctl("cluster", "status")
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def pair_line(self, i, pair="shard1"):
        m = re.search(r"^pair %s active=(\S+) epoch=(\d+)$" % pair, self.status(i), re.M)
        self.assertIsNotNone(m, self.status(i))
        return m.group(1), int(m.group(2))

    def agent(self, i):
        code = ("import socket; s = socket.create_connection(('127.0.0.1', %d), timeout=3); "
                "print(s.recv(64).decode().strip())" % AGENT_PORT)
        r = self.net.run(i, [sys.executable, "-c", code], timeout=10)
        return r.stdout.strip()

    def vip_holders(self):
        return [i for i in (1, 2, 3)
                if " %s/" % VIP in self.net.run(i, ["ip", "-4", "addr", "show", "dev", "eth0"]).stdout]

    def mac(self, i):
        return self.net.run(i, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()

    def neighbour_mac(self, i):
        out = self.net.run(i, ["ip", "neigh", "show", VIP, "dev", "eth0"]).stdout
        m = re.search(r"lladdr (\S+)", out)
        return m.group(1) if m else None

    def touch_vip(self, i):
        """Connect from node I to the VIP (the agent port listens on every
        address), so node I's neighbour table caches the VIP's MAC."""
        code = ("import socket; socket.create_connection(('%s', %d), timeout=3).close()"
                % (VIP, AGENT_PORT))
        r = self.net.run(i, [sys.executable, "-c", code], timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)

    def assert_no_split_brain(self, samples):
        """In every sample, at most one primary holds the highest epoch in
        which anyone is primary (an older-epoch "primary" is fenced by the
        epoch: its replicas refuse it)."""
        for st in samples:
            epochs = [e for role, e in st.values() if role == "primary"]
            if epochs:
                top = max(epochs)
                self.assertEqual(sum(1 for role, e in st.values()
                                     if role == "primary" and e == top), 1, st)

    # ---- tests ----------------------------------------------------------

    def test_agreed_map_status_and_agent(self):
        # At bootstrap the first store to report at the highest epoch leads
        # (preference order breaks exact ties): any one node, agreed by all.
        primary = self.primary
        epoch = self.stores[primary].state()[1]
        for i in (1, 2, 3):
            wait_until(lambda: self.pair_line(i) == ("node%d" % primary, epoch), timeout=5,
                       what="node%d's mxctl to show node%d" % (i, primary))
        out = self.status(2)
        print("\n--- mxctl cluster status (node2) ---\n" + out, file=sys.stderr)
        self.assertIn("quorum: yes", out)
        self.assertRegex(out, r"members: .*node1")
        replica = 2 if primary != 2 else 3
        self.assertRegex(out, r"  member node%d role=replica seq=\d+ in_sync=1 lag=\d+ state=up oplog=\d+-\d+"
                         % replica)
        self.assertRegex(out, r"  member node3 role=standby .*state=up")
        self.assertRegex(out, r"pair imap active=node2 epoch=\d+")
        # the frontend pair: node2 active -> up, node3 standby -> drain, node1 not a member
        wait_until(lambda: self.vip_holders() == [primary], timeout=5,
                   what="the VIP on node%d only (now %s)" % (primary, self.vip_holders()))
        wait_until(lambda: self.agent(2) == "up ready", timeout=5, what="agent up on node2")
        self.assertEqual(self.agent(3), "up drain")
        self.assertEqual(self.agent(1), "down")

    def test_kill_primary_node_promotes_replica(self):
        old = self.primary
        old_epoch = self.stores[old].state()[1]
        survivors = [i for i in (1, 2, 3) if i != old]
        t0 = time.monotonic()
        # corosync first, as when the node dies: the others learn it only
        # from the totem token timing out (500 ms), not from a clean CPG leave
        self.ring.node(old).kill()
        self.ha[old].kill()
        new = self.wait_single_primary(survivors, above_epoch=old_epoch, timeout=10)
        took = time.monotonic() - t0
        print("\nfailover after kill -9: node%d -> node%d in %.2fs"
              % (old, new, took), file=sys.stderr)
        self.assertLess(took, 5.0)
        self.assertNotEqual(new, old)
        # the dead node's store lost its lease: fenced, in its old epoch
        wait_until(lambda: self.stores[old].state()[0] == "fenced", timeout=3,
                   what="the orphaned store to fence itself")
        self.assertEqual(self.stores[old].state()[1], old_epoch)
        # the node comes back: a replica of the new epoch, primary unchanged
        new_epoch = self.stores[new].state()[1]
        self.ring.node(old).start()
        self.ha[old].start()
        wait_until(lambda: self.stores[old].state() == ("replica", new_epoch), timeout=15,
                   what="the old primary to rejoin as a replica")
        self.assertEqual(self.stores[new].state(), ("primary", new_epoch))
        # the killed mx-ha could not remove its VIP: the restarted one does
        wait_until(lambda: self.vip_holders() == [new], timeout=5,
                   what="the VIP on node%d only (now %s)" % (new, self.vip_holders()))
        for i in (1, 2, 3):
            wait_until(lambda: self.pair_line(i) == ("node%d" % new, new_epoch), timeout=5,
                       what="node%d to show the new map" % i)

    def test_partition_minority_fences_majority_elects(self):
        old = self.primary
        old_epoch = self.stores[old].state()[1]
        majority = [i for i in (1, 2, 3) if i != old]
        wait_until(lambda: self.vip_holders() == [old], timeout=5, what="the VIP on node%d" % old)
        for i in majority:
            self.touch_vip(i)
            self.assertEqual(self.neighbour_mac(i), self.mac(old))
        samples = []
        t0 = time.monotonic()
        self.net.link_down(old)
        fenced_at = promoted_at = None
        deadline = t0 + 10
        while time.monotonic() < deadline and (fenced_at is None or promoted_at is None):
            st = self.states([1, 2, 3])
            samples.append(st)
            now = time.monotonic() - t0
            if fenced_at is None and st[old][0] == "fenced":
                fenced_at = now
            if promoted_at is None and any(st[i][0] == "primary" and st[i][1] > old_epoch
                                           for i in majority):
                promoted_at = now
            time.sleep(0.02)
        print("\npartition: minority fenced at %s s, majority promoted at %s s"
              % (fenced_at, promoted_at), file=sys.stderr)
        self.assertIsNotNone(fenced_at, "the minority never fenced")
        self.assertIsNotNone(promoted_at, "the majority never promoted")
        self.assert_no_split_brain(samples)
        new = self.wait_single_primary(majority, above_epoch=old_epoch)
        new_epoch = self.stores[new].state()[1]
        # the VIP moved (the fenced minority dropped it), and the gratuitous
        # ARP updated the other node's cache at once (without it the stale
        # entry would point at the old primary until re-probed)
        wait_until(lambda: self.vip_holders() == [new], timeout=5,
                   what="the VIP on node%d only (now %s)" % (new, self.vip_holders()))
        observer = [i for i in majority if i != new][0]
        wait_until(lambda: self.neighbour_mac(observer) == self.mac(new), timeout=2,
                   what="node%d's ARP cache to follow the VIP" % observer)
        # the minority stays fenced and says why
        time.sleep(1.0)
        self.assertEqual(self.stores[old].state()[0], "fenced")
        self.assertIn("quorum: no", self.status(old))
        # heal: one primary, the old one follows, every node the same map
        self.net.link_up(old)
        wait_until(lambda: self.stores[old].state() == ("replica", new_epoch), timeout=15,
                   what="the healed node to become a replica (now %s)" % (self.states([old]),))
        self.assertEqual(self.wait_single_primary([1, 2, 3], above_epoch=old_epoch), new)
        for i in (1, 2, 3):
            wait_until(lambda: self.pair_line(i) == ("node%d" % new, new_epoch), timeout=5,
                       what="node%d to show the healed map" % i)
            self.assertIn("quorum: yes", self.status(i))

    def test_ha_death_waits_for_the_orphaned_primary_lease(self):
        # only mx-ha dies on the primary's node (corosync lives on): its
        # store may go on serving on its lease, so nobody is promoted before
        # that store has fenced itself; then the failover happens
        old = self.primary
        old_epoch = self.stores[old].state()[1]
        others = [i for i in (1, 2, 3) if i != old]
        t0 = time.monotonic()
        self.ha[old].kill()
        fenced_at = promoted_at = None
        while time.monotonic() - t0 < 10 and promoted_at is None:
            st = self.states([1, 2, 3])
            now = time.monotonic() - t0
            if fenced_at is None and st[old][0] == "fenced":
                fenced_at = now
            if any(st[i][0] == "primary" and st[i][1] > old_epoch for i in others):
                promoted_at = now
            time.sleep(0.02)
        print("\nmx-ha death: orphaned store fenced at %s s, promotion at %s s"
              % (fenced_at, promoted_at), file=sys.stderr)
        self.assertIsNotNone(promoted_at, "no promotion after the hold")
        self.assertIsNotNone(fenced_at, "the orphaned store never fenced")
        self.assertLess(fenced_at, promoted_at)
        self.assertLess(promoted_at, 5.0)
        self.wait_single_primary(others, above_epoch=old_epoch)

    def test_corosync_restart_under_running_ha(self):
        # a replica node's corosync dies: its mx-ha fences its store, the
        # others keep the primary; corosync comes back: mx-ha reconnects by
        # itself and the store is a replica again
        primary = self.primary
        epoch = self.stores[primary].state()[1]
        node = [i for i in (1, 2, 3) if i != primary][0]
        self.ring.node(node).kill()
        wait_until(lambda: self.stores[node].state()[0] == "fenced", timeout=5,
                   what="node%d's store to be fenced" % node)
        self.assertIn("quorum: no", self.status(node))
        # the primary stays; losing a replica moves its epoch on (the
        # replica misses what is acknowledged without it)
        wait_until(lambda: self.stores[primary].state()[0] == "primary" and
                   self.stores[primary].state()[1] > epoch, timeout=5,
                   what="node%d to stay primary in a new epoch" % primary)
        epoch = self.stores[primary].state()[1]
        self.ring.node(node).start()
        wait_until(lambda: self.stores[node].state() == ("replica", epoch), timeout=15,
                   what="node%d to rejoin as a replica (now %s)" % (node, self.states([node])))
        self.assertEqual(self.stores[primary].state(), ("primary", epoch))
        with open(self.ha[node].log) as f:
            log = f.read()
        self.assertIn("ha.corosync_lost", log)
        self.assertGreaterEqual(log.count("ha.corosync_joined"), 2)

    def test_switchover(self):
        old = self.primary
        old_epoch = self.stores[old].state()[1]
        target = 3 if old != 3 else 2
        r = self.ha[2].mxctl("-w", "10", "cluster", "switchover", "shard1", "node%d" % target)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("-> node%d" % target, r.stdout)
        self.assertEqual(self.wait_single_primary([1, 2, 3], above_epoch=old_epoch), target)
        # unknown pair / non-member target: refused with a reason
        r = self.ha[1].mxctl("cluster", "switchover", "nosuch")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("nosuch", r.stderr)
        r = self.ha[1].mxctl("cluster", "switchover", "imap", "node1")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not a member", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)

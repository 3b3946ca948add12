"""corosync - one real Corosync 3 (knet) per network namespace.

    net = NetnsCluster(3)
    ring = CorosyncRing(net, workdir)      # writes configs, starts 3 nodes
    ring.wait_quorate([1, 2, 3])
    ring.nodes[0].kill()                   # kill -9, as a crash
    ring.nodes[0].start()                  # back again

What it takes to run several corosyncs on one host (INFRA.md):
  - its IPC is abstract unix sockets, which are per network namespace, so
    one corosync per namespace (and its clients - mx-ha, corosync-quorumtool
    - run in the same namespace);
  - it hard-codes its lock file and run directory under /run, so each one
    runs in a private mount namespace (unshare -m --propagation private)
    with its own directory bind-mounted over /run;
  - token 500 ms with token_coefficient 0: a dead node is noticed in about
    a second whatever the node count;
  - kill -9 leaves libqb's shared-memory ring buffers (/dev/shm/qb-*) of the
    killed process behind: they are removed after a kill and at teardown.
"""

import glob
import os
import subprocess
import time

from .procs import registry, start_process, wait_until

__all__ = ["CorosyncNode", "CorosyncRing"]

CLUSTER_NAME = "mxtest"


def _config(cluster_name, nodes):
    lines = [
        "totem {",
        "  version: 2",
        "  cluster_name: %s" % cluster_name,
        "  transport: knet",
        "  token: 500",
        "  token_coefficient: 0",
        "  ip_version: ipv4",
        "  crypto_cipher: none",
        "  crypto_hash: none",
        "}",
        "nodelist {",
    ]
    for nodeid, name, address in nodes:
        lines += [
            "  node {",
            "    ring0_addr: %s" % address,
            "    name: %s" % name,
            "    nodeid: %d" % nodeid,
            "  }",
        ]
    lines += [
        "}",
        "quorum {",
        "  provider: corosync_votequorum",
        "}",
        "logging {",
        "  to_stderr: yes",
        "  to_logfile: no",
        "  to_syslog: no",
        "  timestamp: on",
        "}",
        "",
    ]
    return "\n".join(lines)


def _remove_shm_of(pids):
    """Remove libqb ring buffers named after any of PIDS (dead processes)."""
    for path in glob.glob("/dev/shm/qb-*"):
        name = os.path.basename(path)
        if any("-%d-" % pid in name for pid in pids):
            try:
                os.unlink(path)
            except OSError:
                pass


class CorosyncNode:
    """Corosync of node INDEX (1-based) of a NetnsCluster."""

    def __init__(self, net, index, workdir, nodes, cluster_name=CLUSTER_NAME):
        self.net = net
        self.index = index
        self.name = "node%d" % index
        self.dir = os.path.join(workdir, "corosync-%s" % self.name)
        self.run_dir = os.path.join(self.dir, "run")
        os.makedirs(self.run_dir, exist_ok=True)
        os.makedirs(os.path.join(self.dir, "lib"), exist_ok=True)
        self.conf = os.path.join(self.dir, "corosync.conf")
        with open(self.conf, "w") as f:
            f.write(_config(cluster_name, nodes))
        self.log = os.path.join(self.dir, "corosync.log")
        self.proc = None
        self._dead_pids = []

    def start(self, timeout=15.0):
        """start - run corosync in the node's namespace with a private /run,
        and wait until its IPC answers."""
        # The bind mount must happen inside the new mount namespace, right
        # before exec; sh gets the two paths as positional parameters, never
        # interpolated into the script.
        script = 'mount --bind "$1" /run && exec corosync -f -c "$2"'
        argv = self.net.argv(self.index, [
            "unshare", "-m", "--propagation", "private",
            "sh", "-c", script, "sh", self.run_dir, self.conf])
        self.proc = start_process("corosync-%s" % self.name, argv, self.log)
        self.proc.wait_ready(self.answers, timeout=timeout,
                             what="corosync IPC in %s" % self.net.namespace(self.index))
        return self

    def answers(self):
        r = self.net.run(self.index, ["corosync-cfgtool", "-s"], timeout=5)
        return r.returncode == 0

    def quorate(self):
        """quorate - corosync-quorumtool's verdict from inside the node."""
        r = self.net.run(self.index, ["corosync-quorumtool", "-s"], timeout=5)
        for line in r.stdout.splitlines():
            if line.strip().startswith("Quorate:"):
                return line.split(":", 1)[1].strip() == "Yes"
        return False

    def _pids(self):
        """The corosync pid(s) in the process group (leader is ip netns exec
        -> unshare -> sh, which exec'd corosync, so the leader IS corosync)."""
        return [self.proc.pid] if self.proc else []

    def kill(self):
        """kill - SIGKILL corosync (a node crash), then clean its shm."""
        if self.proc is None:
            return
        pids = self._pids()
        self.proc.kill()
        self.proc = None
        self._dead_pids += pids
        _remove_shm_of(pids)

    def stop(self):
        if self.proc is None:
            return
        pids = self._pids()
        self.proc.stop()
        self.proc = None
        _remove_shm_of(pids)


class CorosyncRing:
    """A corosync on every node of NET, all in one cluster."""

    def __init__(self, net, workdir, start=True):
        self.net = net
        members = [(i, "node%d" % i, net.address(i)) for i in range(1, net.n + 1)]
        self.nodes = [CorosyncNode(net, i, workdir, members) for i in range(1, net.n + 1)]
        registry.add_cleanup(self._cleanup_shm)
        if start:
            for node in self.nodes:
                node.start()

    def node(self, i):
        return self.nodes[i - 1]

    def wait_quorate(self, indexes, timeout=20.0):
        for i in indexes:
            wait_until(self.node(i).quorate, timeout=timeout, interval=0.2,
                       what="quorum on node%d" % i)

    def _cleanup_shm(self):
        pids = []
        for node in self.nodes:
            pids += node._dead_pids
            if node.proc is not None:
                pids.append(node.proc.pid)
        # Give processes stopped just before a moment to release their maps.
        time.sleep(0.05)
        _remove_shm_of(pids)

    def close(self):
        for node in self.nodes:
            node.stop()
        self._cleanup_shm()

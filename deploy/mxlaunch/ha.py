"""ha - mx-ha (and mxctl) on a node of a NetnsCluster running corosync.

    ha = HaDaemon(net, 2, workdir, pairs=[("shard1", "store", ["node1", "node2"])])
    ha.start()
    print(ha.mxctl("cluster", "status").stdout)

Every node namespace has its own loopback, so every mx-ha uses the same
ports (ha.control tcp://127.0.0.1:7400, ha.publish :7410) without clashing.
"""

import os

from .inbound import build_dir
from .procs import start_process

__all__ = ["HaDaemon", "CONTROL", "ha_config"]

CONTROL = "tcp://127.0.0.1:7400"
PUBLISH = "tcp://127.0.0.1:7410"
AGENT_PORT = 7420


def _quote(text):
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def ha_config(node_name, node_id, state_dir, pairs, heartbeat="200ms", agent=True,
              log_level="info", daemon_lease="3s"):
    """ha_config - the libconfig text of one node's mx-ha. PAIRS is a list of
    (name, kind, [members]) or (name, kind, [members], vip, vip_interface)."""
    entries = []
    for pair in pairs:
        name, kind, members = pair[:3]
        vip, iface = (pair[3], pair[4]) if len(pair) > 3 else ("", "")
        entries.append("{ name = %s; kind = %s; members = [ %s ]; vip = %s; vip_interface = %s; }"
                       % (_quote(name), _quote(kind), ", ".join(_quote(m) for m in members),
                          _quote(vip), _quote(iface)))
    return "\n".join([
        "node = { name = %s; id = %d; state_dir = %s; };"
        % (_quote(node_name), node_id, _quote(state_dir)),
        "log = { level = %s; };" % _quote(log_level),
        "ha = {",
        "  control = %s;" % _quote(CONTROL),
        "  publish = %s;" % _quote(PUBLISH),
        "  cpg_group = \"mxcluster\";",
        "  heartbeat = %s;" % _quote(heartbeat),
        "  daemon_lease = %s;" % _quote(daemon_lease),
        "  agent_listen = %s;" % _quote("0.0.0.0:%d" % AGENT_PORT if agent else ""),
        "  pairs = ( %s );" % ",\n    ".join(entries),
        "};",
        "",
    ])


class HaDaemon:
    """mx-ha of node INDEX in NET (1-based; node name "node<INDEX>")."""

    def __init__(self, net, index, workdir, pairs, heartbeat="200ms", log_level="info",
                 daemon_lease="3s"):
        self.net = net
        self.index = index
        self.name = "node%d" % index
        self.dir = os.path.join(workdir, "ha-%s" % self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "mxcluster.conf")
        with open(self.conf, "w") as f:
            f.write(ha_config(self.name, index, self.dir, pairs, heartbeat=heartbeat,
                              log_level=log_level, daemon_lease=daemon_lease))
        self.log = os.path.join(self.dir, "mx-ha.log")
        self.proc = None

    def start(self, timeout=10.0):
        binary = os.path.join(build_dir(), "ha", "mx-ha")
        # In a sanitizer build: the SIGTERM/SIGINT events of
        # mx_daemon_on_signals live as long as the process on purpose; with
        # full stacks (slow unwinding) LeakSanitizer can tell them apart
        # from real leaks. Harmless for a normal build.
        suppressions = os.path.join(self.dir, "lsan.supp")
        with open(suppressions, "w") as f:
            f.write("leak:mx_daemon_on_signals\n")
        env = dict(os.environ)
        env["LSAN_OPTIONS"] = ":".join(filter(None, [env.get("LSAN_OPTIONS"),
                                                     "suppressions=" + suppressions]))
        env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"),
                                                     "fast_unwind_on_malloc=0"]))
        self.proc = start_process("mx-ha-%s" % self.name,
                                  self.net.argv(self.index, [binary, "-c", self.conf]),
                                  self.log, env=env)
        self.proc.wait_ready(lambda: self.mxctl("cluster", "status").returncode == 0,
                             timeout=timeout, what="mx-ha control socket")
        return self

    def mxctl(self, *args, timeout=15):
        """mxctl - run mxctl inside the node against this mx-ha."""
        binary = os.path.join(build_dir(), "ha", "mxctl")
        return self.net.run(self.index, [binary, "-c", self.conf] + list(args), timeout=timeout)

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc = None

    def stop(self):
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

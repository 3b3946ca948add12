"""netns - several "machines" on one host: network namespaces on a bridge.

    net = NetnsCluster(3)          # creates mx<pid>n1..n3 + mx<pid>br
    net.address(1)                 # "10.77.0.1"
    net.run(1, ["ip", "addr"])     # subprocess.run inside node 1
    net.argv(1, ["mx-ha", ...])    # argv that runs inside node 1 (for start_process)
    net.link_down(1); net.link_up(1)   # cut / heal node 1's only link
    net.close()                    # also at interpreter exit and on SIGTERM/SIGINT

Layout: each node namespace holds one veth end called eth0 with a private
address 10.77.0.<i>/24 (used only inside these namespaces); the other ends
are ports of bridge br0, which lives in a namespace of its own, so the root
namespace gets no test address, no route and no interface. Cutting a node
sets its bridge port down (its own eth0 stays up, as when a switch port or
cable fails: the node sees no error, only silence).

Needs CAP_SYS_ADMIN + CAP_NET_ADMIN (root); available() says whether this
process may create namespaces, so tests can skip with the reason.
"""

import os
import subprocess

from .procs import registry

__all__ = ["NetnsCluster", "NetnsError", "available"]


class NetnsError(RuntimeError):
    """An ip(8) command failed; the message holds the command and its stderr."""


def _ip(*args, check=True):
    cmd = ["ip"] + list(args)
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise NetnsError("%s: exit %d: %s" % (" ".join(cmd), r.returncode, r.stderr.strip()))
    return r


def available():
    """available - (True, "") if namespaces can be created here, else
    (False, reason)."""
    if os.geteuid() != 0:
        return False, "network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    name = "mxprobe%d" % os.getpid()
    try:
        r = _ip("netns", "add", name, check=False)
    except OSError as e:
        return False, "ip(8) not runnable: %s" % e
    if r.returncode != 0:
        return False, "ip netns add is not permitted: %s" % r.stderr.strip()
    _ip("netns", "del", name, check=False)
    return True, ""


class NetnsCluster:
    """N node namespaces joined by a bridge; see the module docstring."""

    def __init__(self, n, subnet="10.77.0", tag=None):
        if not 1 <= n <= 200:
            raise ValueError("1..200 nodes")
        self.n = n
        self.subnet = subnet
        tag = tag or "mx%d" % os.getpid()
        self.bridge_ns = "%sbr" % tag
        self.node_ns = ["%sn%d" % (tag, i) for i in range(1, n + 1)]
        self._closed = False
        registry.add_cleanup(self.close)
        try:
            self._create()
        except Exception:
            self.close()
            raise

    def _create(self):
        _ip("netns", "add", self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "set", "lo", "up")
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for i in range(1, self.n + 1):
            ns = self.namespace(i)
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # Both ends are created inside namespaces (never in the root one),
            # so names cannot clash with the host's or another run's.
            _ip("-n", self.bridge_ns, "link", "add", self._port(i), "type", "veth",
                "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.bridge_ns, "link", "set", self._port(i), "master", "br0")
            _ip("-n", self.bridge_ns, "link", "set", self._port(i), "up")
            _ip("-n", ns, "addr", "add", "%s/24" % self.address(i), "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    @staticmethod
    def _port(i):
        return "vh%d" % i

    def namespace(self, i):
        """namespace - the name of node I's namespace (1-based)."""
        return self.node_ns[i - 1]

    def address(self, i):
        """address - node I's IPv4 address."""
        return "%s.%d" % (self.subnet, i)

    def argv(self, i, argv):
        """argv - ARGV wrapped to run inside node I's namespace."""
        return ["ip", "netns", "exec", self.namespace(i)] + list(argv)

    def run(self, i, argv, **kwargs):
        """run - subprocess.run(ARGV) inside node I (stdout/stderr captured
        as text unless the caller says otherwise)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.argv(i, argv), **kwargs)

    def link_down(self, i):
        """link_down - cut node I off: its bridge port goes down."""
        _ip("-n", self.bridge_ns, "link", "set", self._port(i), "down")

    def link_up(self, i):
        """link_up - heal node I's link."""
        _ip("-n", self.bridge_ns, "link", "set", self._port(i), "up")

    def close(self):
        """close - delete every namespace (their veths go with them).
        Processes still running inside keep a namespace alive until they
        exit, so stop them first (the process registry does, before this
        clean-up runs)."""
        if self._closed:
            return
        self._closed = True
        registry.remove_cleanup(self.close)
        for ns in self.node_ns + [self.bridge_ns]:
            _ip("netns", "del", ns, check=False)

"""hacluster - a whole HA mail cluster on one host: three nodes in network
namespaces plus an "edge" namespace standing for the outside world.

    with HaCluster() as hc:
        hc.wait_primary()                       # "node1" or "node2"
        imap = hc.imap_connect()                # IMAP through HAProxy (edge)
        smtp = hc.smtp_connect()                # SMTP to mx-inbound (edge)
        hc.kill_node(1)                         # kill -9 every process of node1
        hc.drop_link(1); hc.heal_link(1)        # cut / heal node1's network
        hc.restart_node(1)                      # corosync, mx-ha, store, imapd again

Layout (NetnsCluster(4), addresses 10.77.0.<i> used only in the namespaces):

    node1, node2  corosync + mx-ha + mx-store (pair shard1, HA on, sync
                  replication) + mx-imapd + a private slapd
    node3         corosync + mx-ha + mx-imapd + slapd (the quorum vote; an
                  IMAP frontend that talks to whichever node is primary)
    edge (4)      slapd, mx-delivery, mx-inbound, HAProxy in front of the
                  three mx-imapd (PROXY v2, mx-ha agent checks), and the
                  test's own clients

Every node runs its own slapd with the same data (as a site would replicate
its directory): a cut link must not take LDAP away from the side that keeps
serving.  Accounts are added to all of them (add_accounts).

mx-inbound and mx-delivery sit on the edge because a 250 means "in
mx-inbound's durable spool": they survive a store node's crash and retry
towards the new primary, which is what the failover test checks.

The test process itself stays in the root namespace; netns_call() runs a
function in a thread that entered a node's namespace (setns(2) is per
thread), so sockets it opens and processes it starts live there.  This is
how the unmodified launchers (Slapd, Imapd, Delivery, Inbound) start inside
a node, and how clients connect to addresses that exist only there.

Teardown: every process is in the procs registry and every namespace
registers its removal, so close(), interpreter exit, SIGTERM and SIGINT all
remove everything, including corosync's /dev/shm/qb-* files.
"""

import ctypes
import glob
import imaplib
import os
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time

from . import procs
from .corosync import CorosyncNode
from .delivery import Delivery
from .ha import AGENT_PORT, PUBLISH as HA_PUBLISH, HaDaemon
from .haproxy import Haproxy
from .imapd import Imapd
from .inbound import Inbound, _lc_list, _lc_string, build_dir
from .netns import NetnsCluster
from .slapd import Slapd, _ssha
from .store import Store

__all__ = ["HaCluster", "NodeStore", "netns_call", "netns_connect", "NetnsIMAP4",
           "NetnsSMTP", "wait_imap_ok", "STORE_NODES", "IMAP_NODES", "EDGE"]

CLUSTER_NODES = (1, 2, 3)
STORE_NODES = (1, 2)
IMAP_NODES = (1, 2, 3)
EDGE = 4
STORE_PORT = 7301
STORE_PUBLISH_PORT = 7311
REPLICATION_PORT = 7321
IMAP_PORT = 1143
HAPROXY_PORT = 143

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def netns_call(namespace, fn, *args, **kwargs):
    """netns_call - FN(*ARGS, **KWARGS) in a thread that entered network
    namespace NAMESPACE (an `ip netns` name); returns its result or raises
    its exception.  Sockets created there stay in that namespace for their
    whole life; processes forked there are born in it."""
    outcome = {}

    def body():
        try:
            fd = os.open("/run/netns/%s" % namespace, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, "setns(%s): %s" % (namespace, os.strerror(err)))
            finally:
                os.close(fd)
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller's thread
            outcome["error"] = e

    thread = threading.Thread(target=body, name="netns-%s" % namespace, daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def netns_connect(namespace, address, timeout=None):
    """netns_connect - socket.create_connection(ADDRESS) from NAMESPACE."""
    return netns_call(namespace, socket.create_connection, address, timeout)


class NetnsIMAP4(imaplib.IMAP4):
    """imaplib.IMAP4 whose connection is made from a network namespace."""

    def __init__(self, namespace, host, port, timeout=10.0):
        self._namespace = namespace
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout):
        return netns_connect(self._namespace, (self.host, self.port), timeout)


class NetnsSMTP(smtplib.SMTP):
    """smtplib.SMTP whose connection is made from a network namespace."""

    def __init__(self, namespace, host, port, timeout=30.0):
        self._namespace = namespace
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host, port, timeout):
        return netns_connect(self._namespace, (host, port), timeout)


def _namespace_probe(namespace, host, port):
    """A readiness probe: HOST:PORT accepts TCP, seen from NAMESPACE."""
    probe = procs.port_probe(host, port)
    return lambda: netns_call(namespace, probe)


class NodeStore(Store):
    """mx-store of one node, HA on: listens on the node's address (clients
    on every node list all of a shard's stores), reports to the node's mx-ha,
    receives replicated records on REPLICATION_PORT.  request() runs
    mx-store-cli inside the node, so it reaches any store the node reaches."""

    def __init__(self, net, index, workdir, shard="shard1", log_level="info",
                 replication_mode="sync", replication_timeout="2s", ha_lease="3s",
                 max_batch=256):
        # Store.__init__ is not called: it binds 127.0.0.1, and here the
        # listeners must be on the node's own address.
        self.net = net
        self.index = index
        self._own_dir = False
        self.dir = os.path.join(workdir, "store-node%d" % index)
        os.makedirs(self.dir, exist_ok=True)
        self.root = os.path.join(self.dir, "root")
        self.address = net.address(index)
        self.port = STORE_PORT
        self.pub_port = STORE_PUBLISH_PORT
        self.endpoint = "tcp://%s:%d" % (self.address, STORE_PORT)
        self.publish = "tcp://%s:%d" % (self.address, STORE_PUBLISH_PORT)
        self.replication_endpoint = "tcp://%s:%d" % (self.address, REPLICATION_PORT)
        self.config_path = os.path.join(self.dir, "mxcluster.conf")
        self.log_path = os.path.join(self.dir, "store.log")
        self.cli = os.path.join(build_dir(), "tests", "tools", "mx-store-cli")
        with open(self.config_path, "w") as f:
            f.write("""
node = { name = %(node)s; id = %(id)d; state_dir = %(state)s; };
log = { level = %(level)s; };
store = {
  root = %(root)s;
  listen = %(listen)s;
  publish = %(publish)s;
  shard = %(shard)s;
  index_map_size = "256M";
  max_batch = %(batch)d;
  ha_control = %(ha)s;
  replication_listen = %(repl)s;
  replication_mode = %(mode)s;
  replication_timeout = %(repl_timeout)s;
  ha_lease = %(lease)s;
};
""" % {"node": _lc_string("node%d" % index), "id": 20 + index,
       "state": _lc_string(self.dir), "level": _lc_string(log_level),
       "root": _lc_string(self.root), "listen": _lc_string(self.endpoint),
       "publish": _lc_string(self.publish), "shard": _lc_string(shard), "batch": max_batch,
       "ha": _lc_string("tcp://127.0.0.1:7400"), "repl": _lc_string(self.replication_endpoint),
       "mode": _lc_string(replication_mode), "repl_timeout": _lc_string(replication_timeout),
       "lease": _lc_string(ha_lease)})
        self.proc = None
        self.start()

    def start(self):
        argv = self.net.argv(self.index, [os.path.join(build_dir(), "store", "mx-store"),
                                          "-c", self.config_path])
        self.proc = procs.start_process(
            "mx-store-node%d" % self.index, argv, self.log_path,
            ready=_namespace_probe(self.net.namespace(self.index), self.address, STORE_PORT),
            timeout=30, what="its bus port")

    def cli_argv(self, request, fields, timeout_ms=10000):
        return self.net.argv(self.index, super().cli_argv(request, fields, timeout_ms))

    def oplog(self):
        """oplog - [(seq, type, length)] of the store's operation log, read
        with mxctl-store while the store is STOPPED (its own contract)."""
        binary = os.path.join(build_dir(), "store", "mxctl-store")
        r = subprocess.run([binary, "-c", self.config_path, "oplog"], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=60)
        if r.returncode != 0:
            raise procs.ProcessError("mxctl-store oplog (node%d): exit %d: %s"
                                     % (self.index, r.returncode, r.stderr.strip()))
        out = []
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0].isdigit():
                out.append((int(parts[0]), parts[1], int(parts[2])))
        return out

    def close(self):
        self.stop()
        self.proc = None


class _NodeImapd(Imapd):
    """mx-imapd whose plain IMAP listener is on every address of its node
    (HAProxy on the edge reaches it); everything else as Imapd."""

    def write_config(self):
        self.imap_overrides["listen"] = _lc_list(["0.0.0.0:%d" % self.ports["imap"]])
        super().write_config()


class HaCluster:
    """See the module docstring.

    workdir           where every component keeps its files (default: a
                      temporary directory, removed by close(keep_logs=False))
    log_level         of the mx daemons
    replication_mode  "sync" (default) or "async"
    heartbeat         mx-ha's ha.heartbeat (and the stores' polling period)
    agent_checks      HAProxy follows mx-ha's agent (up/drain/down); False:
                      health checks only (every live mx-imapd gets clients)
    """

    def __init__(self, workdir=None, log_level="info", replication_mode="sync",
                 heartbeat="200ms", ha_lease="3s", store_timeout="3s", agent_checks=True):
        self._own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="mx-hacluster-")
        self.log_level = log_level
        self.replication_mode = replication_mode
        self.heartbeat = heartbeat
        self.ha_lease = ha_lease
        self.store_timeout = store_timeout
        self.agent_checks = agent_checks
        self.net = None
        self.corosync = {}
        self.ha = {}
        self.stores = {}
        self.imapds = {}
        self.ldaps = {}
        self.delivery = self.inbound = self.haproxy = None
        self.down_links = set()
        self._qb_pids = set()
        self._closed = False
        procs.registry.add_cleanup(self.close)
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # --- construction -------------------------------------------------------

    def namespace(self, i):
        return self.net.namespace(i)

    @property
    def edge(self):
        return self.net.namespace(EDGE)

    def pairs(self):
        return [("shard1", "store", ["node%d" % i for i in STORE_NODES]),
                ("imap", "frontend", ["node%d" % i for i in IMAP_NODES])]

    def shard_endpoints(self):
        return ([self.stores_endpoint(i) for i in STORE_NODES],
                ["tcp://%s:%d" % (self.net.address(i), STORE_PUBLISH_PORT) for i in STORE_NODES])

    def stores_endpoint(self, i):
        return "tcp://%s:%d" % (self.net.address(i), STORE_PORT)

    def _start(self):
        self.net = NetnsCluster(4)
        members = [(i, "node%d" % i, self.net.address(i)) for i in CLUSTER_NODES]
        for i in CLUSTER_NODES:
            self.corosync[i] = CorosyncNode(self.net, i, self.dir, members)
        for i in CLUSTER_NODES:
            self._started(self.corosync[i].start())
        for i in CLUSTER_NODES + (EDGE,):
            self.ldaps[i] = netns_call(self.namespace(i), Slapd)
        procs.wait_until(lambda: all(self.corosync[i].quorate() for i in CLUSTER_NODES),
                         timeout=20, interval=0.2, what="corosync quorum on every node")
        for i in CLUSTER_NODES:
            self.ha[i] = HaDaemon(self.net, i, self.dir, self.pairs(), heartbeat=self.heartbeat,
                                  log_level=self.log_level).start()
            self._started(self.ha[i])
        for i in STORE_NODES:
            self.stores[i] = NodeStore(self.net, i, self.dir, log_level=self.log_level,
                                       replication_mode=self.replication_mode,
                                       ha_lease=self.ha_lease)
        self.wait_primary(timeout=30)
        self.wait_in_sync(timeout=30)
        for i in IMAP_NODES:
            self._start_imapd(i)
        self._start_edge()

    def _start_imapd(self, i):
        overrides = {
            "proxy_from": _lc_list(["%s/32" % self.net.address(EDGE)]),
            "plaintext_auth_networks": _lc_list(["%s.0/24" % self.net.subnet, "127.0.0.0/8"]),
            "store_timeout": _lc_string(self.store_timeout),
            "auth_max_failures_per_ip": "100000",
            # the node's own mx-ha publishes the map every node agreed on:
            # after a failover the first request goes to the new primary
            "cluster_map": _lc_list([HA_PUBLISH]),
        }
        state_dir = os.path.join(self.dir, "imapd-node%d" % i)
        if i in self.imapds:
            netns_call(self.namespace(i), self.imapds[i].start)
            return
        os.makedirs(state_dir, exist_ok=True)
        self.imapds[i] = netns_call(
            self.namespace(i), _NodeImapd, self.ldaps[i], {"shard1": self.shard_endpoints()},
            state_dir=state_dir, imap_overrides=overrides, log_level=self.log_level,
            node_id=30 + i)

    def _start_edge(self):
        endpoints, _ = self.shard_endpoints()
        edge = self.edge
        ldap = self.ldaps[EDGE]
        delivery_dir = os.path.join(self.dir, "delivery")
        inbound_dir = os.path.join(self.dir, "inbound")
        os.makedirs(delivery_dir, exist_ok=True)
        os.makedirs(inbound_dir, exist_ok=True)
        self.delivery = netns_call(edge, Delivery, ldap, {"shard1": endpoints},
                                   state_dir=delivery_dir, log_level=self.log_level)
        shards = '( { name = "shard1"; endpoints = %s; } )' % _lc_list(endpoints)
        self.inbound = netns_call(
            edge, Inbound, ldap, self.delivery.endpoint, state_dir=inbound_dir,
            log_level=self.log_level, inbound_overrides={"shards": shards},
            instance_overrides={"mta": {"max_connections_per_ip": "1000000",
                                        "max_connection_rate": "0"}})
        backends = [("node%d" % i, self.net.address(i), self.imapds[i].port("imap"),
                     AGENT_PORT if self.agent_checks else None)
                    for i in IMAP_NODES]
        self.haproxy = Haproxy(os.path.join(self.dir, "haproxy"), backends,
                               listen=("0.0.0.0", HAPROXY_PORT),
                               argv_wrap=lambda argv: self.net.argv(EDGE, argv),
                               ready=_namespace_probe(edge, "127.0.0.1", HAPROXY_PORT))

    # --- accounts -------------------------------------------------------------

    def add_accounts(self, names, password=None, shard="shard1"):
        """add_accounts - mxAccount NAME@example.test (password NAME-secret
        unless given) in every node's slapd; returns [(address, password)]."""
        out, entries = [], []
        base = self.ldaps[EDGE].base_dn
        for name in names:
            pw = password or "%s-secret" % name
            entries.append("\n".join([
                "dn: uid=%s,ou=people,%s" % (name, base),
                "objectClass: top", "objectClass: person", "objectClass: organizationalPerson",
                "objectClass: inetOrgPerson", "objectClass: mxAccount",
                "uid: %s" % name, "cn: Test %s" % name, "sn: %s" % name,
                "mail: %s@example.test" % name, "userPassword: %s" % _ssha(pw),
                "mxAccountStatus: active", "mxStoreShard: %s" % shard]) + "\n")
            out.append(("%s@example.test" % name, pw))
        ldif = "\n".join(entries)
        for i, ldap in self.ldaps.items():
            netns_call(self.namespace(i), ldap.ldapadd, ldif, timeout=120)
        return out

    # --- clients ------------------------------------------------------------

    def imap_connect(self, timeout=10.0):
        """imap_connect - an IMAP client connected through HAProxy."""
        return NetnsIMAP4(self.edge, "127.0.0.1", HAPROXY_PORT, timeout=timeout)

    def smtp_connect(self, timeout=30.0):
        """smtp_connect - an SMTP client connected to mx-inbound's mta port."""
        return NetnsSMTP(self.edge, "127.0.0.1", self.inbound.port("mta"), timeout=timeout)

    # --- cluster state --------------------------------------------------------

    def cluster_status(self, i):
        """cluster_status - `mxctl cluster status` of node I (text, "" if it
        did not answer)."""
        ha = self.ha.get(i)
        if ha is None or ha.proc is None:
            return ""
        try:
            r = ha.mxctl("cluster", "status", timeout=5)
        except Exception:
            return ""
        return r.stdout if r.returncode == 0 else ""

    def map_of(self, i, pair="shard1"):
        """map_of - (active node name or None, epoch, quorate) as node I sees it."""
        text = self.cluster_status(i)
        m = re.search(r"^pair %s active=(\S+) epoch=(\d+)$" % re.escape(pair), text, re.M)
        quorate = re.search(r"^quorum: yes$", text, re.M) is not None
        if not m:
            return None, 0, quorate
        active = m.group(1)
        return (None if active in ("-", "none", "(none)") else active), int(m.group(2)), quorate

    def live_nodes(self):
        return [i for i in CLUSTER_NODES
                if self.ha.get(i) is not None and self.ha[i].proc is not None
                and i not in self.down_links]

    def primary(self, nodes=None):
        """primary - (node index, epoch) of shard1's primary as every live,
        connected, quorate node agrees, or (None, 0)."""
        seen = set()
        for i in nodes or self.live_nodes():
            active, epoch, quorate = self.map_of(i)
            if not quorate or active is None:
                return None, 0
            seen.add((active, epoch))
        if len(seen) != 1:
            return None, 0
        active, epoch = seen.pop()
        return int(active[len("node"):]), epoch

    def wait_primary(self, above_epoch=0, exclude=(), timeout=20.0):
        """wait_primary - until the live nodes agree on a primary in an epoch
        above ABOVE_EPOCH that is not in EXCLUDE; returns (index, epoch)."""
        found = {}

        def agreed():
            node, epoch = self.primary()
            if node is None or epoch <= above_epoch or node in exclude:
                return False
            found["v"] = (node, epoch)
            return True
        procs.wait_until(agreed, timeout=timeout, interval=0.05,
                         what="an agreed shard1 primary above epoch %d (now: %s)"
                         % (above_epoch, {i: self.map_of(i) for i in self.live_nodes()}))
        return found["v"]

    def member_lines(self, i, pair="shard1"):
        """member_lines - {node: {role, seq, in_sync, lag, state}} of PAIR in
        node I's status."""
        text = self.cluster_status(i)
        out, in_pair = {}, False
        for line in text.splitlines():
            if line.startswith("pair "):
                in_pair = line.split()[1] == pair
                continue
            m = re.match(r"\s+member (\S+) (.*)$", line)
            if in_pair and m:
                out[m.group(1)] = dict(kv.split("=", 1) for kv in m.group(2).split())
        return out

    def wait_in_sync(self, timeout=20.0):
        """wait_in_sync - until every live node's mx-ha shows every running,
        connected shard1 store with in_sync=1 (the replica caught up, and
        the nodes that would decide a failover know it)."""
        def wanted():
            return ["node%d" % i for i in STORE_NODES
                    if i in self.stores and self.stores[i].proc is not None
                    and i not in self.down_links]

        def synced():
            live = self.live_nodes()
            if not live:
                return False
            for node in live:
                members = self.member_lines(node)
                if not all(members.get(n, {}).get("in_sync") == "1" for n in wanted()):
                    return False
            return True
        procs.wait_until(synced, timeout=timeout, interval=0.1,
                         what="every shard1 store in sync on every node (%s)"
                         % {i: self.member_lines(i) for i in self.live_nodes()})

    # --- faults -------------------------------------------------------------

    def node_processes(self, i):
        found = []
        for part in (self.corosync.get(i), self.ha.get(i), self.stores.get(i),
                     self.imapds.get(i)):
            if part is not None and part.proc is not None:
                found.append(part.proc)
        return found

    def kill_node(self, i):
        """kill_node - kill -9 corosync, mx-ha, mx-store and mx-imapd of node
        I at the same instant (a power cut of the node's processes); its
        slapd stays, as a directory is not part of the node's roles."""
        for proc in self.node_processes(i):
            proc.signal(9)
        self.corosync[i].kill()  # reaps and removes its /dev/shm/qb-* files
        self.ha[i].kill()
        if i in self.stores:
            self.stores[i].kill()
            self.stores[i].proc = None
        if i in self.imapds:
            self.imapds[i].kill()
            self.imapds[i].proc = None

    def restart_node(self, i):
        """restart_node - start node I's processes again on their old state."""
        self._started(self.corosync[i].start())
        self._started(self.ha[i].start())
        if i in self.stores:
            self.stores[i].start()
        if i in self.imapds:
            self._start_imapd(i)

    def drop_link(self, i):
        self.net.link_down(i)
        self.down_links.add(i)

    def heal_link(self, i):
        self.net.link_up(i)
        self.down_links.discard(i)

    # --- diagnostics ----------------------------------------------------------

    def log_files(self):
        """log_files - every *.log under the work dir."""
        found = []
        for root, _, files in os.walk(self.dir):
            found += [os.path.join(root, f) for f in files if f.endswith(".log")]
        return sorted(found)

    # --- life cycle -----------------------------------------------------------

    def _started(self, part):
        """Remember the pid of a corosync or mx-ha just started: libqb names
        its shared-memory entries after both ends of an IPC connection."""
        if part.proc is not None:
            self._qb_pids.add(part.proc.pid)

    def _remove_qb_files(self):
        """Remove /dev/shm/qb-SERVER-CLIENT-* entries (files, or directories
        in this libqb) of the corosyncs and mx-has this cluster started: a
        kill -9 leaves them behind, and nothing else ever removes them."""
        for path in glob.glob("/dev/shm/qb-*"):
            fields = os.path.basename(path).split("-")
            pids = {int(f) for f in fields[1:3] if f.isdigit()}
            if pids & self._qb_pids:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass

    def close(self, keep_logs=False):
        """close - stop everything (processes first, then the namespaces) and
        remove the work dir unless KEEP_LOGS or it was given by the caller."""
        if self._closed:
            return
        self._closed = True
        procs.registry.remove_cleanup(self.close)
        parts = [self.haproxy, self.inbound, self.delivery]
        parts += list(self.imapds.values()) + list(self.stores.values())
        parts += list(self.ha.values())
        for part in parts:
            if part is not None:
                try:
                    part.stop()
                except Exception:
                    pass
        for node in self.corosync.values():
            try:
                node.stop()
            except Exception:
                pass
        for ldap in self.ldaps.values():
            try:
                ldap.close()
            except Exception:
                pass
        self._remove_qb_files()
        if self.net is not None:
            self.net.close()
        if self._own_dir and not keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(keep_logs=exc[0] is not None)
        return False


def wait_imap_ok(cluster, user, password, deadline, select="INBOX"):
    """wait_imap_ok - log in through HAProxy and SELECT, retrying until it
    works or DEADLINE (time.monotonic()); returns (client, seconds taken)."""
    start = time.monotonic()
    last = None
    while time.monotonic() < deadline:
        client = None
        try:
            client = cluster.imap_connect(timeout=3.0)
            client.login(user, password)
            typ, _ = client.select(select)
            if typ == "OK":
                return client, time.monotonic() - start
            last = "SELECT %s" % typ
        except Exception as e:  # refused, reset, NO/BAD, timeout: try again
            last = e
        if client is not None:
            try:
                client.shutdown()
            except Exception:
                pass
        time.sleep(0.05)
    raise procs.ProcessError("no IMAP login + SELECT through HAProxy in time: %s" % last)

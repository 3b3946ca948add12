"""haproxy - HAProxy in front of the IMAP frontends, as a production site runs
it: plain TCP, PROXY v2 to the backends (so mx-imapd sees the real client
address), and mx-ha's agent-check deciding which frontend gets clients.

    lb = Haproxy(workdir, [("node1", "10.77.0.1", 1143, 7420), ...],
                 listen=("0.0.0.0", 143), argv_wrap=lambda a: net.argv(4, a),
                 ready=probe_in_namespace)
    lb.port                          # the frontend port clients connect to
    lb.kill(); lb.start()
    lb.close()                       # also at interpreter exit (procs registry)

Health (INFRA.md, measured): "check check-send-proxy inter 500 fall 2"
notices a dead backend in about 0.7 s, whatever mx-ha says; the agent
(agent-check agent-port P agent-inter 500) answers up / drain / down from
mx-ha's cluster map, so a standby frontend gets no new clients and a node
without quorum gets none at all. "on-marked-down shutdown-sessions" cuts the
sessions of a backend marked down (its clients reconnect at once instead of
waiting for a TCP timeout) and "option redispatch" lets a connection whose
server failed be retried on another one.

mx-imapd must list this HAProxy's address in imap.proxy_from: every
connection, health checks included, opens with a PROXY v2 header.

HAProxy runs in the foreground (-db) under procs.start_process, so it is
stopped with everything else whatever happens.  argv_wrap runs it inside a
network namespace (NetnsCluster.argv); without it HAProxy runs on loopback.
"""

import os
import shutil
import socket
import subprocess

from . import procs

__all__ = ["Haproxy", "haproxy_config", "haproxy_binary"]


def haproxy_binary():
    """haproxy_binary - path of haproxy(1), or a ProcessError naming the package."""
    for candidate in (shutil.which("haproxy"), "/usr/sbin/haproxy"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise procs.ProcessError("haproxy not found (Debian package haproxy)")


def haproxy_config(listen, backends, inter_ms=500, fall=2, rise=1, agent_inter_ms=500,
                   stats_socket=None, connect_timeout="1s", client_timeout="5m"):
    """haproxy_config - the text of haproxy.cfg.

    listen    (address, port) of the frontend
    backends  [(name, address, port, agent_port or None)]
    """
    lines = [
        "global",
        "    maxconn 4096",
        # No syslog: -db keeps HAProxy in the foreground, its alerts go to
        # stderr and the per-connection lines (which server, timers, how it
        # ended) to stdout - both the log file.
        "    log stdout format raw local0 info",
    ]
    if stats_socket:
        lines.append("    stats socket %s mode 600 level admin" % stats_socket)
    lines += [
        "",
        "defaults",
        "    mode tcp",
        "    log global",
        "    option tcplog",
        "    timeout connect %s" % connect_timeout,
        "    timeout client %s" % client_timeout,
        "    timeout server %s" % client_timeout,
        # A connection refused by a dead backend is retried, on another
        # server thanks to redispatch: clients see a slow connect, not a
        # refusal, during the 0.7 s before health checks notice.
        "    retries 2",
        "    option redispatch",
        "",
        "frontend imap",
        "    bind %s:%d" % listen,
        "    default_backend imapd",
        "",
        "backend imapd",
        # "first": every client on the first usable server in order, which
        # with mx-ha's agent is the active frontend of the pair.
        "    balance first",
    ]
    for name, address, port, agent_port in backends:
        server = ("    server %s %s:%d send-proxy-v2 check check-send-proxy"
                  " inter %d fall %d rise %d on-marked-down shutdown-sessions"
                  % (name, address, port, inter_ms, fall, rise))
        if agent_port:
            server += " agent-check agent-port %d agent-inter %d" % (agent_port, agent_inter_ms)
        lines.append(server)
    lines.append("")
    return "\n".join(lines)


class Haproxy:
    """HAProxy in front of BACKENDS; see the module docstring.

    workdir   directory for haproxy.cfg and haproxy.log (created)
    backends  [(name, address, port, agent_port or None)]
    listen    (address, port) of the frontend; port None = a free loopback port
    argv_wrap function wrapping the argv (to run inside a namespace)
    ready     readiness probe (default: the frontend port on loopback answers)
    """

    def __init__(self, workdir, backends, listen=("127.0.0.1", None), argv_wrap=None,
                 ready=None, inter_ms=500, fall=2, rise=1, agent_inter_ms=500, name="haproxy"):
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.name = name
        address, port = listen
        self.address = address
        self.port = port or procs.free_port(address)
        self.backends = list(backends)
        self.config_path = os.path.join(self.dir, "haproxy.cfg")
        self.log_path = os.path.join(self.dir, "haproxy.log")
        self.stats_socket = os.path.join(self.dir, "stats.sock")
        self.argv_wrap = argv_wrap or (lambda argv: argv)
        probe_host = "127.0.0.1" if address in ("0.0.0.0", "") else address
        self.ready = ready or procs.port_probe(probe_host, self.port)
        with open(self.config_path, "w") as f:
            f.write(haproxy_config((address, self.port), self.backends, inter_ms=inter_ms,
                                   fall=fall, rise=rise, agent_inter_ms=agent_inter_ms,
                                   stats_socket=self.stats_socket))
        self.proc = None
        self.check_config()
        self.start()

    def check_config(self):
        """check_config - haproxy -c: a config error is reported with
        HAProxy's own message instead of as a start-up timeout."""
        r = subprocess.run([haproxy_binary(), "-c", "-q", "-f", self.config_path],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise procs.ProcessError("haproxy -c %s: exit %d: %s"
                                     % (self.config_path, r.returncode,
                                        (r.stderr or r.stdout).strip()))

    def start(self, timeout=10.0):
        argv = self.argv_wrap([haproxy_binary(), "-f", self.config_path, "-db"])
        self.proc = procs.start_process(self.name, argv, self.log_path, ready=self.ready,
                                        timeout=timeout, what="its frontend port %d" % self.port)
        return self

    def server_states(self, timeout=2.0):
        """server_states - {server name: (operational state, admin state,
        weight)} from the stats socket ("show servers state"): operational
        0 = down, 2 = up; admin bit 0x20 (32) = drain from the agent."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.stats_socket)
            sock.sendall(b"show servers state imapd\n")
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        states = {}
        for line in data.decode("utf-8", "replace").splitlines():
            fields = line.split()
            # be_id be_name srv_id srv_name srv_addr srv_op_state
            # srv_admin_state srv_uweight ...
            if len(fields) > 8 and fields[1] == "imapd":
                states[fields[3]] = (int(fields[5]), int(fields[6]), int(fields[7]))
        return states

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc = None

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def close(self):
        self.stop()

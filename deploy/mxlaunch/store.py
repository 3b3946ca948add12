"""store - start mx-store on free loopback ports, and talk to it.

    s = Store()                       # temporary root, listen + publish ports
    s.request("append", user="a@example.test", mailbox="INBOX", body=b"...")
    s.kill(); s.start()               # kill -9 and restart on the same root

HA (issue 6, opt-in): Store(ha_control=..., replication_listen=...) runs the
store under an mx-ha at ha_control; FakeHa stands in for that mx-ha in tests
(tests/tools/mx-fake-ha: the assignment comes from a file the test writes).

request() runs tests/tools/mx-store-cli (the standard library has no
ZeroMQ) and returns the reply as a list of (name, value) pairs; values of
string fields come back as bytes, numbers as int.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

from . import procs
from .inbound import _lc_string, build_dir

_NUMERIC = {"status", "uid", "uidvalidity", "uidnext", "modseq", "highestmodseq", "messages",
            "unseen", "size", "arrival", "quota_bytes", "quota_count", "quota_used",
            "mailbox_attrs", "change", "fetch_items", "flag_mode", "subscribe", "create"}


def _unescape(text):
    out = bytearray()
    i = 0
    raw = text.encode("utf-8", "surrogateescape")
    while i < len(raw):
        c = raw[i]
        if c == 0x5c and i + 1 < len(raw):
            n = raw[i + 1]
            if n == ord("x"):
                out.append(int(raw[i + 2:i + 4], 16))
                i += 4
                continue
            out.append({ord("n"): 10, ord("r"): 13, ord("t"): 9}.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return bytes(out)


class Reply(list):
    """The reply's fields in wire order, with helpers."""

    def get(self, name, default=None):
        for k, v in self:
            if k == name:
                return v
        return default

    def all(self, name):
        return [v for k, v in self if k == name]

    @property
    def status(self):
        return self.get("status")


class Store:
    """mx-store with its own root directory (kept across kill/start)."""

    def __init__(self, root=None, log_level="debug", max_batch=256, ha_control=None,
                 replication_listen=None, replication_mode="sync", replication_timeout="2s",
                 ha_lease="3s", shard="shard1", pair="", oplog_keep=None):
        self._own_dir = root is None
        self.dir = root or tempfile.mkdtemp(prefix="mxstore-")
        self.root = os.path.join(self.dir, "root")
        self.port = procs.free_port()
        self.pub_port = procs.free_port()
        self.endpoint = "tcp://127.0.0.1:%d" % self.port
        self.publish = "tcp://127.0.0.1:%d" % self.pub_port
        self.config_path = os.path.join(self.dir, "mxcluster.conf")
        self.log_path = os.path.join(self.dir, "store.log")
        self.cli = os.path.join(build_dir(), "tests", "tools", "mx-store-cli")
        ha = ""
        if ha_control:
            ha = """  shard = %s;
  pair = %s;
  ha_control = %s;
  replication_listen = %s;
  replication_mode = %s;
  replication_timeout = %s;
  ha_lease = %s;
""" % (_lc_string(shard), _lc_string(pair), _lc_string(ha_control), _lc_string(replication_listen or ""),
       _lc_string(replication_mode), _lc_string(replication_timeout), _lc_string(ha_lease))
        self.replication_endpoint = replication_listen
        with open(self.config_path, "w") as f:
            f.write("""
node = { name = "test1"; id = 3; state_dir = %(state)s; };
log = { level = %(level)s; };
store = {
  root = %(root)s;
  listen = %(listen)s;
  publish = %(publish)s;
  index_map_size = "256M";
  max_batch = %(batch)d;
%(keep)s%(ha)s};
""" % {"ha": ha, "keep": "  oplog_keep = %d;\n" % oplog_keep if oplog_keep else "",
       "state": _lc_string(self.dir), "level": _lc_string(log_level),
       "root": _lc_string(self.root), "listen": _lc_string(self.endpoint),
       "publish": _lc_string(self.publish), "batch": max_batch})
        self.proc = None
        self.start()

    def start(self):
        self.proc = procs.start_process(
            "mx-store", [os.path.join(build_dir(), "store", "mx-store"), "-c", self.config_path],
            self.log_path, ready=procs.port_probe("127.0.0.1", self.port), timeout=30,
            what="its bus port")

    def stop(self):
        if self.proc:
            self.proc.stop()

    def kill(self):
        """kill -9, then wait until it is gone."""
        if self.proc:
            self.proc.kill()

    def cli_argv(self, request, fields, timeout_ms=10000):
        argv = [self.cli, "-t", str(timeout_ms), self.endpoint, request]
        for name, value in fields:
            if isinstance(value, bytes):
                path = os.path.join(self.dir, "body-%d" % os.getpid())
                with open(path, "wb") as f:
                    f.write(value)
                value = "@" + path
            argv.append("%s=%s" % (name, value))
        return argv

    def request(self, request, fields=(), timeout_ms=10000, **kw):
        """request - one request; fields is a list of (name, value) pairs
        (for repeated fields), kw adds more. bytes values go through a file."""
        fields = list(fields) + list(kw.items())
        out = subprocess.run(self.cli_argv(request, fields, timeout_ms), capture_output=True,
                             check=False)
        if out.returncode != 0:
            raise procs.ProcessError("mx-store-cli %s: rc=%d %s" % (
                request, out.returncode, out.stderr.decode(errors="replace")))
        reply = Reply()
        for line in out.stdout.decode("utf-8", "surrogateescape").split("\n"):
            if "=" not in line:
                continue
            name, value = line.split("=", 1)
            reply.append((name, int(value) if name in _NUMERIC else _unescape(value)))
        return reply

    def oplog_seqs(self):
        """The sequence numbers in the store's operation log (mxctl-store
        oplog; LMDB lets it read beside a running mx-store)."""
        out = subprocess.run([os.path.join(build_dir(), "store", "mxctl-store"), "-c", self.config_path, "oplog"],
                             capture_output=True, check=True)
        return [int(line.split()[0]) for line in out.stdout.decode().splitlines() if line[:1].isdigit()]

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def maildir(self, user):
        local, domain = user.rsplit("@", 1)
        return os.path.join(self.root, domain.lower(), local)

    def close(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class FakeHa:
    """mx-fake-ha on a free loopback port: the mx-ha of one store."""

    def __init__(self, directory, name="ha"):
        self.dir = directory
        self.port = procs.free_port()
        self.endpoint = "tcp://127.0.0.1:%d" % self.port
        self.assignment_path = os.path.join(directory, name + ".assign")
        self.report_path = os.path.join(directory, name + ".report")
        self.log_path = os.path.join(directory, name + ".log")
        self.assign("fenced", 0)
        self.proc = procs.start_process(
            "mx-fake-ha", [os.path.join(build_dir(), "tests", "tools", "mx-fake-ha"), self.endpoint,
                           self.assignment_path, self.report_path],
            self.log_path, ready=procs.port_probe("127.0.0.1", self.port), timeout=10,
            what="its control port")

    def assign(self, role, epoch, peers=()):
        """role: primary | replica | fenced | silent (no answers: the lease runs out)."""
        tmp = self.assignment_path + ".tmp"
        with open(tmp, "w") as f:
            f.write("role=%s\nepoch=%d\n" % (role, epoch))
            for peer in peers:
                f.write("peer=%s\n" % peer)
        os.replace(tmp, self.assignment_path)

    def report(self):
        """The store's last status report: {"role": int, "seq": int, "peer": [..], ...}."""
        out = {"peer": []}
        try:
            with open(self.report_path) as f:
                for line in f:
                    name, _, value = line.rstrip("\n").partition("=")
                    if name == "peer":
                        out["peer"].append(value)
                    else:
                        out[name] = int(value) if value.isdigit() else value
        except FileNotFoundError:
            pass
        return out

    def wait_report(self, predicate, timeout=15.0, what="a matching status report"):
        deadline = time.monotonic() + timeout
        while True:
            rep = self.report()
            if predicate(rep):
                return rep
            if time.monotonic() > deadline:
                raise procs.ProcessError("%s: no %s in %.0fs, last %r" % (self.endpoint, what, timeout, rep))
            time.sleep(0.05)

    def stop(self):
        self.proc.stop()

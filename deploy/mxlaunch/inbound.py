"""inbound - start mx-inbound (and, until mx-delivery exists, mx-test-sink as
the receiving end of its hand-off) on free loopback ports.

    ldap = Slapd()
    sink = TestSink()                       # receives MSG_INBOUND_DELIVERY_MESSAGE_SUBMIT
    mx = Inbound(ldap, sink.endpoint)       # an mta and an msa instance
    mx.port("mta"), mx.port("msa"), mx.port("msa_tls")
    mx.kill(); mx.start()                   # SIGKILL and restart on the same ports/spool

The generated configuration sets only what differs from the defaults; the
daemon validates it like any operator's file.
"""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile

from . import procs


def build_dir():
    """build_dir - where the compiled daemons are (MX_BUILD_DIR, set by ctest)."""
    path = os.environ.get("MX_BUILD_DIR")
    if not path:
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.path.join(here, "build", "release")
    return path


def make_certificate(directory, name="mx.example.test"):
    """make_certificate - a self-signed RSA certificate and key in DIRECTORY."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    if not os.path.exists(cert):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
             "-days", "30", "-subj", "/CN=" + name,
             "-addext", "subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1" % name,
             "-keyout", key, "-out", cert],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.chmod(key, 0o600)
    return cert, key


def client_tls_context(cafile):
    """client_tls_context - what a careful mail client uses against us."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False  # tests connect to 127.0.0.1
    return ctx


def _lc_string(value):
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


def _lc_list(values):
    return "[ %s ]" % ", ".join(_lc_string(v) for v in values)


class TestSink:
    """mx-test-sink: the receiving end of inbound's hand-off (tests only)."""

    def __init__(self, state_dir=None, tempfail=0, silent=False, port=None, discard=False):
        self._own_dir = state_dir is None
        self.dir = state_dir or tempfile.mkdtemp(prefix="mxsink-")
        self.port = port or procs.free_port()
        self.endpoint = "tcp://127.0.0.1:%d" % self.port
        self.tempfail = tempfail
        self.silent = silent
        self.discard = discard
        self.proc = None
        self.start()

    def start(self):
        argv = [os.path.join(build_dir(), "tests", "tools", "mx-test-sink"),
                "-l", self.endpoint, "-d", os.path.join(self.dir, "data")]
        if self.tempfail:
            argv += ["-t", str(self.tempfail)]
        if self.discard:
            argv += ["-n"]
        if self.silent:
            argv += ["-s"]
        self.proc = procs.start_process(
            "mx-test-sink", argv, os.path.join(self.dir, "sink.log"),
            ready=procs.port_probe("127.0.0.1", self.port), what="its bus port")

    def stop(self):
        if self.proc:
            self.proc.stop()

    def messages(self):
        """messages - {message id: (sender, [recipients], body bytes)}."""
        queue = os.path.join(self.dir, "data", "queue")
        found = {}
        if not os.path.isdir(queue):
            return found
        for name in os.listdir(queue):
            with open(os.path.join(queue, name), "rb") as f:
                data = f.read()
            head, _, body = data.partition(b"\n\n")
            sender, rcpts = None, []
            for line in head.decode("utf-8", "replace").split("\n"):
                if line.startswith("sender "):
                    sender = line[7:]
                elif line.startswith("rcpt "):
                    rcpts.append(line[5:])
            found[name] = (sender, rcpts, body)
        return found

    def envelopes(self):
        """envelopes - {message id: {label: [values]}} of every envelope line
        the sink kept (sender, rcpt, notify, orcpt, envid, ret, body_type,
        auth_user, client_addr, client_name, instance, smtputf8)."""
        queue = os.path.join(self.dir, "data", "queue")
        found = {}
        if not os.path.isdir(queue):
            return found
        for name in os.listdir(queue):
            with open(os.path.join(queue, name), "rb") as f:
                head = f.read().partition(b"\n\n")[0]
            fields = {}
            for line in head.decode("utf-8", "replace").split("\n"):
                label, _, value = line.partition(" ")
                fields.setdefault(label, []).append(value)
            found[name] = fields
        return found

    def duplicates(self):
        path = os.path.join(self.dir, "data", "duplicates")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return f.read().split()

    def close(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class Inbound:
    """mx-inbound with an mta instance and an msa instance (587 + 465)."""

    def __init__(self, ldap, delivery_endpoint, state_dir=None, extra_config="",
                 instance_overrides=None, filter_endpoints=(), filter_fail_open=False,
                 sanitize_log=True, log_level="debug", inbound_overrides=None, env=None):
        self._own_dir = state_dir is None
        self.dir = state_dir or tempfile.mkdtemp(prefix="mxinbound-")
        self.ldap = ldap
        self.delivery_endpoint = delivery_endpoint
        self.ports = {"mta": procs.free_port(), "msa": procs.free_port(),
                      "msa_tls": procs.free_port()}
        self.cert, self.key = make_certificate(self.dir)
        self.extra_config = extra_config
        self.instance_overrides = instance_overrides or {}
        # settings of the inbound group itself, e.g.
        # {"auth_max_failures_per_ip": "3"} (values are libconfig text)
        self.inbound_overrides = inbound_overrides or {}
        # extra environment for the daemon (e.g. ASAN_OPTIONS), merged into ours
        self.env = dict(env or {})
        self.filter_endpoints = list(filter_endpoints)
        self.filter_fail_open = filter_fail_open
        self.log_level = log_level
        self.config_path = os.path.join(self.dir, "mxcluster.conf")
        self.log_path = os.path.join(self.dir, "inbound.log")
        self.spool_dir = os.path.join(self.dir, "spool")
        self.proc = None
        for attempt in range(3):
            try:
                self.write_config()
                self.start()
                break
            except procs.StartupError as e:
                # free_port() race: another test took a port first (the
                # listeners do not use SO_REUSEPORT here, so it shows).
                if attempt == 2 or "Address already in use" not in str(e):
                    raise
                self.ports = {name: procs.free_port() for name in self.ports}

    def port(self, name):
        return self.ports[name]

    def write_config(self):
        pw_file = os.path.join(self.dir, "ldap.pw")
        with open(pw_file, "w") as f:
            f.write(self.ldap.service_pw + "\n")
        os.chmod(pw_file, 0o600)

        def instance(name, mode, listen, listen_tls):
            lines = ['name = "%s";' % name, 'mode = "%s";' % mode,
                     "listen = %s;" % _lc_list(listen),
                     "listen_tls = %s;" % _lc_list(listen_tls)]
            overrides = self.instance_overrides.get(name, {})
            if "reuseport" not in overrides:
                # a port another test happens to hold must fail the start,
                # not silently share its connections with us
                lines.append("reuseport = false;")
            for key, value in overrides.items():
                lines.append("%s = %s;" % (key, value))
            return "{ " + " ".join(lines) + " }"

        text = """
node = { name = "test1"; id = 1; state_dir = %(state)s; };
log = { level = %(log_level)s; };
ldap = { uris = %(uris)s; base_dn = %(base)s; bind_dn = %(bind_dn)s;
         bind_password_file = %(pw)s; timeout = "2s"; connect_timeout = "1s";
         retry_down_after = "1s"; };
tls = { cert_file = %(cert)s; key_file = %(key)s; };
inbound = {
  hostname = "mx.example.test";
  spool_dir = %(spool)s;
  delivery = { endpoints = %(delivery)s; timeout = "2s"; retry_interval = "500ms"; };
  filter = { endpoints = %(filters)s; timeout = "2s"; fail_open = %(fail_open)s; };
  %(inbound_extra)s
  instances = (
    %(mta)s,
    %(msa)s
  );
};
%(extra)s
""" % {
            "state": _lc_string(self.dir),
            "uris": _lc_list([self.ldap.uri]),
            "base": _lc_string(self.ldap.base_dn),
            "bind_dn": _lc_string(self.ldap.service_dn),
            "pw": _lc_string(pw_file),
            "cert": _lc_string(self.cert), "key": _lc_string(self.key),
            "spool": _lc_string(self.spool_dir),
            # one endpoint, or a list (hand-off fails over between them)
            "delivery": _lc_list([self.delivery_endpoint]
                                 if isinstance(self.delivery_endpoint, str)
                                 else list(self.delivery_endpoint)),
            "filters": _lc_list(self.filter_endpoints),
            "fail_open": "true" if self.filter_fail_open else "false",
            "mta": instance("mta", "mta", ["127.0.0.1:%d" % self.ports["mta"]], []),
            "msa": instance("msa", "msa", ["127.0.0.1:%d" % self.ports["msa"]],
                            ["127.0.0.1:%d" % self.ports["msa_tls"]]),
            "extra": self.extra_config,
            "inbound_extra": " ".join("%s = %s;" % kv for kv in self.inbound_overrides.items()),
            "log_level": _lc_string(self.log_level),
        }
        with open(self.config_path, "w") as f:
            f.write(text)

    def binary(self):
        return os.path.join(build_dir(), "inbound", "mx-inbound")

    def start(self):
        def ready():
            for port in self.ports.values():
                if not procs.port_probe("127.0.0.1", port)():
                    return False
            return True
        self.proc = procs.start_process(
            "mx-inbound", [self.binary(), "-c", self.config_path], self.log_path,
            env=dict(os.environ, **self.env) if self.env else None,
            ready=ready, timeout=15, what="its SMTP ports")

    def stop(self):
        if self.proc:
            self.proc.stop()

    def kill(self):
        """kill - SIGKILL, as a crash would."""
        if self.proc:
            self.proc.kill()

    @property
    def running(self):
        return self.proc is not None and self.proc.running

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def spool_entries(self):
        queue = os.path.join(self.spool_dir, "queue")
        return sorted(os.listdir(queue)) if os.path.isdir(queue) else []

    def close(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, name="mta", timeout=10):
        """connect - a raw socket to an instance port (for protocol abuse tests)."""
        return socket.create_connection(("127.0.0.1", self.ports[name]), timeout=timeout)

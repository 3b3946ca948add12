"""imapd - start mx-imapd (IMAP + POP3 frontend) on free loopback ports, and
Debian's Dovecot as the reference server the benchmark and the test suite's
self-check are measured against.

    ldap = Slapd(); s1 = Store(); s2 = Store()
    imap = Imapd(ldap, {"shard1": s1, "shard2": s2})
    imap.port("imap"), imap.port("imaps"), imap.port("pop3"), imap.port("pop3s")
    imap.kill(); imap.start()           # SIGKILL and restart on the same ports

    dc = Dovecot(users={"alice@example.test": "alice-secret"})
    dc.port("imaps"); dc.deliver("alice@example.test", b"Subject: x\\r\\n\\r\\nhi\\r\\n")

Both servers listen on the same four kinds of port (plain with STARTTLS/STLS,
implicit TLS, for IMAP and POP3) and use a certificate from
inbound.make_certificate(), so one client library drives either.  The
generated mx-imapd configuration sets only what a test needs; the daemon
validates it like an operator's file.
"""

import grp
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

from . import procs
from .inbound import _lc_list, _lc_string, build_dir, make_certificate

__all__ = ["Imapd", "Dovecot", "imap_greeting_probe", "PORT_NAMES"]

PORT_NAMES = ("imap", "imaps", "pop3", "pop3s")


def imap_greeting_probe(host, port, tls_port=False, timeout=1.0, greeting=b"* OK"):
    """imap_greeting_probe - a probe callable: true once HOST:PORT greets
    with GREETING ("* OK" for IMAP, "+OK" for POP3).  With tls_port the TLS
    handshake is done first (certificate not checked: only readiness)."""
    def probe():
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if tls_port:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                sock = ctx.wrap_socket(sock)  # takes over the descriptor
            data = b""
            while b"\n" not in data and len(data) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(greeting)
        finally:
            sock.close()
    return probe


def _shard_endpoints(shard):
    """_shard_endpoints - (request endpoints, event endpoints) of a shard
    given as a Store (its endpoint and publish), or a (list, list) pair."""
    if hasattr(shard, "endpoint"):
        return [shard.endpoint], [shard.publish]
    endpoints, events = shard
    return list(endpoints), list(events)


class Imapd:
    """mx-imapd with IMAP, IMAPS, POP3 and POP3S listeners on loopback.

    ldap          a Slapd (uri, base_dn, service_dn/pw)
    shards        {name: Store or ([request endpoints], [event endpoints])}
    imap_overrides settings of the imap group, {name: libconfig text},
                  e.g. {"auth_max_failures_per_ip": "3",
                        "plaintext_auth_networks": '[ "127.0.0.0/8" ]'}
    extra_config  more top-level groups, appended verbatim
    env           extra environment (e.g. ASAN_OPTIONS), merged into ours
    node_id       node.id (several instances on one cluster need their own)
    cert, key     TLS certificate and key files (default: a new self-signed one)
    """

    def __init__(self, ldap, shards, state_dir=None, default_shard="shard1",
                 imap_overrides=None, extra_config="", log_level="debug", env=None,
                 node_id=4, start_timeout=20.0, cert=None, key=None):
        self._own_dir = state_dir is None
        self.dir = state_dir or tempfile.mkdtemp(prefix="mximapd-")
        self.ldap = ldap
        self.shards = dict(shards)
        self.default_shard = default_shard
        self.imap_overrides = dict(imap_overrides or {})
        self.extra_config = extra_config
        self.log_level = log_level
        self.env = dict(env or {})
        self.node_id = node_id
        self.start_timeout = start_timeout
        # a second instance "behind the same balancer" shares the first one's
        # certificate (cert/key), as a client must not tell them apart
        if cert and key:
            self.cert, self.key = cert, key
        else:
            self.cert, self.key = make_certificate(self.dir, "imap.example.test")
        self.config_path = os.path.join(self.dir, "mxcluster.conf")
        self.log_path = os.path.join(self.dir, "imapd.log")
        self.ports = {name: procs.free_port() for name in PORT_NAMES}
        self.proc = None
        for attempt in range(3):
            try:
                self.write_config()
                self.start()
                break
            except procs.StartupError as e:
                # free_port() race: someone took one of our ports first.
                if attempt == 2 or "in use" not in str(e):
                    raise
                self.ports = {name: procs.free_port() for name in PORT_NAMES}

    def port(self, name):
        return self.ports[name]

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def binary(self):
        return os.path.join(build_dir(), "imap-frontend", "mx-imapd")

    def write_config(self):
        pw_file = os.path.join(self.dir, "ldap.pw")
        with open(pw_file, "w") as f:
            f.write(self.ldap.service_pw + "\n")
        os.chmod(pw_file, 0o600)
        shard_lines = []
        for name, shard in self.shards.items():
            endpoints, events = _shard_endpoints(shard)
            shard_lines.append("{ name = %s; endpoints = %s; events = %s; }"
                               % (_lc_string(name), _lc_list(endpoints), _lc_list(events)))

        def addr(name):
            return _lc_list(["127.0.0.1:%d" % self.ports[name]])

        settings = {
            "hostname": _lc_string("imap.example.test"),
            "listen": addr("imap"),
            "listen_tls": addr("imaps"),
            "pop3_listen": addr("pop3"),
            "pop3_listen_tls": addr("pop3s"),
            "default_shard": _lc_string(self.default_shard),
            "store_timeout": _lc_string("5s"),
        }
        settings.update(self.imap_overrides)
        body = "\n  ".join("%s = %s;" % kv for kv in settings.items())
        text = """
node = { name = "test1"; id = %(node_id)d; state_dir = %(state)s; };
log = { level = %(level)s; };
ldap = { uris = %(uris)s; base_dn = %(base)s; bind_dn = %(bind_dn)s;
         bind_password_file = %(pw)s; timeout = "2s"; connect_timeout = "1s";
         retry_down_after = "1s"; };
tls = { cert_file = %(cert)s; key_file = %(key)s; };
imap = {
  %(body)s
  shards = (
    %(shards)s
  );
};
%(extra)s
""" % {"node_id": self.node_id, "state": _lc_string(self.dir),
       "level": _lc_string(self.log_level), "uris": _lc_list([self.ldap.uri]),
       "base": _lc_string(self.ldap.base_dn), "bind_dn": _lc_string(self.ldap.service_dn),
       "pw": _lc_string(pw_file), "cert": _lc_string(self.cert), "key": _lc_string(self.key),
       "body": body, "shards": ",\n    ".join(shard_lines), "extra": self.extra_config}
        with open(self.config_path, "w") as f:
            f.write(text)

    def start(self):
        if not os.access(self.binary(), os.X_OK):
            raise procs.ProcessError("mx-imapd is not built: %s missing (MX_BUILD_DIR=%s)"
                                     % (self.binary(), build_dir()))

        def ready():
            # The greeting, not only an open port: the daemon must be able to
            # serve.  Every listener is checked so no test races a late bind.
            return (imap_greeting_probe("127.0.0.1", self.ports["imap"])() and
                    imap_greeting_probe("127.0.0.1", self.ports["imaps"], tls_port=True)() and
                    imap_greeting_probe("127.0.0.1", self.ports["pop3"], greeting=b"+OK")())
        self.proc = procs.start_process(
            "mx-imapd", [self.binary(), "-c", self.config_path], self.log_path,
            env=dict(os.environ, **self.env) if self.env else None,
            ready=ready, timeout=self.start_timeout, what="its IMAP greeting")

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

    def rss_kib(self):
        """rss_kib - the daemon's resident set (VmRSS) in KiB."""
        return proc_rss_kib(self.pid)

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def close(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def proc_rss_kib(pid):
    """proc_rss_kib - VmRSS of PID in KiB, from /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise procs.ProcessError("no VmRSS in /proc/%d/status" % pid)


def _find(prog, dirs=("/usr/sbin", "/usr/bin", "/usr/lib/dovecot")):
    found = shutil.which(prog)
    if found:
        return found
    for d in dirs:
        path = os.path.join(d, prog)
        if os.access(path, os.X_OK):
            return path
    raise procs.ProcessError("%s not found (install dovecot-imapd and dovecot-pop3d)" % prog)


class Dovecot:
    """Debian's Dovecot, private: its own dovecot.conf, a passwd-file of
    USERS ({address: password}), Maildirs, base_dir and logs in a temp dir,
    running as the current user on free loopback ports.

    The settings mirror what mx-imapd promises so a client sees the same
    server shape: mail_fsync = always (a flag change or an APPEND is on disk
    before OK, as our store's is), Drafts/Sent/Trash/Junk auto-created with
    their SPECIAL-USE flags, Maildir++ quota (quotas = {address: bytes}),
    IMAP and POP3 with STARTTLS/STLS and implicit TLS, plaintext login only
    under TLS.

    host: the listening address.  Dovecot counts a connection whose client
    address equals the server's as secure (no LOGINDISABLED), so the test
    suite's self-check listens on 127.0.0.2 and connects from 127.0.0.1.
    """

    def __init__(self, users, quotas=None, host="127.0.0.1", state_dir=None,
                 process_limit=1000, extra_config="", fsync="always", extra_passwd=None):
        self._own_dir = state_dir is None
        self.dir = state_dir or tempfile.mkdtemp(prefix="mxdovecot-")
        os.chmod(self.dir, 0o755)
        self.host = host
        self.users = dict(users)
        self.quotas = dict(quotas or {})
        # {address: passwd-file extra fields}, e.g. "nologin reason=..."
        self.extra_passwd = dict(extra_passwd or {})
        self.mail_dir = os.path.join(self.dir, "mail")
        self.base_dir = os.path.join(self.dir, "run")
        self.conf_path = os.path.join(self.dir, "dovecot.conf")
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.passwd_path = os.path.join(self.dir, "passwd")
        self.cert, self.key = make_certificate(self.dir, "imap.example.test")
        self.process_limit = process_limit
        self.extra_config = extra_config
        self.fsync = fsync
        self.ports = {name: procs.free_port(host) for name in PORT_NAMES}
        self.proc = None
        os.makedirs(self.mail_dir, exist_ok=True)
        os.makedirs(self.base_dir, exist_ok=True)
        try:
            self.write_config()
            self.start()
        except BaseException:
            self.close()
            raise

    def port(self, name):
        return self.ports[name]

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def write_config(self):
        me = pwd.getpwuid(os.getuid())
        group = os.getgid()
        mail_uid, mail_gid = me.pw_uid, group
        if os.getuid() == 0:
            # Dovecot refuses UID 0 for mail; as root the mail is nobody's
            nobody = pwd.getpwnam("nobody")
            mail_uid, mail_gid = nobody.pw_uid, nobody.pw_gid
            shutil.chown(self.mail_dir, nobody.pw_uid, nobody.pw_gid)
        with open(self.passwd_path, "w") as f:
            for user, password in self.users.items():
                quota = self.quotas.get(user)
                extra = "userdb_quota_rule=*:storage=%dB" % quota if quota else ""
                extra = (extra + " " + self.extra_passwd.get(user, "")).strip()
                # user:password:uid:gid::home::extra (passwd-file format)
                f.write("%s:{PLAIN}%s:%d:%d::%s::%s\n" % (
                    user, password, mail_uid, mail_gid, self.home(user), extra))
        # Dovecot's login and internal processes refuse to run as root; as
        # root (CI) they take Debian's dovenull/dovecot users, otherwise
        # everything runs as the current user.
        if os.getuid() == 0:
            login_user, internal_user = "dovenull", "dovecot"
        else:
            login_user = internal_user = me.pw_name
        # the auth process (internal user) reads the passwd-file
        os.chmod(self.passwd_path, 0o600)
        shutil.chown(self.passwd_path, internal_user)
        with open(self.conf_path, "w") as f:
            f.write("""# written by mxlaunch.imapd.Dovecot for tests and benchmarks
protocols = imap pop3
listen = %(host)s
base_dir = %(base)s
state_dir = %(dir)s/state
instance_name = mxdovecot-%(pid)d
log_path = %(log)s
info_log_path = %(log)s
ssl = yes
ssl_cert = <%(cert)s
ssl_key = <%(key)s
disable_plaintext_auth = yes
auth_mechanisms = plain login
login_trusted_networks =
default_login_user = %(user)s
default_internal_user = %(internal)s
default_internal_group = %(group)s
default_process_limit = %(plimit)d
default_client_limit = 20000
first_valid_uid = 0
first_valid_gid = 0
mail_location = maildir:~/Maildir
mail_fsync = %(fsync)s
mail_plugins = quota
imap_capability = +SPECIAL-USE
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %(passwd)s
}
userdb {
  driver = passwd-file
  args = username_format=%%u %(passwd)s
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox Drafts {
    auto = subscribe
    special_use = \\Drafts
  }
  mailbox Sent {
    auto = subscribe
    special_use = \\Sent
  }
  mailbox Trash {
    auto = subscribe
    special_use = \\Trash
  }
  mailbox Junk {
    auto = subscribe
    special_use = \\Junk
  }
}
plugin {
  quota = maildir:User quota
  quota_rule = *:storage=100M
}
protocol imap {
  mail_plugins = $mail_plugins imap_quota imap_zlib
  mail_max_userip_connections = 100000
}
protocol pop3 {
  mail_max_userip_connections = 100000
  pop3_uidl_format = %%08Xu%%08Xv
}
service imap-login {
  inet_listener imap {
    port = %(imap)d
  }
  inet_listener imaps {
    port = %(imaps)d
    ssl = yes
  }
  process_min_avail = 2
  service_count = 0
  client_limit = 20000
}
service pop3-login {
  inet_listener pop3 {
    port = %(pop3)d
  }
  inet_listener pop3s {
    port = %(pop3s)d
    ssl = yes
  }
}
service imap {
  process_limit = %(plimit)d
}
service anvil {
  client_limit = 100000
}
service auth {
  client_limit = 100000
}
%(extra)s
""" % {"host": self.host, "base": self.base_dir, "dir": self.dir, "pid": os.getpid(),
       "log": self.log_path, "cert": self.cert, "key": self.key, "user": login_user,
       "internal": internal_user,
       "group": _group_name(group),
       "plimit": self.process_limit, "fsync": self.fsync, "passwd": self.passwd_path,
       "imap": self.ports["imap"], "imaps": self.ports["imaps"], "pop3": self.ports["pop3"],
       "pop3s": self.ports["pop3s"], "extra": self.extra_config})
        os.makedirs(os.path.join(self.dir, "state"), exist_ok=True)

    def home(self, user):
        return os.path.join(self.mail_dir, user)

    def maildir(self, user):
        return os.path.join(self.home(user), "Maildir")

    def start(self):
        argv = [_find("dovecot"), "-F", "-c", self.conf_path]
        self.proc = procs.start_process(
            "dovecot", argv, os.path.join(self.dir, "dovecot.stdout"),
            ready=imap_greeting_probe(self.host, self.ports["imap"]), timeout=20,
            what="its IMAP greeting")

    def deliver(self, user, message):
        """deliver - put MESSAGE (bytes) in USER's INBOX with dovecot-lda,
        as Postfix's pipe would (Dovecot's own local delivery path)."""
        out = subprocess.run([_find("dovecot-lda"), "-c", self.conf_path, "-d", user,
                              "-f", "sender@remote.test"],
                             input=message, capture_output=True, timeout=60)
        if out.returncode != 0:
            raise procs.ProcessError("dovecot-lda for %s failed (%d): %s"
                                     % (user, out.returncode,
                                        out.stderr.decode(errors="replace").strip()))

    def stop(self):
        if self.proc:
            self.proc.stop()

    def rss_kib(self):
        """rss_kib - summed VmRSS of every process of the Dovecot group (KiB)."""
        total = 0
        for pid in procs.group_members(self.proc.pgid):
            try:
                total += proc_rss_kib(pid)
            except (OSError, procs.ProcessError):
                pass
        return total

    def log(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def close(self):
        self.stop()
        if self._own_dir:
            # give the last children a moment to let go of their files
            time.sleep(0.1)
            shutil.rmtree(self.dir, ignore_errors=True)


def _group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)

"""slapd - a real OpenLDAP slapd with the mxcluster schema on a loopback port.

    with Slapd() as ldap:                       # temporary: removed at exit
        ldap.ldapsearch("(uid=alice)", ["mail"])

    Slapd(state_dir="/var/tmp/mx", persistent=True)   # quickstart: left running

The server listens on ldap://127.0.0.1:PORT/ and on a unix socket (ldapi),
holds the suffix dc=example,dc=test (root DN cn=admin,dc=example,dc=test) and,
unless load_sample=False, the entries of ldap-schema/sample.ldif (loaded with
slapadd before the start, which is much faster than ldapadd).

config_format="conf" runs slapd -f slapd.conf built from
ldap-schema/slapd.conf.in (schema from mxcluster.schema);
config_format="ldif" builds a cn=config directory with slapadd -n0 from
ldap-schema/slapd-config.ldif.in (schema from mxcluster.ldif) and runs
slapd -F slapd.d: the form operators use, so tests prove mxcluster.ldif loads.
With mx_schema=False (ldif only) the mxcluster schema is left out, so a test
can load it into the running server with ldapadd -Y EXTERNAL (load_mx_schema).
"""

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse

from . import procs

__all__ = ["Slapd", "LdapError", "source_dir", "parse_ldif"]

SCHEMADIR = os.environ.get("MX_LDAP_SCHEMADIR", "/etc/ldap/schema")
MODULEDIR = os.environ.get("MX_LDAP_MODULEDIR", "/usr/lib/ldap")

BASE_DN = "dc=example,dc=test"
ROOT_DN = "cn=admin," + BASE_DN
SERVICE_DN = "cn=mxservice," + BASE_DN
SERVICE_PW = "mxservice-secret"
DEFAULT_ROOT_PW = "admin-secret"

_SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")


def source_dir():
    """source_dir - the mxcluster source tree (MX_SOURCE_DIR or relative to us)."""
    env = os.environ.get("MX_SOURCE_DIR")
    if env:
        return env
    return os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))


def _which(prog):
    found = shutil.which(prog)
    if found:
        return found
    for d in _SBIN:
        p = os.path.join(d, prog)
        if os.access(p, os.X_OK):
            return p
    raise procs.ProcessError("%s not found (install slapd and ldap-utils)" % prog)


def _ssha(password):
    """_ssha - {SSHA} hash as slappasswd makes it (SHA-1 of pw+salt, salt)."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


class LdapError(RuntimeError):
    """An ldap-utils command failed.  code is its exit status, which for
    ldapsearch/ldapmodify/ldapwhoami is the LDAP result code (49 = invalid
    credentials, 50 = insufficient access, 19 = constraint violation,
    21 = invalid syntax, 65 = objectClass violation, 68 = already exists)."""

    def __init__(self, code, argv, stderr):
        self.code = code
        self.argv = argv
        self.stderr = stderr
        super().__init__("%s failed with %d: %s"
                         % (os.path.basename(argv[0]), code, stderr.strip()))


def parse_ldif(text):
    """parse_ldif - [(dn, {attr: [values]})] from ldapsearch -LLL output.

    Handles folded lines and base64 ("attr:: ") values; values that are not
    UTF-8 stay bytes.  Attribute names are kept as the server spells them.
    """
    entries = []
    lines = []
    for raw in text.splitlines():
        if raw.startswith(" ") and lines:
            lines[-1] += raw[1:]
        else:
            lines.append(raw)
    dn, attrs = None, {}
    for line in lines + [""]:
        if not line:
            if dn is not None:
                entries.append((dn, attrs))
            dn, attrs = None, {}
            continue
        if line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        if value.startswith(":"):
            data = base64.b64decode(value[1:].strip())
            try:
                value = data.decode("utf-8")
            except UnicodeDecodeError:
                value = data
        else:
            value = value[1:] if value.startswith(" ") else value
        if name.lower() == "dn":
            dn = value
        else:
            attrs.setdefault(name, []).append(value)
    return entries


class Slapd:
    """A running slapd.  Starts in the constructor; see module doc.

    state_dir   None: a new private temp dir, removed by close() / at exit.
                Else the server lives in STATE_DIR/slapd (created).
    port        TCP port on 127.0.0.1; None = a free one (kept across restarts).
    load_sample load ldap-schema/sample.ldif (only into an empty database).
    persistent  True: not stopped at interpreter exit; the database survives
                and a later Slapd() on the same state_dir reattaches to a
                server still running.  Needs state_dir.
    config_format "conf" (slapd.conf) or "ldif" (cn=config directory).
    mx_schema   False: leave mxcluster out (ldif format only, implies no sample).
    loglevel    slapd loglevel, "none" or e.g. "stats".
    root_pw     password of root_dn.
    """

    def __init__(self, state_dir=None, port=None, load_sample=True,
                 persistent=False, config_format="conf", mx_schema=True,
                 loglevel="none", root_pw=DEFAULT_ROOT_PW, start_timeout=15.0):
        if config_format not in ("conf", "ldif"):
            raise ValueError("config_format must be 'conf' or 'ldif'")
        if not mx_schema and config_format != "ldif":
            raise ValueError("mx_schema=False needs config_format='ldif'")
        if persistent and state_dir is None:
            raise ValueError("persistent=True needs a state_dir")
        self.config_format = config_format
        self.mx_schema = mx_schema
        self.load_sample = load_sample and mx_schema
        self.persistent = persistent
        self.loglevel = loglevel
        self.start_timeout = start_timeout
        self._root_pw = root_pw
        self._temp = state_dir is None
        if self._temp:
            # Short prefix: the ldapi socket path must fit in sun_path (108).
            self.dir = tempfile.mkdtemp(prefix="mxslapd-")
            if len(self.dir) > 70:  # long $TMPDIR: fall back to /tmp
                os.rmdir(self.dir)
                self.dir = tempfile.mkdtemp(prefix="mxslapd-", dir="/tmp")
        else:
            self.dir = os.path.join(os.path.abspath(state_dir), "slapd")
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.db_dir = os.path.join(self.dir, "db")
        self.run_dir = os.path.join(self.dir, "run")
        self.conf_path = os.path.join(self.dir, "slapd.conf")
        self.confdir = os.path.join(self.dir, "slapd.d")
        self.log_path = os.path.join(self.dir, "slapd.log")
        self.socket_path = os.path.join(self.run_dir, "ldapi")
        self.pid_path = os.path.join(self.run_dir, "slapd.pid")
        self._state_path = os.path.join(self.dir, "mxlaunch.json")
        if len(self.socket_path.encode()) > 100:
            raise ValueError("state dir too long for a unix socket path: %s"
                             % self.socket_path)
        self.port = port
        self.proc = None
        self._closed = False
        self._cleanup = None
        if self._temp:
            self._cleanup = self._remove_dir
            procs.registry.add_cleanup(self._cleanup)
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    # --- properties ---

    @property
    def uri(self):
        return "ldap://127.0.0.1:%d/" % self.port

    @property
    def ldapi_uri(self):
        return "ldapi://" + urllib.parse.quote(self.socket_path, safe="")

    @property
    def base_dn(self):
        return BASE_DN

    @property
    def root_dn(self):
        return ROOT_DN

    @property
    def root_pw(self):
        return self._root_pw

    @property
    def service_dn(self):
        return SERVICE_DN

    @property
    def service_pw(self):
        return SERVICE_PW

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.running

    # --- life cycle ---

    def start(self):
        """start - (re)start slapd; a no-op if it runs.  The port is kept."""
        if self.running:
            return
        if self.persistent and self._reattach():
            return
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        if self.proc is None:
            # First start of this object: (re)build the configuration; the
            # database is rebuilt too unless a persistent one exists.  A
            # restart after stop() reuses both.
            fresh = not self.persistent or not os.path.isdir(self.db_dir) \
                or not os.listdir(self.db_dir)
            if fresh:
                shutil.rmtree(self.db_dir, ignore_errors=True)
                os.makedirs(self.db_dir, mode=0o700)
            self._build_config()
            if fresh and self.load_sample:
                self._slapadd(os.path.join(source_dir(), "ldap-schema",
                                           "sample.ldif"))
        if self.port is None and self.persistent:
            self.port = self._saved_port()  # same URI across quickstart runs
        chosen = self.port is None
        for attempt in range(3):
            if chosen:
                self.port = procs.free_port()
            try:
                self._launch()
                break
            except procs.StartupError as e:
                # free_port() race: someone took the port before slapd bound
                # it.  Only retry when WE chose the port.
                if not chosen or attempt == 2 or "errno=98" not in str(e):
                    raise
        self._save_state()

    def _launch(self):
        try:
            os.unlink(self.socket_path)  # stale after a kill -9
        except FileNotFoundError:
            pass
        argv = [_which("slapd"), "-d", self._debug_level(),
                "-h", "%s %s" % (self.uri, self.ldapi_uri)]
        if self.config_format == "conf":
            argv += ["-f", self.conf_path]
        else:
            argv += ["-F", self.confdir]
        with open(self.log_path, "a") as log:
            log.write("--- mxlaunch: starting %s at %s\n"
                      % (" ".join(argv), time.strftime("%Y-%m-%d %H:%M:%S")))
        self.proc = procs.start_process("slapd", argv, self.log_path,
                                        keep=self.persistent)
        self.proc.wait_ready(self._probe, timeout=self.start_timeout,
                             what="an LDAP answer on %s" % self.uri)

    def stop(self, grace=procs.DEFAULT_GRACE):
        """stop - stop slapd (SIGTERM, SIGKILL after GRACE s); data is kept,
        so start() brings the same server back on the same port."""
        if self.proc is not None:
            self.proc.stop(grace)
        elif self.persistent:
            procs.stop_pidfile(self.pid_path, grace, name="slapd")

    def kill(self):
        """kill - SIGKILL the server at once (crash test); start() revives it."""
        if self.proc is not None:
            self.proc.signal(9)
            self.proc.stop(grace=0)

    def close(self):
        """close - stop, and remove the temporary directory (if ours).

        A persistent server is NOT stopped by close(): call stop() for that.
        """
        if self._closed:
            return
        self._closed = True
        if not self.persistent:
            self.stop()
        if self._cleanup is not None:
            procs.registry.remove_cleanup(self._cleanup)
            self._cleanup()
            self._cleanup = None

    def pause(self):
        """pause - SIGSTOP slapd: connections are accepted by the kernel
        but never answered (the directory "hangs")."""
        self.proc.pause()

    def resume(self):
        """resume - SIGCONT after pause()."""
        self.proc.resume()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return "<Slapd %s dir=%s pid=%s>" % (self.uri if self.port else "-",
                                             self.dir, self.pid)

    # --- ldap-utils wrappers ---

    def _auth(self, bind_dn, password, sasl_external):
        if sasl_external:
            return ["-Y", "EXTERNAL", "-Q", "-H", self.ldapi_uri]
        args = ["-x", "-H", self.uri]
        if bind_dn is None:
            bind_dn, password = self.root_dn, self.root_pw
        if bind_dn:  # "" = anonymous
            args += ["-D", bind_dn, "-w", password]
        return args

    def _run(self, prog, args, stdin=None, timeout=30.0):
        argv = [_which(prog)] + args
        try:
            r = subprocess.run(argv, input=stdin, capture_output=True,
                               text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise LdapError(-1, argv, "timed out after %.0fs" % timeout) from e
        if r.returncode != 0:
            raise LdapError(r.returncode, argv, r.stderr or r.stdout)
        return r.stdout

    def ldapsearch(self, filter="(objectClass=*)", attrs=None, base=None,
                   scope="sub", bind_dn=None, password=None,
                   sasl_external=False, timeout=30.0):
        """ldapsearch - run ldapsearch; returns [(dn, {attr: [values]})].

        Binds as the root DN unless BIND_DN/PASSWORD are given ("" for an
        anonymous bind) or SASL_EXTERNAL (ldapi, as our uid).  BASE defaults
        to base_dn.  Raises LdapError (code = LDAP result code) on failure.
        """
        args = self._auth(bind_dn, password, sasl_external)
        args += ["-LLL", "-o", "ldif-wrap=no", "-o", "nettimeout=%d" % timeout,
                 "-b", self.base_dn if base is None else base, "-s", scope,
                 filter]
        args += list(attrs or [])
        return parse_ldif(self._run("ldapsearch", args, timeout=timeout))

    def ldapmodify(self, ldif, bind_dn=None, password=None, add=False,
                   sasl_external=False, timeout=30.0):
        """ldapmodify - apply LDIF (changetype records, or plain entries with
        add=True).  Binding as for ldapsearch.  Returns ldapmodify's output."""
        args = self._auth(bind_dn, password, sasl_external)
        if add:
            args.append("-a")
        return self._run("ldapmodify", args, stdin=ldif, timeout=timeout)

    def ldapadd(self, ldif, **kw):
        """ldapadd - add the entries in LDIF (ldapmodify -a)."""
        return self.ldapmodify(ldif, add=True, **kw)

    def whoami(self, bind_dn, password, timeout=10.0):
        """whoami - simple-bind as BIND_DN; returns the authz id ("dn:...").
        Raises LdapError (code 49) on bad credentials."""
        return self._run("ldapwhoami", ["-x", "-H", self.uri, "-D", bind_dn,
                                        "-w", password,
                                        "-o", "nettimeout=%d" % timeout],
                         timeout=timeout).strip()

    def can_bind(self, bind_dn, password):
        """can_bind - True if a simple bind as BIND_DN with PASSWORD succeeds."""
        try:
            self.whoami(bind_dn, password)
            return True
        except LdapError as e:
            if e.code == 49:
                return False
            raise

    def load_mx_schema(self):
        """load_mx_schema - ldapadd -Y EXTERNAL mxcluster.ldif into cn=config
        of this running server (as README.md tells operators to)."""
        path = os.path.join(source_dir(), "ldap-schema", "mxcluster.ldif")
        with open(path) as f:
            return self.ldapmodify(f.read(), add=True, sasl_external=True)

    # --- internals ---

    def _debug_level(self):
        # -d keeps slapd in the foreground, in our process group, logging to
        # stderr (= slapd.log).  "-d 0" would also silence fatal errors such
        # as "bind(...) failed errno=98"; "none" prints exactly those.
        return "none" if self.loglevel in ("none", "0", "") else self.loglevel

    def _probe(self):
        # A real LDAP answer, not only an open port: slapd binds its
        # listeners before the databases are fully open.
        r = subprocess.run(
            [_which("ldapsearch"), "-x", "-H", self.uri, "-D", self.root_dn,
             "-w", self.root_pw, "-o", "nettimeout=2", "-LLL", "-b", "",
             "-s", "base", "(objectClass=*)", "1.1"],
            capture_output=True, timeout=3)
        # (timeout: a listener that never answers - a paused slapd, or a
        # foreign process on our port - raises TimeoutExpired = "not yet")
        return r.returncode == 0

    def _subst(self, text):
        values = {
            "@SCHEMADIR@": SCHEMADIR,
            "@MXSCHEMA@": os.path.join(source_dir(), "ldap-schema",
                                       "mxcluster.schema"),
            "@MXSCHEMALDIF@": os.path.join(source_dir(), "ldap-schema",
                                           "mxcluster.ldif"),
            "@MODULEDIR@": MODULEDIR,
            "@DBDIR@": self.db_dir,
            "@RUNDIR@": self.run_dir,
            "@ROOTPW@": _ssha(self.root_pw),
            "@LOGLEVEL@": self.loglevel,
            "@PEERCRED@": "gidNumber=%d+uidNumber=%d,cn=peercred,cn=external,"
                          "cn=auth" % (os.getgid(), os.getuid()),
        }
        for k, v in values.items():
            text = text.replace(k, v)
        return text

    def _build_config(self):
        tmpl_dir = os.path.join(source_dir(), "ldap-schema")
        if self.config_format == "conf":
            with open(os.path.join(tmpl_dir, "slapd.conf.in")) as f:
                text = self._subst(f.read())
            with open(self.conf_path, "w") as f:
                f.write(text)
            os.chmod(self.conf_path, 0o600)
            return
        with open(os.path.join(tmpl_dir, "slapd-config.ldif.in")) as f:
            text = self._subst(f.read())
        out, skip = [], False
        for line in text.splitlines():
            if line.startswith("#@MX-BEGIN"):
                skip = not self.mx_schema
                continue
            if line.startswith("#@MX-END"):
                skip = False
                continue
            if not skip:
                out.append(line)
        ldif_path = os.path.join(self.dir, "slapd-config.ldif")
        with open(ldif_path, "w") as f:
            f.write("\n".join(out) + "\n")
        shutil.rmtree(self.confdir, ignore_errors=True)
        os.makedirs(self.confdir, mode=0o700)
        self._offline([_which("slapadd"), "-n", "0", "-F", self.confdir,
                       "-l", ldif_path], "building cn=config")

    def _slapadd(self, ldif_path):
        cfg = ["-f", self.conf_path] if self.config_format == "conf" \
            else ["-F", self.confdir]
        self._offline([_which("slapadd"), "-q", "-b", self.base_dn] + cfg +
                      ["-l", ldif_path], "loading %s" % ldif_path)

    def _offline(self, argv, what):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        with open(self.log_path, "a") as log:
            log.write("--- mxlaunch: %s\n%s%s" % (" ".join(argv), r.stdout,
                                                   r.stderr))
        if r.returncode != 0:
            raise procs.StartupError("slapd: %s failed (%s, status %d):\n%s"
                                     % (what, " ".join(argv), r.returncode,
                                        (r.stderr or r.stdout).strip()))

    def _save_state(self):
        state = {"port": self.port, "pid": self.pid,
                 "config_format": self.config_format, "uri": self.uri,
                 "ldapi_uri": self.ldapi_uri}
        tmp = self._state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self._state_path)

    def _saved_port(self):
        """_saved_port - the port of an earlier run if it is free again."""
        try:
            with open(self._state_path) as f:
                port = int(json.load(f)["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                # slapd binds with SO_REUSEADDR too: TIME_WAIT is no conflict
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
        except OSError:
            return None
        return port

    def _reattach(self):
        """_reattach - adopt a persistent server of an earlier run if it
        still runs from this dir and answers."""
        try:
            with open(self._state_path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            return False
        pid = procs.read_pidfile(self.pid_path)
        if pid is None or pid != state.get("pid"):
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        port, self.port = self.port, state["port"]
        try:
            answers = self._probe()
        except (OSError, subprocess.SubprocessError):
            answers = False
        if not answers:
            # Alive but deaf (hung, or paused by a test): replace it.
            procs.stop_pidfile(self.pid_path, name="slapd")
            self.port = port
            return False
        self.proc = procs.ManagedProcess("slapd", [], self.log_path, pid=pid,
                                         keep=True)
        return True

    def _remove_dir(self):
        shutil.rmtree(self.dir, ignore_errors=True)

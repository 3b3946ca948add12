"""delivery - start mx-delivery on a free loopback port.

    ldap = Slapd(); store = Store(ldap ...)        # see store.py
    d = Delivery(ldap, {"shard1": [store.endpoint], "shard2": [...]})
    Inbound(ldap, d.endpoint)
"""

import os
import shutil
import tempfile

from . import procs
from .inbound import _lc_list, _lc_string, build_dir


class Delivery:
    """mx-delivery with the given store shards ({name: [endpoints]})."""

    def __init__(self, ldap, shards, state_dir=None, default_shard="shard1", extra_config="",
                 log_level="debug", warn_low=80, warn_high=95):
        self._own_dir = state_dir is None
        self.dir = state_dir or tempfile.mkdtemp(prefix="mxdelivery-")
        self.ldap = ldap
        self.port = procs.free_port()
        self.endpoint = "tcp://127.0.0.1:%d" % self.port
        self.config_path = os.path.join(self.dir, "mxcluster.conf")
        self.log_path = os.path.join(self.dir, "delivery.log")
        pw_file = os.path.join(self.dir, "ldap.pw")
        with open(pw_file, "w") as f:
            f.write(ldap.service_pw + "\n")
        os.chmod(pw_file, 0o600)
        shard_text = ",\n    ".join(
            "{ name = %s; endpoints = %s; }" % (_lc_string(name), _lc_list(endpoints))
            for name, endpoints in shards.items())
        with open(self.config_path, "w") as f:
            f.write("""
node = { name = "test1"; id = 2; state_dir = %(state)s; };
log = { level = %(level)s; };
ldap = { uris = %(uris)s; base_dn = %(base)s; bind_dn = %(bind_dn)s;
         bind_password_file = %(pw)s; timeout = "2s"; connect_timeout = "1s";
         retry_down_after = "1s"; };
delivery = {
  listen = %(listen)s;
  postmaster = "postmaster@example.test";
  store_timeout = "3s";
  quota_warning_low = %(low)d;
  quota_warning_high = %(high)d;
  default_shard = %(default)s;
  shards = (
    %(shards)s
  );
};
%(extra)s
""" % {"state": _lc_string(self.dir), "level": _lc_string(log_level),
       "uris": _lc_list([ldap.uri]), "base": _lc_string(ldap.base_dn),
       "bind_dn": _lc_string(ldap.service_dn), "pw": _lc_string(pw_file),
       "listen": _lc_string(self.endpoint), "low": warn_low, "high": warn_high,
       "default": _lc_string(default_shard), "shards": shard_text, "extra": extra_config})
        self.proc = None
        self.start()

    def start(self):
        self.proc = procs.start_process(
            "mx-delivery", [os.path.join(build_dir(), "delivery", "mx-delivery"), "-c",
                            self.config_path],
            self.log_path, ready=procs.port_probe("127.0.0.1", self.port), timeout=15,
            what="its bus port")

    def stop(self):
        if self.proc:
            self.proc.stop()

    def kill(self):
        if self.proc:
            self.proc.kill()

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def entries(self, kind):
        """entries - names in the outbound or failures queue."""
        queue = os.path.join(self.dir, "delivery", kind, "queue")
        return sorted(os.listdir(queue)) if os.path.isdir(queue) else []

    def read_entry(self, kind, name):
        with open(os.path.join(self.dir, "delivery", kind, "queue", name), "rb") as f:
            return f.read()

    def close(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

"""mxlaunch - start real mxcluster components (and the servers they need) on
free loopback ports in a private directory, and stop them whatever happens.

Used by the integration tests (temporary mode: everything is torn down at
interpreter exit, on SIGTERM/SIGINT, or by close()) and by the quickstart
(persistent mode: a given state dir, left running).  Standard library only.
"""

from .procs import (ManagedProcess, ProcessError, StartupError, free_port,
                    group_members, port_probe, registry, start_process,
                    stop_all, stop_pidfile, wait_until)
from .slapd import LdapError, Slapd, parse_ldif, source_dir
from .inbound import Inbound, TestSink, build_dir, client_tls_context, make_certificate
from .delivery import Delivery
from .store import Store
from .imapd import Dovecot, Imapd
from .cluster import Cluster

__all__ = [
    "ManagedProcess", "ProcessError", "StartupError", "free_port",
    "group_members", "port_probe", "registry", "start_process", "stop_all",
    "stop_pidfile", "wait_until",
    "LdapError", "Slapd", "parse_ldif", "source_dir",
    "Inbound", "TestSink", "build_dir", "client_tls_context", "make_certificate",
    "Delivery",
    "Store",
    "Imapd", "Dovecot", "Cluster",
]

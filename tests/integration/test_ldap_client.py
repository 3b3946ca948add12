"""test_ldap_client - the C LDAP client (common/mx_ldap.c) against real slapd.

Starts slapd through mxlaunch and runs $MX_BUILD_DIR/common/test_ldap_live
(cmocka) once per scenario, passing the directory through the environment:
MX_TEST_LDAP_URI (one or more URIs), MX_TEST_LDAP_BASE, MX_TEST_LDAP_BIND_DN,
MX_TEST_LDAP_BIND_PW, MX_TEST_LDAP_MODE, and for some scenarios
MX_TEST_SLAPD_PID / MX_TEST_LDAP_URI2.

Scenarios: found (mail, alternates, hostile input finds nothing), notfound
(negative cache), unreachable (dead port, black-holed address, bind checks
with the directory down), hang (slapd SIGSTOPped: UNAVAILABLE after the
operation timeout while a timer keeps firing on time), failover (dead first
URI; first slapd SIGKILLed mid-run with a second one live), bind (password
checks), concurrency (1,000 searches on 4 connections), throughput
(searches/s, 1 vs 4 connections, printed).

Run by ctest (label integration), or by hand:
  PYTHONPATH=deploy MX_SOURCE_DIR=$PWD MX_BUILD_DIR=build python3 \
      tests/integration/test_ldap_client.py -v
"""

import os
import subprocess
import sys
import unittest

from mxlaunch import Slapd, free_port

BUILD_DIR = os.environ.get("MX_BUILD_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
BINARY = os.path.join(BUILD_DIR, "common", "test_ldap_live")


def dead_uri():
    """dead_uri - a loopback URI where nothing listens."""
    return "ldap://127.0.0.1:%d/" % free_port()


class LdapClientTest(unittest.TestCase):
    slapd = None

    @classmethod
    def setUpClass(cls):
        if not os.access(BINARY, os.X_OK):
            raise unittest.SkipTest("%s not built" % BINARY)
        cls.slapd = Slapd()

    @classmethod
    def tearDownClass(cls):
        if cls.slapd is not None:
            cls.slapd.close()

    def run_mode(self, mode, uri, directory=None, timeout=240, **extra):
        directory = directory or self.slapd
        env = dict(os.environ)
        env.update({
            "MX_TEST_LDAP_MODE": mode,
            "MX_TEST_LDAP_URI": uri,
            "MX_TEST_LDAP_BASE": directory.base_dn,
            "MX_TEST_LDAP_BIND_DN": directory.service_dn,
            "MX_TEST_LDAP_BIND_PW": directory.service_pw,
        })
        env.update({k: str(v) for k, v in extra.items()})
        proc = subprocess.run([BINARY], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)
        out = proc.stdout.decode("utf-8", "replace")
        sys.stdout.write("\n--- test_ldap_live %s ---\n%s" % (mode, out))
        sys.stdout.flush()
        self.assertEqual(proc.returncode, 0,
                         "test_ldap_live mode %s failed:\n%s" % (mode, out))
        self.assertIn("PASSED", out)
        return out

    def test_a_found(self):
        self.run_mode("found", self.slapd.uri)

    def test_b_notfound_negative_cache(self):
        self.run_mode("notfound", self.slapd.uri)

    def test_c_unreachable(self):
        self.run_mode("unreachable", dead_uri())

    def test_d_hang(self):
        with Slapd() as hung:
            try:
                # The program SIGSTOPs the server itself once its connection
                # is established, and SIGCONTs it before checking recovery.
                self.run_mode("hang", hung.uri, directory=hung,
                              MX_TEST_SLAPD_PID=hung.pid)
            finally:
                hung.resume()  # whatever happened (SIGCONT)
            self.assertTrue(hung.ldapsearch("(uid=alice)", ["mail"]))

    def test_e_failover_dead_first(self):
        self.run_mode("failover", dead_uri() + " " + self.slapd.uri,
                      MX_TEST_LDAP_URI2=self.slapd.uri)

    def test_e_failover_first_killed_mid_run(self):
        with Slapd() as first:
            self.run_mode("killover", first.uri + " " + self.slapd.uri,
                          directory=first, MX_TEST_SLAPD_PID=first.pid,
                          MX_TEST_LDAP_URI2=self.slapd.uri)
            self.assertFalse(first.running)

    def test_f_bind_check(self):
        self.run_mode("bind", self.slapd.uri)

    def test_g_concurrency(self):
        self.run_mode("concurrency", self.slapd.uri)

    def test_h_throughput(self):
        out = self.run_mode("throughput", self.slapd.uri)
        self.assertIn("THROUGHPUT", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)

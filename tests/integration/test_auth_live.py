"""test_auth_live - the shared login check (common/mx_auth.c) against slapd.

Starts slapd with ldap-schema/sample.ldif through mxlaunch and runs
$MX_BUILD_DIR/common/test_auth with the directory in its environment
(MX_TEST_LDAP_URI, MX_TEST_LDAP_BASE, MX_TEST_LDAP_BIND_DN,
MX_TEST_LDAP_BIND_PW), which enables its "auth_live" group: OK with the
identity and shard, INVALID for wrong passwords, DISABLED only with the right
password of a disabled/deleted account, BLOCKED per account.

Run by ctest (label integration), or by hand:
  PYTHONPATH=deploy MX_SOURCE_DIR=$PWD MX_BUILD_DIR=build python3 \\
      tests/integration/test_auth_live.py -v
"""

import os
import subprocess
import sys
import unittest

from mxlaunch import Slapd

BUILD_DIR = os.environ.get("MX_BUILD_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
BINARY = os.path.join(BUILD_DIR, "common", "test_auth")


class AuthLiveTest(unittest.TestCase):
    def test_auth_against_sample_directory(self):
        if not os.access(BINARY, os.X_OK):
            self.fail("%s not built" % BINARY)
        with Slapd() as slapd:
            env = dict(os.environ)
            env.update({
                "MX_TEST_LDAP_URI": slapd.uri,
                "MX_TEST_LDAP_BASE": slapd.base_dn,
                "MX_TEST_LDAP_BIND_DN": slapd.service_dn,
                "MX_TEST_LDAP_BIND_PW": slapd.service_pw,
            })
            proc = subprocess.run([BINARY], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=240)
        out = proc.stdout.decode("utf-8", "replace")
        sys.stdout.write(out)
        self.assertEqual(proc.returncode, 0, "test_auth failed:\n" + out)
        # The live group must really have run, not been skipped.
        self.assertNotIn("auth_live: skipped", out)
        self.assertIn("[       OK ] test_live_disabled_needs_password", out)
        self.assertIn("[  PASSED  ] 4 test(s).", out)
        self.assertIn("[  PASSED  ] 6 test(s).", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)

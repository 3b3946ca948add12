#!/usr/bin/env python3
"""test_ldap_schema - the mxcluster LDAP schema, sample data, ACLs and the
mxlaunch Slapd launcher, against a REAL slapd on a free loopback port.

Run: ctest -R ldap_schema, or
  PYTHONPATH=deploy MX_SOURCE_DIR=$PWD python3 tests/integration/test_ldap_schema.py
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

import mxlaunch
from mxlaunch import LdapError, Slapd

SRC = mxlaunch.source_dir()
BASE = "dc=example,dc=test"
PEOPLE = "ou=people," + BASE


def user_dn(name):
    return "uid=%s,%s" % (name, PEOPLE)


# Every pgid and directory any Slapd of this module used: checked at the end.
STARTED = []


def track(slapd):
    STARTED.append((slapd.pid, slapd.dir))
    return slapd


def live_children():
    """Non-zombie processes whose parent is this interpreter."""
    me, kids = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(rest[1]) == me and rest[0] not in ("Z", "X"):
            kids.append(int(name))
    return kids


def procs_mentioning(text):
    """Live processes whose command line contains TEXT."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open("/proc/%s/stat" % name) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmd and state not in ("Z", "X"):
            found.append((int(name), cmd))
    return found


# Expected sample entries: dn -> {attribute: exact sorted values}.  Only the
# attributes listed are compared; ABSENT lists attributes that must not exist.
ABSENT = object()
SAMPLE = {
    BASE: {"objectClass": ["dcObject", "mxMailDomain", "organization", "top"],
           "associatedDomain": ["example.test"], "mxDomainStatus": ["active"]},
    "ou=people," + BASE: {"ou": ["people"]},
    "ou=groups," + BASE: {"ou": ["groups"]},
    "ou=aliases," + BASE: {"ou": ["aliases"]},
    "cn=mxservice," + BASE: {
        "objectClass": ["organizationalRole", "simpleSecurityObject", "top"]},
    user_dn("alice"): {
        "mail": ["alice@example.test"], "mxAccountStatus": ["active"],
        "mxQuotaBytes": ["104857600"],
        "mxAlternateAddress": ["a@example.test", "alice.smith@example.test"],
        "mxStoreShard": ["shard1"], "mxSpamOptIn": ["TRUE"],
        "mxSpamBlock": ["@spam.test"], "mxSpamAllow": ["friend@partner.test"],
        "mxSpamThreshold": ["6.5"], "mxForwardTo": ABSENT,
        "objectClass": ["inetOrgPerson", "mxAccount", "organizationalPerson",
                        "person", "top"]},
    user_dn("bob"): {"mail": ["bob@example.test"],
                     "mxAccountStatus": ["disabled"]},
    user_dn("carol"): {"mxAccountStatus": ["active"],
                       "mxForwardTo": ["carol@elsewhere.test"],
                       "mxForwardKeepCopy": ["TRUE"]},
    user_dn("dave"): {"mxAccountStatus": ["active"],
                      "mxForwardTo": ["dave@remote.test"],
                      "mxForwardKeepCopy": ["FALSE"]},
    user_dn("erin"): {"mxAccountStatus": ["deleted"]},
    user_dn("frank"): {"mxAccountStatus": ["active"],
                       "mxQuotaBytes": ["1048576"],
                       "mxQuotaMessages": ["1000"],
                       "mxStoreShard": ["shard2"]},
    "mail=postmaster@example.test,ou=aliases," + BASE: {
        "objectClass": ["mxAlias", "top"],
        "mxAliasTarget": ["alice@example.test"]},
    "mail=abuse@example.test,ou=aliases," + BASE: {
        "mxAliasTarget": ["alice@example.test"]},
    "mail=info@example.test,ou=aliases," + BASE: {
        "mxAliasTarget": ["alice@example.test", "frank@example.test"]},
    "cn=staff,ou=groups," + BASE: {
        "objectClass": ["groupOfNames", "mxMailingList", "top"],
        "mail": ["staff@example.test"],
        "member": [user_dn("alice"), user_dn("carol")],
        "mxListMemberAddress": ["outside@partner.test"],
        "mxListInternalOnly": ["FALSE"]},
    "cn=all,ou=groups," + BASE: {
        "mail": ["all@example.test"], "mxListInternalOnly": ["TRUE"],
        "mxListFilter": ["(&(objectClass=mxAccount)(mxAccountStatus=active))"],
        "member": [""]},
}

USERS = ["alice", "bob", "carol", "dave", "erin", "frank"]


class SampleDirectoryTest(unittest.TestCase):
    """slapd.conf form, sample.ldif loaded with slapadd."""

    @classmethod
    def setUpClass(cls):
        cls.ldap = track(Slapd())

    @classmethod
    def tearDownClass(cls):
        cls.ldap.close()

    def svc_search(self, flt, attrs=None, **kw):
        return self.ldap.ldapsearch(flt, attrs, bind_dn=self.ldap.service_dn,
                                    password=self.ldap.service_pw, **kw)

    def test_every_sample_entry_has_its_attributes(self):
        entries = dict(self.ldap.ldapsearch("(objectClass=*)"))
        self.assertEqual(sorted(entries), sorted(SAMPLE),
                         "sample.ldif entries differ from the expected set")
        for dn, want in SAMPLE.items():
            for attr, values in want.items():
                with self.subTest(dn=dn, attr=attr):
                    if values is ABSENT:
                        self.assertNotIn(attr, entries[dn])
                    else:
                        self.assertEqual(sorted(entries[dn].get(attr, [])),
                                         sorted(values))

    def test_passwords_are_ssha_hashes(self):
        for dn, attrs in self.ldap.ldapsearch("(userPassword=*)",
                                              ["userPassword"]):
            with self.subTest(dn=dn):
                self.assertTrue(attrs["userPassword"][0].startswith("{SSHA}"))

    def test_every_user_binds_with_sample_password(self):
        for name in USERS:
            with self.subTest(user=name):
                self.assertEqual(self.ldap.whoami(user_dn(name),
                                                  name + "-secret"),
                                 "dn:" + user_dn(name))

    def test_wrong_passwords_are_refused(self):
        cases = [(user_dn("alice"), "wrong"), (user_dn("alice"), "bob-secret"),
                 (user_dn("alice"), "alice-secret "),
                 (user_dn("nobody"), "nobody-secret"),
                 (self.ldap.service_dn, "alice-secret")]
        for dn, pw in cases:
            with self.subTest(dn=dn, pw=pw):
                self.assertFalse(self.ldap.can_bind(dn, pw))

    def test_empty_password_is_not_a_login(self):
        # A DN with an empty password is an "unauthenticated bind"; slapd's
        # default refuses it (53).  Clients must still refuse it themselves.
        with self.assertRaises(LdapError) as cm:
            self.ldap.whoami(user_dn("alice"), "")
        self.assertEqual(cm.exception.code, 53)

    def test_service_reads_mail_attributes_not_passwords(self):
        self.assertTrue(self.ldap.can_bind(self.ldap.service_dn,
                                           self.ldap.service_pw))
        res = self.svc_search("(uid=alice)", ["mail", "mxAccountStatus",
                                              "mxStoreShard", "userPassword"])
        self.assertEqual(len(res), 1)
        attrs = res[0][1]
        self.assertEqual(attrs["mail"], ["alice@example.test"])
        self.assertEqual(attrs["mxStoreShard"], ["shard1"])
        self.assertNotIn("userPassword", attrs)
        # Not even as a filter oracle.
        self.assertEqual(self.svc_search("(userPassword=*)", ["1.1"]), [])
        self.assertEqual(self.svc_search("(&(uid=alice)(userPassword=*))"), [])
        # All entries are visible to the service (recipient lookups).
        self.assertEqual(len(self.svc_search("(objectClass=*)", ["1.1"])),
                         len(SAMPLE))

    def test_service_cannot_write(self):
        with self.assertRaises(LdapError) as cm:
            self.ldap.ldapmodify(textwrap.dedent("""\
                dn: uid=bob,ou=people,dc=example,dc=test
                changetype: modify
                replace: mxAccountStatus
                mxAccountStatus: active
                """), bind_dn=self.ldap.service_dn,
                password=self.ldap.service_pw)
        self.assertEqual(cm.exception.code, 50)

    def test_anonymous_reads_nothing(self):
        for base, scope in [(BASE, "sub"), (user_dn("alice"), "base"),
                            ("", "base"), ("cn=Subschema", "base")]:
            with self.subTest(base=base):
                try:
                    res = self.ldap.ldapsearch("(objectClass=*)", base=base,
                                               scope=scope, bind_dn="",
                                               password="")
                except LdapError as e:
                    self.assertIn(e.code, (32, 50))
                else:
                    self.assertEqual(res, [])

    def test_user_reads_own_entry_only(self):
        alice = (user_dn("alice"), "alice-secret")
        own = self.ldap.ldapsearch("(objectClass=*)", ["mail", "userPassword"],
                                   base=alice[0], scope="base",
                                   bind_dn=alice[0], password=alice[1])
        self.assertEqual(own[0][1].get("mail"), ["alice@example.test"])
        self.assertNotIn("userPassword", own[0][1])
        try:
            other = self.ldap.ldapsearch("(objectClass=*)", base=user_dn("bob"),
                                         scope="base", bind_dn=alice[0],
                                         password=alice[1])
        except LdapError as e:
            self.assertIn(e.code, (32, 50))
        else:
            self.assertEqual(other, [])

    def test_address_matching_ignores_case_and_indexes_substrings(self):
        cases = [
            ("(mail=ALICE@Example.Test)", [user_dn("alice")]),
            ("(mxAlternateAddress=A@EXAMPLE.TEST)", [user_dn("alice")]),
            ("(mxAlternateAddress=alice.*)", [user_dn("alice")]),
            ("(|(mail=a@example.test)(mxAlternateAddress=a@example.test))",
             [user_dn("alice")]),
            ("(&(objectClass=mxAlias)(mail=Postmaster@example.test))",
             ["mail=postmaster@example.test,ou=aliases," + BASE]),
            ("(mxAliasTarget=frank@example.test)",
             ["mail=info@example.test,ou=aliases," + BASE]),
            ("(&(objectClass=mxMailDomain)(associatedDomain=EXAMPLE.test))",
             [BASE]),
            ("(mxListMemberAddress=outside@partner.test)",
             ["cn=staff,ou=groups," + BASE]),
            ("(mxQuotaBytes<=1048576)", [user_dn("frank")]),
            ("(mail=nobody@example.test)", []),
        ]
        for flt, want in cases:
            with self.subTest(filter=flt):
                got = [dn for dn, _ in self.svc_search(flt, ["1.1"])]
                self.assertEqual(sorted(got), sorted(want))

    def test_dynamic_list_filter_selects_active_accounts(self):
        lst = self.svc_search("(mail=all@example.test)", ["mxListFilter"])
        flt = lst[0][1]["mxListFilter"][0]
        got = sorted(dn for dn, _ in self.svc_search(flt, ["1.1"]))
        self.assertEqual(got, sorted(user_dn(n) for n in
                                     ("alice", "carol", "dave", "frank")))

    def test_pause_makes_directory_hang_and_resume_recovers(self):
        self.ldap.pause()
        try:
            with self.assertRaises(LdapError):
                self.ldap.ldapsearch("(uid=alice)", timeout=1)
        finally:
            self.ldap.resume()
        self.assertEqual(len(self.ldap.ldapsearch("(uid=alice)", ["1.1"])), 1)


class SchemaRulesTest(unittest.TestCase):
    """What the schema and the constraint overlay accept and refuse (this
    class modifies its directory, so it has its own)."""

    @classmethod
    def setUpClass(cls):
        cls.ldap = track(Slapd())

    @classmethod
    def tearDownClass(cls):
        cls.ldap.close()

    def test_mxaccount_value_rules(self):
        """What the schema (plus the constraint overlay) refuses."""
        def mod(attr, *values, op="replace", dn=user_dn("bob")):
            lines = ["dn: " + dn, "changetype: modify", "%s: %s" % (op, attr)]
            lines += ["%s: %s" % (attr, v) for v in values]
            return "\n".join(lines) + "\n"
        cases = [
            # (ldif, expected LDAP result code; 0 = accepted)
            (mod("mxAccountStatus", "bogus"), 19),
            (mod("mxAccountStatus", "Active"), 19),
            (mod("mxAccountStatus", "active", "disabled"), 19),
            (mod("mxAccountStatus", op="delete"), 65),  # MUST of mxAccount
            (mod("mail", op="delete"), 65),
            (mod("mxQuotaBytes", "100MB"), 21),
            (mod("mxQuotaBytes", "1", "2"), 19),
            (mod("mxForwardKeepCopy", "yes"), 21),
            (mod("mxSpamOptIn", "1"), 21),
            (mod("mxSpamThreshold", "abc"), 19),
            (mod("mxSpamThreshold", "1e5"), 19),
            (mod("mxStoreShard", "shard1", "shard2"), 19),
            (mod("mxDomainStatus", "gone", dn=BASE), 19),
            (mod("mxNoSuchAttribute", "x"), 17),
            (mod("mxAlternateAddress", "bob\u00e9@example.test"), 21),  # IA5
            # accepted:
            (mod("mxAccountStatus", "deleted"), 0),
            (mod("mxAccountStatus", "active"), 0),
            (mod("mxSpamThreshold", "-2.5"), 0),
            (mod("mxForwardTo", "b1@x.test", "b2@x.test"), 0),
            (mod("mxSpamBlock", "@spam.test", "x@y.test"), 0),
            (mod("mxAccountStatus", "disabled"), 0),
        ]
        for ldif, code in cases:
            with self.subTest(ldif=ldif):
                try:
                    self.ldap.ldapmodify(ldif)
                    got = 0
                except LdapError as e:
                    got = e.code
                self.assertEqual(got, code)
        bob = dict(self.ldap.ldapsearch("(uid=bob)"))[user_dn("bob")]
        self.assertEqual(bob["mxAccountStatus"], ["disabled"])
        self.assertEqual(sorted(bob["mxForwardTo"]), ["b1@x.test", "b2@x.test"])

    def test_object_class_rules(self):
        cases = [
            # mxAccount needs mxAccountStatus.
            ("dn: uid=zed,ou=people,dc=example,dc=test\nobjectClass: "
             "inetOrgPerson\nobjectClass: mxAccount\nuid: zed\ncn: Z\nsn: Z\n"
             "mail: zed@example.test\n", 65),
            # mxAlias needs a target.
            ("dn: mail=x@example.test,ou=aliases,dc=example,dc=test\n"
             "objectClass: mxAlias\nmail: x@example.test\n", 65),
            # mxMailDomain needs mxDomainStatus.
            ("dn: ou=d,dc=example,dc=test\nobjectClass: organizationalUnit\n"
             "objectClass: mxMailDomain\nou: d\nassociatedDomain: d.test\n", 65),
            # complete entries are accepted.
            ("dn: uid=zed,ou=people,dc=example,dc=test\nobjectClass: "
             "inetOrgPerson\nobjectClass: mxAccount\nuid: zed\ncn: Z\nsn: Z\n"
             "mail: zed@example.test\nmxAccountStatus: active\n", 0),
            ("dn: cn=empty,ou=groups,dc=example,dc=test\nobjectClass: "
             "groupOfNames\nobjectClass: mxMailingList\ncn: empty\nmember:\n"
             "mail: empty@example.test\nmxListFilter: (uid=zed)\n", 0),
        ]
        for ldif, code in cases:
            with self.subTest(ldif=ldif):
                try:
                    self.ldap.ldapadd(ldif)
                    got = 0
                except LdapError as e:
                    got = e.code
                self.assertEqual(got, code)


class ConfigLdifTest(unittest.TestCase):
    """cn=config form: mxcluster.ldif loads, both at build time (slapadd -n0)
    and into a running server (ldapadd -Y EXTERNAL, as README tells)."""

    NEW_USER = textwrap.dedent("""\
        dn: dc=example,dc=test
        objectClass: dcObject
        objectClass: organization
        objectClass: mxMailDomain
        dc: example
        o: Example
        associatedDomain: example.test
        mxDomainStatus: active

        dn: uid=gina,dc=example,dc=test
        objectClass: inetOrgPerson
        objectClass: mxAccount
        uid: gina
        cn: Gina
        sn: Gray
        mail: gina@example.test
        mxAccountStatus: active
        mxAlternateAddress: g@example.test
        mxStoreShard: shard3
        """)

    def check_gina(self, ldap):
        res = ldap.ldapsearch("(mxAlternateAddress=G@example.test)",
                              ["mail", "mxStoreShard"])
        self.assertEqual(res, [("uid=gina," + BASE,
                                {"mail": ["gina@example.test"],
                                 "mxStoreShard": ["shard3"]})])

    def test_ldif_config_with_sample(self):
        with Slapd(config_format="ldif") as ldap:
            track(ldap)
            self.assertTrue(os.path.isdir(os.path.join(ldap.confdir,
                                                       "cn=config")))
            self.assertEqual(len(ldap.ldapsearch("(objectClass=*)", ["1.1"])),
                             len(SAMPLE))
            self.assertTrue(ldap.can_bind(user_dn("alice"), "alice-secret"))
            res = ldap.ldapsearch("(uid=alice)", ["userPassword"],
                                  bind_dn=ldap.service_dn,
                                  password=ldap.service_pw)
            self.assertNotIn("userPassword", res[0][1])
            # the constraint overlay is configured in this form too
            with self.assertRaises(LdapError) as cm:
                ldap.ldapmodify("dn: %s\nchangetype: modify\nreplace: "
                                "mxAccountStatus\nmxAccountStatus: nope\n"
                                % user_dn("alice"))
            self.assertEqual(cm.exception.code, 19)

    def test_ldif_config_empty_then_ldapadd(self):
        with Slapd(config_format="ldif", load_sample=False) as ldap:
            track(ldap)
            with self.assertRaises(LdapError) as cm:  # empty database
                ldap.ldapsearch("(objectClass=*)", scope="base")
            self.assertEqual(cm.exception.code, 32)
            ldap.ldapadd(self.NEW_USER)
            self.check_gina(ldap)

    def test_mxcluster_ldif_into_running_server(self):
        with Slapd(config_format="ldif", mx_schema=False) as ldap:
            track(ldap)
            # Without the schema the entry is refused: proves what follows
            # really comes from mxcluster.ldif.
            with self.assertRaises(LdapError) as cm:
                ldap.ldapadd(self.NEW_USER)
            self.assertIn(cm.exception.code, (17, 21, 65))
            ldap.load_mx_schema()
            schema = ldap.ldapsearch("(cn=*mxcluster)", ["olcObjectClasses"],
                                     base="cn=schema,cn=config",
                                     sasl_external=True)
            self.assertEqual(len(schema), 1)
            names = " ".join(schema[0][1]["olcObjectClasses"])
            for oc in ("mxAccount", "mxAlias", "mxMailingList", "mxMailDomain"):
                self.assertIn("'%s'" % oc, names)
            ldap.ldapadd(self.NEW_USER)
            self.check_gina(ldap)


class GeneratedFilesTest(unittest.TestCase):

    def test_mxcluster_ldif_is_up_to_date(self):
        """mxcluster.ldif must be what make-ldif.sh makes of the .schema."""
        with tempfile.TemporaryDirectory() as tmp:
            for f in ("mxcluster.schema", "make-ldif.sh"):
                shutil.copy(os.path.join(SRC, "ldap-schema", f), tmp)
            subprocess.run(["sh", os.path.join(tmp, "make-ldif.sh")],
                           check=True, capture_output=True)
            with open(os.path.join(tmp, "mxcluster.ldif")) as f:
                fresh = f.read()
        with open(os.path.join(SRC, "ldap-schema", "mxcluster.ldif")) as f:
            committed = f.read()
        self.assertEqual(committed, fresh,
                         "run ldap-schema/make-ldif.sh and commit the result")
        for op in ("entryUUID", "creatorsName", "CRC32", "{"):
            if op == "{":
                self.assertNotIn("cn: {", fresh)
                self.assertNotIn("dn: cn={", fresh)
            else:
                self.assertNotIn(op, fresh)

    def test_sample_ldif_has_no_clear_passwords(self):
        with open(os.path.join(SRC, "ldap-schema", "sample.ldif")) as f:
            text = f.read()
        for name in ["alice", "bob", "carol", "dave", "erin", "frank"]:
            self.assertNotIn(name + "-secret", text)
        for line in text.splitlines():
            if line.lower().startswith("userpassword:"):
                self.assertTrue(line.split(None, 1)[1].startswith("{SSHA}"),
                                line)


CHILD = textwrap.dedent("""\
    import os, signal, sys, time
    # Our parent may run with SIGINT ignored (a background job): restore
    # Python's usual handler so the SIGINT case means something.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import mxlaunch
    mode = sys.argv[1]
    a = mxlaunch.Slapd()
    b = mxlaunch.Slapd(config_format="ldif", load_sample=False)
    if mode == "paused":
        a.pause()
    print(a.pid, a.dir, b.pid, b.dir, flush=True)
    if mode == "raise":
        raise RuntimeError("test exception")
    if mode in ("exit", "paused"):
        sys.exit(0)
    time.sleep(60)   # wait for the signal
    """)


def kill_group(pgid):
    if mxlaunch.group_members(pgid):
        os.killpg(pgid, signal.SIGKILL)


class CleanupTest(unittest.TestCase):
    """Nothing started through mxlaunch survives its owner."""

    def run_child(self, mode, sig=None):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.join(SRC, "deploy")
        env["MX_SOURCE_DIR"] = SRC
        p = subprocess.Popen([sys.executable, "-c", CHILD, mode], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        try:
            line = p.stdout.readline().split()
            if len(line) != 4:
                p.kill()
                self.fail("child failed: %s" % p.stderr.read())
            if sig is not None:
                p.send_signal(sig)
            rc = p.wait(timeout=30)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            p.stdout.close()
            p.stderr.close()
        pids = [int(line[0]), int(line[2])]
        dirs = [line[1], line[3]]
        for pid in pids:  # whatever the assertions say, leave nothing
            self.addCleanup(kill_group, pid)
        for pid, d in zip(pids, dirs):
            self.assertEqual(mxlaunch.group_members(pid), [],
                             "slapd group %d left behind (%s)" % (pid, mode))
            self.assertEqual(procs_mentioning(d), [])
            self.assertFalse(os.path.exists(d), "%s not removed" % d)
        return rc

    def test_normal_exit(self):
        self.assertEqual(self.run_child("exit"), 0)

    def test_exit_while_paused(self):
        self.assertEqual(self.run_child("paused"), 0)

    def test_uncaught_exception(self):
        self.assertEqual(self.run_child("raise"), 1)

    def test_sigterm(self):
        self.assertEqual(self.run_child("wait", signal.SIGTERM),
                         -signal.SIGTERM)

    def test_sigint(self):
        self.assertNotEqual(self.run_child("wait", signal.SIGINT), 0)

    def test_failed_start_reports_log_and_leaves_nothing(self):
        import socket
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            t0 = time.monotonic()
            with self.assertRaises(mxlaunch.StartupError) as cm:
                Slapd(port=port)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertIn("Address already in use", str(cm.exception))
        self.assertEqual(procs_mentioning("127.0.0.1:%d/" % port), [])

    def test_stop_start_keeps_port_and_data(self):
        with Slapd() as ldap:
            track(ldap)
            port, pgid = ldap.port, ldap.pid
            ldap.ldapmodify("dn: %s\nchangetype: modify\nreplace: "
                            "mxAccountStatus\nmxAccountStatus: disabled\n"
                            % user_dn("alice"))
            ldap.stop()
            self.assertFalse(ldap.running)
            self.assertEqual(mxlaunch.group_members(pgid), [])
            with self.assertRaises(LdapError):
                ldap.ldapsearch("(uid=alice)", timeout=2)
            ldap.start()
            track(ldap)
            self.assertEqual(ldap.port, port)
            res = ldap.ldapsearch("(uid=alice)", ["mxAccountStatus"])
            self.assertEqual(res[0][1]["mxAccountStatus"], ["disabled"])
            ldap.kill()
            self.assertEqual(mxlaunch.group_members(ldap.pid), [])
            ldap.start()
            track(ldap)
            self.assertEqual(len(ldap.ldapsearch("(uid=alice)", ["1.1"])), 1)
        self.assertFalse(os.path.exists(ldap.dir))

    def test_persistent_mode_survives_owner_and_reattaches(self):
        state = tempfile.mkdtemp(prefix="mxpst-")
        try:
            env = dict(os.environ, PYTHONPATH=os.path.join(SRC, "deploy"),
                       MX_SOURCE_DIR=SRC)
            out = subprocess.run(
                [sys.executable, "-c",
                 "import mxlaunch; s = mxlaunch.Slapd(state_dir=%r, "
                 "persistent=True); print(s.pid, s.port)" % state],
                env=env, capture_output=True, text=True, timeout=60,
                check=True).stdout.split()
            pid, port = int(out[0]), int(out[1])
            self.assertTrue(mxlaunch.group_members(pid), "persistent slapd died")
            ldap = Slapd(state_dir=state, persistent=True)
            self.assertEqual((ldap.pid, ldap.port), (pid, port))
            self.assertEqual(len(ldap.ldapsearch("(uid=alice)", ["1.1"])), 1)
            ldap.stop()
            self.assertEqual(mxlaunch.group_members(pid), [])
        finally:
            mxlaunch.stop_pidfile(os.path.join(state, "slapd", "run",
                                               "slapd.pid"))
            shutil.rmtree(state, ignore_errors=True)


def tearDownModule():
    # Everything the tests above started must be gone now.
    mxlaunch.stop_all()  # (a no-op if every test closed its servers)
    leftovers = []
    for pgid, d in STARTED:
        if mxlaunch.group_members(pgid):
            leftovers.append("slapd group %d" % pgid)
        if os.path.exists(d):
            leftovers.append("directory " + d)
        leftovers += ["%d %s" % p for p in procs_mentioning(d)]
    leftovers += ["child %d" % p for p in live_children()]
    if leftovers:
        raise AssertionError("left behind: " + ", ".join(leftovers))


if __name__ == "__main__":
    unittest.main(verbosity=2)

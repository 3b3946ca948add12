"""test_delivery - mx-inbound -> mx-delivery -> mx-store, with a real slapd.

Messages are injected through mx-inbound with smtplib, expanded by
mx-delivery from the sample directory (aliases, lists, forwards, the
internal-only all-users list), and must appear as Maildir files on the
right store shard, counted both on disk and through the store API.
"""

import os
import smtplib
import time
import unittest

from mxlaunch import Delivery, Inbound, Slapd, Store, client_tls_context, wait_until

TIMEOUT = 15


def maildir_files(store, user, folder=""):
    """maildir_files - message files in new/ and cur/ of user's folder."""
    root = store.maildir(user)
    if folder:
        root = os.path.join(root, "." + folder)
    found = []
    for sub in ("new", "cur"):
        path = os.path.join(root, sub)
        if os.path.isdir(path):
            found += [os.path.join(path, n) for n in os.listdir(path)]
    return sorted(found)


def read(path):
    with open(path, "rb") as f:
        return f.read()


class DeliveryBase(unittest.TestCase):
    """One cluster per class: slapd, two store shards, delivery, inbound."""

    @classmethod
    def setUpClass(cls):
        cls.ldap = Slapd()
        cls.shard1 = Store(log_level="info")
        cls.shard2 = Store(log_level="info")
        cls.delivery = Delivery(cls.ldap, {"shard1": [cls.shard1.endpoint],
                                           "shard2": [cls.shard2.endpoint]}, log_level="info")
        shards = '( { name = "shard1"; endpoints = [ "%s" ]; }, { name = "shard2"; endpoints = [ "%s" ]; } )' % (
            cls.shard1.endpoint, cls.shard2.endpoint)
        cls.mx = Inbound(cls.ldap, cls.delivery.endpoint, log_level="info",
                         inbound_overrides={"shards": shards})

    @classmethod
    def tearDownClass(cls):
        for part in ("mx", "delivery", "shard1", "shard2", "ldap"):
            getattr(cls, part).close()

    def shard_of(self, user):
        return self.shard2 if user.split("@")[0] in ("dave", "frank") else self.shard1

    def count(self, user):
        return len(maildir_files(self.shard_of(user), user))

    def api_messages(self, user, mailbox="INBOX"):
        reply = self.shard_of(user).request("mailbox_status", user=user, mailbox=mailbox)
        self.assertEqual(reply.status, 0, reply)
        return reply.get("messages")

    def send(self, rcpts, subject, sender="someone@remote.test", body=b"hello\r\n", port="mta",
             login=None, declare_size=True):
        msg = (b"From: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@remote.test>\r\n\r\n"
               % (sender.encode(), subject.encode(), subject.encode())) + body
        if login:
            s = smtplib.SMTP("127.0.0.1", self.mx.port("msa"), timeout=TIMEOUT)
            s.starttls(context=client_tls_context(self.mx.cert))
            s.login(*login)
        else:
            s = smtplib.SMTP("127.0.0.1", self.mx.port(port), timeout=TIMEOUT)
        if declare_size:
            refused = s.sendmail(sender, rcpts, msg)
        else:  # no SIZE=: nothing for inbound's RCPT-time quota check to go on
            s.ehlo_or_helo_if_needed()
            self.assertEqual(s.mail(sender)[0], 250)
            refused = {}
            for r in rcpts:
                reply = s.rcpt(r)
                if reply[0] != 250:
                    refused[r] = reply
            self.assertEqual(s.data(msg)[0], 250)
        s.quit()
        self.assertEqual(refused, {})

    def wait_count(self, user, n, what=None):
        wait_until(lambda: self.count(user) >= n, timeout=TIMEOUT,
                   what=what or "%d messages for %s" % (n, user))
        self.assertEqual(self.count(user), n, user)

    def wait_spool_empty(self):
        wait_until(lambda: not self.mx.spool_entries(), timeout=TIMEOUT,
                   what="mx-inbound's spool to drain")


class TestExpansion(DeliveryBase):
    def setUp(self):
        self.before = {u: self.count(u) for u in
                       ("alice@example.test", "carol@example.test", "frank@example.test",
                        "dave@example.test")}

    def delta(self, user):
        return self.count(user) - self.before[user]

    def test_user_and_alternate_address(self):
        self.send(["alice@example.test"], "direct")
        self.send(["alice.smith@example.test"], "alternate")
        self.wait_spool_empty()
        wait_until(lambda: self.delta("alice@example.test") == 2, timeout=TIMEOUT,
                   what="two messages for alice")
        texts = [read(p) for p in maildir_files(self.shard1, "alice@example.test")]
        self.assertTrue(any(b"Subject: alternate" in t for t in texts))
        # Delivered-To names the mailbox; the Received of inbound is there too.
        self.assertTrue(all(t.startswith(b"Delivered-To: alice@example.test\r\n") for t in texts))
        self.assertEqual(self.api_messages("alice@example.test"), self.count("alice@example.test"))

    def test_alias_to_two_shards(self):
        self.send(["info@example.test"], "info-alias")
        self.wait_spool_empty()
        wait_until(lambda: self.delta("alice@example.test") == 1 and
                   self.delta("frank@example.test") == 1, timeout=TIMEOUT,
                   what="info@ to reach alice (shard1) and frank (shard2)")
        self.assertEqual(maildir_files(self.shard1, "frank@example.test"), [])
        self.assertEqual(self.api_messages("frank@example.test"), self.count("frank@example.test"))

    def test_list_with_forward_and_external_member(self):
        self.send(["staff@example.test"], "staff-list")
        self.wait_spool_empty()
        wait_until(lambda: self.delta("alice@example.test") == 1 and
                   self.delta("carol@example.test") == 1, timeout=TIMEOUT,
                   what="staff@ to reach alice and carol")
        outbound = [self.delivery.read_entry("outbound", n)
                    for n in self.delivery.entries("outbound")]
        staff = [o for o in outbound if b"Subject: staff-list" in o]
        rcpts = sorted(o.split(b"\nrcpt: ")[1].split(b"\n")[0] for o in staff)
        # carol keeps a copy and forwards; the list's external subscriber.
        self.assertEqual(rcpts, [b"carol@elsewhere.test", b"outside@partner.test"])

    def test_forward_without_copy(self):
        self.send(["dave@example.test"], "dave-forward")
        self.wait_spool_empty()
        wait_until(lambda: any(b"Subject: dave-forward" in self.delivery.read_entry("outbound", n)
                               for n in self.delivery.entries("outbound")),
                   timeout=TIMEOUT, what="dave's forward in the outbound queue")
        self.assertEqual(self.delta("dave@example.test"), 0)

    def test_internal_list_refused_from_outside(self):
        failures_before = len(self.delivery.entries("failures"))
        self.send(["all@example.test"], "all-outside")
        self.wait_spool_empty()
        wait_until(lambda: len(self.delivery.entries("failures")) == failures_before + 1,
                   timeout=TIMEOUT, what="a failure record for all@")
        time.sleep(0.5)
        self.assertEqual(self.delta("alice@example.test"), 0)
        self.assertEqual(self.delta("frank@example.test"), 0)

    def test_internal_all_users_list_from_inside(self):
        self.send(["all@example.test"], "all-inside", sender="alice@example.test",
                  login=("alice@example.test", "alice-secret"))
        self.wait_spool_empty()
        # Every active account: alice, carol, frank (dave forwards without
        # a copy; bob is disabled and erin deleted: skipped).
        wait_until(lambda: self.delta("alice@example.test") == 1 and
                   self.delta("carol@example.test") == 1 and
                   self.delta("frank@example.test") == 1, timeout=TIMEOUT,
                   what="the all-users list to reach every active mailbox")
        self.assertEqual(self.delta("dave@example.test"), 0)


class TestQuota(DeliveryBase):
    """frank has a 1 MiB quota (sample data)."""

    def test_warnings_once_then_refusal(self):
        user = "frank@example.test"
        chunk = b"x" * 76 + b"\r\n"
        body = chunk * (300 * 1024 // len(chunk))   # ~300 KiB per message
        sent = 0
        for i in range(3):   # ~900 KiB: past 80 %
            self.send([user], "fill-%d" % i, body=body)
            sent += 1
        self.wait_spool_empty()
        wait_until(lambda: self.count(user) >= sent + 1, timeout=TIMEOUT,
                   what="the 80 % warning")
        warnings = [p for p in maildir_files(self.shard2, user) if b"Subject: Your mailbox is"
                    in read(p)]
        self.assertEqual(len(warnings), 1)
        small = chunk * (80 * 1024 // len(chunk))  # ~80 KiB: past 95 %
        self.send([user], "fill-small", body=small)
        sent += 1
        self.wait_spool_empty()
        wait_until(lambda: self.count(user) >= sent + 2, timeout=TIMEOUT,
                   what="the 95 % warning")
        warnings = [p for p in maildir_files(self.shard2, user) if b"Subject: Your mailbox is"
                    in read(p)]
        self.assertEqual(len(warnings), 2)
        files_before = self.count(user)
        failures_before = len(self.delivery.entries("failures"))
        self.send([user], "over", body=body, declare_size=False)  # would exceed 100 %
        self.wait_spool_empty()
        wait_until(lambda: len(self.delivery.entries("failures")) == failures_before + 1,
                   timeout=TIMEOUT, what="the over-quota failure record")
        self.assertEqual(self.count(user), files_before)
        root = self.shard2.maildir(user)
        self.assertEqual(os.listdir(os.path.join(root, "tmp")), [])  # nothing partial
        record = [self.delivery.read_entry("failures", n)
                  for n in self.delivery.entries("failures")]
        self.assertTrue(any(b"5.2.2" in r and b"Subject: over" in r for r in record))
        # At RCPT inbound asks the store: a message declared (SIZE=) larger
        # than what is left is refused at once, a small one still accepted.
        used = self.shard2.request("quota_get", user=user).get("quota_used")
        left = 1024 * 1024 - used
        s = smtplib.SMTP("127.0.0.1", self.mx.port("mta"), timeout=TIMEOUT)
        s.ehlo("client.test")
        s.mail("someone@remote.test", ["SIZE=%d" % (left + 1)])
        code, text = s.rcpt(user)
        self.assertEqual((code, text[:5]), (552, b"5.2.2"), text)
        s.rset()
        s.mail("someone@remote.test", ["SIZE=%d" % max(left - 1024, 1)])
        self.assertEqual(s.rcpt(user)[0], 250)
        s.quit()
        self.assertIn("rcpt=frank@example.test reason=\"mailbox full\"", self.mx.log())


class TestCrashes(DeliveryBase):
    """kill -9 of mx-store and of mx-delivery during a stream of messages:
    every accepted message is in its mailbox exactly once afterwards."""

    MESSAGES = int(os.environ.get("MX_TEST_CRASH_MESSAGES", "2000"))

    def test_kill_store_and_delivery_during_stream(self):
        user = "alice@example.test"
        before = self.count(user)
        s = smtplib.SMTP("127.0.0.1", self.mx.port("mta"), timeout=TIMEOUT)
        accepted = []
        for i in range(self.MESSAGES):
            subject = "stream-%04d" % i
            s.sendmail("s@remote.test", [user],
                       b"Subject: %s\r\nMessage-ID: <%s@x>\r\n\r\nbody\r\n" % (
                           subject.encode(), subject.encode()))
            accepted.append(subject)
            if i == self.MESSAGES // 3:
                self.shard1.kill()
                self.shard1.start()
            if i == 2 * self.MESSAGES // 3:
                self.delivery.kill()
                self.delivery.start()
        s.quit()
        wait_until(lambda: not self.mx.spool_entries(), timeout=120,
                   what="every accepted message to be delivered")
        texts = [read(p) for p in maildir_files(self.shard1, user)]
        subjects = [t.split(b"Subject: ")[1].split(b"\r\n")[0].decode()
                    for t in texts if b"Subject: stream-" in t]
        self.assertEqual(sorted(subjects), sorted(accepted))  # all there, none twice
        self.assertEqual(self.count(user), before + self.MESSAGES)
        self.assertEqual(self.api_messages(user), self.count(user))
        fetch = self.shard1.request("message_fetch", user=user, mailbox="INBOX",
                                    uid_set="1:*", fetch_items=1)
        uids = fetch.all("uid")
        self.assertEqual(uids, sorted(set(uids)))  # strictly increasing


if __name__ == "__main__":
    unittest.main(verbosity=2)

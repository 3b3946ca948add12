"""test_store - mx-store over its bus API, driven through mx-store-cli:
appends with dedup, status/select, fetch, body sections, flags with
UNCHANGEDSINCE, expunge, quota, hostile names, and kill -9 during a burst
of appends (nothing acknowledged lost, nothing doubled)."""

import os
import random
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.environ.get("MX_SOURCE_DIR", ".") + "/deploy")
from mxlaunch import Store, stop_all  # noqa: E402

USER = "alice@Example.test"
OK, DUPLICATE, PERMFAIL, NOT_FOUND, EXISTS, OVER_QUOTA, UIDVALIDITY = 0, 1, 3, 4, 5, 6, 8
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

MESSAGE = (b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\n"
           b"Subject: multipart test\r\nMessage-ID: <m1@example.test>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
           b"--XX\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n"
           b"--XX\r\nContent-Type: text/html\r\n\r\n<p>second</p>\r\n--XX--\r\n")


def new_id():
    return random.choice("01234567") + "".join(random.choice(ALPHABET) for _ in range(25))


def maildir_files(store, user, folder=""):
    base = os.path.join(store.maildir(user), folder)
    names = []
    for sub in ("new", "cur"):
        path = os.path.join(base, sub)
        if os.path.isdir(path):
            names += [n for n in os.listdir(path) if not n.startswith(".")]
    return names


class StoreApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.store = Store()

    @classmethod
    def tearDownClass(cls):
        cls.store.close()

    def append(self, mailbox="INBOX", body=MESSAGE, msgid=None, **kw):
        fields = dict(user=USER, mailbox=mailbox, create=1, body=body)
        if msgid:
            fields["msgid"] = msgid
        fields.update(kw)
        return self.store.request("append", **fields)

    def test_append_dedup_status_select(self):
        mid = new_id()
        r1 = self.append("Dedup", msgid=mid)
        self.assertEqual(r1.status, OK, r1)
        r2 = self.append("Dedup", msgid=mid)
        self.assertEqual(r2.status, DUPLICATE)
        self.assertEqual(r2.get("uid"), r1.get("uid"))
        r3 = self.append("Dedup", msgid=new_id())
        self.assertEqual(r3.get("uid"), r1.get("uid") + 1)
        self.assertEqual(len(maildir_files(self.store, USER, ".Dedup")), 2)
        st = self.store.request("mailbox_status", user=USER, mailbox="Dedup")
        self.assertEqual(st.get("messages"), 2)
        self.assertEqual(st.get("unseen"), 2)
        self.assertEqual(st.get("uidnext"), r3.get("uid") + 1)
        self.assertEqual(st.get("uidvalidity"), r1.get("uidvalidity"))
        sel = self.store.request("mailbox_select", user=USER, mailbox="Dedup")
        self.assertEqual(sel.get("uid_set"), b"%d:%d" % (r1.get("uid"), r3.get("uid")))
        self.assertIn(b"\\Seen", sel.all("flag"))
        lst = self.store.request("mailbox_list", user=USER)
        self.assertIn(b"Dedup", lst.all("mailbox"))
        missing = self.store.request("mailbox_status", user=USER, mailbox="Nope")
        self.assertEqual(missing.status, NOT_FOUND)

    def test_fetch_and_body(self):
        r = self.append("Fetch", msgid=new_id())
        uid = r.get("uid")
        f = self.store.request("message_fetch", user=USER, mailbox="Fetch", uid_set=str(uid))
        self.assertEqual(f.status, OK)
        self.assertEqual(f.get("uid"), uid)
        self.assertIn(b"multipart test", f.get("envelope"))
        self.assertIn(b"\"mixed\"".upper(), f.get("bodystructure").upper())
        self.assertEqual(f.get("size"), len(MESSAGE))
        self.assertEqual(len(f.get("message_id")), 26)
        b = self.store.request("message_body", user=USER, mailbox="Fetch", uid=uid, section="2")
        self.assertEqual(b.status, OK)
        self.assertEqual(b.get("body"), b"<p>second</p>")
        part = self.store.request("message_body", user=USER, mailbox="Fetch", uid=uid,
                                  section="1", offset=2, length=3)
        self.assertEqual(part.get("body"), b"rst")
        whole = self.store.request("message_body", user=USER, mailbox="Fetch", uid=uid, section="")
        self.assertEqual(whole.get("body"), MESSAGE)
        none = self.store.request("message_body", user=USER, mailbox="Fetch", uid=uid, section="9")
        self.assertEqual((none.status, none.get("body")), (OK, b""))
        bad = self.store.request("message_body", user=USER, mailbox="Fetch", uid=uid, section="0")
        self.assertEqual(bad.status, PERMFAIL)
        gone = self.store.request("message_body", user=USER, mailbox="Fetch", uid=uid + 100)
        self.assertEqual(gone.status, NOT_FOUND)
        wrong_uv = self.store.request("message_fetch", user=USER, mailbox="Fetch",
                                      uidvalidity=r.get("uidvalidity") + 1, uid_set="1:*")
        self.assertEqual(wrong_uv.status, UIDVALIDITY)

    def test_flags_unchangedsince_expunge_changes(self):
        uids = [self.append("Flags").get("uid") for _ in range(3)]
        uv = self.store.request("mailbox_status", user=USER, mailbox="Flags").get("uidvalidity")
        r = self.store.request("flags_store", [("flag", "\\Seen"), ("flag", "$Work")],
                               user=USER, mailbox="Flags", uidvalidity=uv,
                               uid_set="%d" % uids[0], flag_mode=1)
        self.assertEqual(r.status, OK, r)
        self.assertIn(b"$Work", r.all("flag"))
        ms = r.get("modseq")
        r2 = self.store.request("flags_store", [("flag", "\\Deleted")], user=USER, mailbox="Flags",
                                uidvalidity=uv, uid_set="1:*", flag_mode=1,
                                unchangedsince=ms - 1)
        self.assertEqual(r2.status, OK)
        self.assertEqual(r2.get("modified_set"), b"%d" % uids[0])
        st = self.store.request("mailbox_status", user=USER, mailbox="Flags")
        self.assertEqual(st.get("unseen"), 2)
        ch = self.store.request("changes_since", user=USER, mailbox="Flags", modseq=ms)
        self.assertEqual(sorted(ch.all("uid")), uids[1:])
        ex = self.store.request("message_expunge", user=USER, mailbox="Flags", uidvalidity=uv)
        self.assertEqual(ex.status, OK)
        self.assertEqual(ex.get("uid_set"), b"%d:%d" % (uids[1], uids[2]))
        self.assertEqual(len(maildir_files(self.store, USER, ".Flags")), 1)
        ch2 = self.store.request("changes_since", user=USER, mailbox="Flags", modseq=ms)
        self.assertEqual(ch2.get("vanished_set"), b"%d:%d" % (uids[1], uids[2]))
        bad = self.store.request("flags_store", [("flag", "\\Recent")], user=USER, mailbox="Flags",
                                 uid_set="1", flag_mode=1)
        self.assertEqual(bad.status, PERMFAIL)

    def test_copy_move(self):
        uids = [self.append("CopySrc").get("uid") for _ in range(2)]
        self.append("CopyDst")
        r = self.store.request("message_copy", user=USER, mailbox="CopySrc", uid_set="1:*",
                               mailbox_new="CopyDst")
        self.assertEqual(r.status, OK, r)
        self.assertEqual(r.get("uid_set"), b"%d:%d" % (uids[0], uids[1]))
        self.assertEqual(r.get("uid_set_new"), b"2:3")
        r = self.store.request("message_copy", user=USER, mailbox="CopySrc", uid_set="1:*",
                               mailbox_new="CopyDst", move=1)
        self.assertEqual(r.status, OK, r)
        self.assertEqual(r.get("uid_set_new"), b"4:5")
        self.assertEqual(self.store.request("mailbox_status", user=USER,
                                            mailbox="CopySrc").get("messages"), 0)
        self.assertEqual(self.store.request("mailbox_status", user=USER,
                                            mailbox="CopyDst").get("messages"), 5)
        self.assertEqual(len(maildir_files(self.store, USER, ".CopySrc")), 0)
        self.assertEqual(len(maildir_files(self.store, USER, ".CopyDst")), 5)
        r = self.store.request("message_copy", user=USER, mailbox="CopyDst", uid_set="1",
                               mailbox_new="Missing")
        self.assertEqual(r.status, NOT_FOUND)

    def test_quota(self):
        user = "quota@example.test"
        r = self.store.request("append", user=user, mailbox="INBOX", create=1, body=MESSAGE,
                               quota_bytes=len(MESSAGE) + 10)
        self.assertEqual(r.status, OK)
        self.assertEqual((r.get("quota_used"), r.get("quota_bytes")),
                         (len(MESSAGE), len(MESSAGE) + 10))
        r = self.store.request("append", user=user, mailbox="INBOX", create=1, body=MESSAGE,
                               quota_bytes=len(MESSAGE) + 10)
        self.assertEqual(r.status, OVER_QUOTA)
        self.assertEqual(len(maildir_files(self.store, user)), 1)
        tmp = os.listdir(os.path.join(self.store.maildir(user), "tmp"))
        self.assertEqual(tmp, [])
        q = self.store.request("quota_get", user=user)
        self.assertEqual(q.get("quota_used"), len(MESSAGE))
        self.assertEqual(q.get("quota_bytes"), len(MESSAGE) + 10)

    def test_hostile_names(self):
        for name in ("..", "../../etc", "a/../../b", "/abs", ".hidden", "a\x01b", "a//b", "x\\y"):
            r = self.append(name)
            self.assertEqual(r.status, PERMFAIL, name)
            r = self.store.request("mailbox_create", user=USER, mailbox=name)
            self.assertEqual(r.status, PERMFAIL, name)
        for user in ("../x@example.test", "a@..", "a/b@example.test", "noat", ".x@example.test"):
            r = self.store.request("append", user=user, mailbox="INBOX", create=1, body=MESSAGE)
            self.assertEqual(r.status, PERMFAIL, user)
        self.assertEqual(sorted(os.listdir(self.store.root)), sorted(
            [d for d in os.listdir(self.store.root) if d in (".index", ".uidvalidity", "example.test")]))
        r = self.store.request("mailbox_create", user=USER, mailbox="日本語/下位")
        self.assertEqual(r.status, OK)
        self.assertTrue(os.path.isdir(os.path.join(self.store.maildir(USER), ".日本語.下位")))
        self.assertEqual(self.store.request("mailbox_create", user=USER, mailbox="日本語/下位").status,
                         EXISTS)
        self.assertEqual(self.store.request("mailbox_delete", user=USER, mailbox="INBOX").status,
                         PERMFAIL)
        r = self.store.request("mailbox_rename", user=USER, mailbox="日本語",
                               mailbox_new="../escape")
        self.assertEqual(r.status, PERMFAIL)
        self.assertEqual(self.store.request("mailbox_create", user=USER, mailbox="日本語").status, OK)
        r = self.store.request("mailbox_rename", user=USER, mailbox="日本語", mailbox_new="Renamed")
        self.assertEqual(r.status, OK, r)
        names = self.store.request("mailbox_list", user=USER).all("mailbox")
        self.assertIn("Renamed/下位".encode(), names)
        self.assertNotIn("日本語/下位".encode(), names)
        self.assertTrue(os.path.isdir(os.path.join(self.store.maildir(USER), ".Renamed.下位")))
        # the daemon refuses what it does not handle, and stays healthy
        self.assertEqual(self.store.request("message_search", user=USER, mailbox="INBOX").status,
                         PERMFAIL)
        self.assertEqual(self.store.request("ping").status, OK)


class StoreCrashTest(unittest.TestCase):
    def test_kill9_during_burst(self):
        store = Store()
        try:
            ids = [new_id() for _ in range(300)]
            procs = {}
            acked = {}
            it = iter(ids)
            killed = False
            pending = list(ids)
            while pending or procs:
                while pending and len(procs) < 24:
                    mid = pending.pop()
                    argv = store.cli_argv("append", [("user", USER), ("mailbox", "INBOX"),
                                                     ("create", 1), ("msgid", mid),
                                                     ("body", MESSAGE.replace(b"m1@", mid.encode() + b"@"))],
                                          timeout_ms=3000)
                    # each request needs its own body file
                    body_path = os.path.join(store.dir, "body-" + mid)
                    os.replace(argv[-1][6:], body_path)
                    argv[-1] = "body=@" + body_path
                    procs[mid] = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                                  stderr=subprocess.DEVNULL)
                for mid, p in list(procs.items()):
                    if p.poll() is None:
                        continue
                    out = p.stdout.read().decode()
                    p.stdout.close()
                    del procs[mid]
                    if p.returncode == 0 and "\nstatus=0\n" in "\n" + out:
                        acked[mid] = int(out.split("\nuid=")[1].split("\n")[0])
                if not killed and len(acked) >= 60:
                    store.kill()
                    killed = True
                    pending = []  # the in-flight ones will time out
                time.sleep(0.002)
            self.assertTrue(killed)
            store.start()
            # the senders retry everything: acked ones answer DUPLICATE with their UID
            for mid in ids:
                body = MESSAGE.replace(b"m1@", mid.encode() + b"@")
                r = store.request("append", user=USER, mailbox="INBOX", create=1, msgid=mid,
                                  body=body)
                self.assertIn(r.status, (OK, DUPLICATE), r)
                if mid in acked:
                    self.assertEqual(r.status, DUPLICATE)
                    self.assertEqual(r.get("uid"), acked[mid])
            sel = store.request("mailbox_select", user=USER, mailbox="INBOX")
            self.assertEqual(sel.get("messages"), len(ids))
            f = store.request("message_fetch", user=USER, mailbox="INBOX", uid_set="1:*")
            uids = f.all("uid")
            self.assertEqual(uids, sorted(set(uids)))  # strictly increasing
            got_ids = sorted(v.decode() for v in f.all("message_id"))
            self.assertEqual(got_ids, sorted(ids))  # each exactly once
            self.assertEqual(len(maildir_files(store, USER)), len(ids))  # index == Maildir
            # offline tools: the oplog is contiguous, a reindex finds nothing to fix
            store.stop()
            tool = os.path.join(os.environ["MX_BUILD_DIR"], "store", "mxctl-store")
            out = subprocess.run([tool, "-c", store.config_path, "oplog"], capture_output=True,
                                 text=True, check=True).stdout.split("\n")
            seqs = [int(line.split()[0]) for line in out if line]
            self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
            self.assertNotIn("INVALID", "\n".join(out))
            out = subprocess.run([tool, "-c", store.config_path, "reindex", USER],
                                 capture_output=True, text=True, check=True).stdout
            self.assertIn("indexed_files=0 expunged_missing=0", out)
        finally:
            store.close()


if __name__ == "__main__":
    try:
        unittest.main(verbosity=2)
    finally:
        stop_all()

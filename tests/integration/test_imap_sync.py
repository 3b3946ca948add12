"""test_imap_sync - a real sync client from Debian, mbsync (isync), against
mx-imapd: a few hundred messages delivered by SMTP are synced to a local
Maildir and back (Pull + Push), flag changes on both sides, a MOVE on the
server side and a message added locally travel the right way, a second
run transfers nothing, and the server's state matches the local one.

MX_IMAP_TARGET=dovecot runs the same steps against Dovecot.
"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

from imap_testlib import fetch_map, login, make_message, ok, start_target

MBSYNC = shutil.which("mbsync")
MESSAGES = 300


def maildir_messages(path):
    """maildir_messages - {Message-ID: set of Maildir flag letters} in PATH."""
    found = {}
    for sub in ("new", "cur"):
        d = os.path.join(path, sub)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            with open(os.path.join(d, name), "rb") as f:
                head = f.read(8192).split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
            m = re.search(rb"^Message-ID:\s*(\S+)", head, re.I | re.M)
            flags = name.split(":2,", 1)[1] if ":2," in name else ""
            found[m.group(1).decode() if m else name] = set(flags)
    return found


@unittest.skipIf(MBSYNC is None, "mbsync (isync) not installed")
class TestMbsync(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.target = start_target(dovecot_host="127.0.0.1")
        cls.user, cls.pw = cls.target.add_account()
        cls.msgids = ["<sync-%03d@remote.test>" % i for i in range(MESSAGES)]
        cls.target.deliver_many(cls.user, [
            make_message(subject="sync %03d" % i, msgid=mid,
                         body="message number %d\r\n" % i)
            for i, mid in enumerate(cls.msgids)])
        cls.dir = tempfile.mkdtemp(prefix="mxmbsync-")
        cls.local = os.path.join(cls.dir, "mail")
        os.makedirs(cls.local)
        cls.rc = os.path.join(cls.dir, "mbsyncrc")
        # isync 1.4 (Debian 12) spells it SSLType; 1.5 still accepts that
        with open(cls.rc, "w") as f:
            f.write("""IMAPAccount server
Host %(host)s
Port %(port)d
User %(user)s
Pass %(pw)s
SSLType IMAPS
CertificateFile %(cert)s
PipelineDepth 20

IMAPStore far
Account server

MaildirStore near
Path %(local)s/
Inbox %(local)s/INBOX
SubFolders Verbatim

Channel sync
Far :far:
Near :near:
Patterns *
Create Both
Remove None
Expunge Both
SyncState *
Sync All
""" % {"host": "localhost",  # the name the test certificate is issued for
       "port": cls.target.port("imaps"), "user": cls.user,
       "pw": cls.pw, "cert": cls.target.cert, "local": cls.local})

    @classmethod
    def tearDownClass(cls):
        cls.target.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def mbsync(self):
        out = subprocess.run([MBSYNC, "-V", "-c", self.rc, "-a"], capture_output=True,
                             text=True, timeout=300)
        text = out.stdout + out.stderr
        self.assertEqual(out.returncode, 0, text[-3000:])
        return text

    def server_state(self, mailbox):
        """server_state - {Message-ID: set of Maildir flag letters} over IMAP."""
        m = login(self.target, self.user, self.pw)
        try:
            ok(self, m.select('"%s"' % mailbox, readonly=True), "SELECT %s" % mailbox)
            typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            found = {}
            if typ != "OK" or data == [None]:
                return found
            letters = {b"\\Seen": "S", b"\\Flagged": "F", b"\\Answered": "R",
                       b"\\Draft": "D", b"\\Deleted": "T"}
            for raw in fetch_map(data).values():
                mid = re.search(rb"Message-ID:\s*(\S+)", raw, re.I)
                flags = re.search(rb"FLAGS \(([^)]*)\)", raw).group(1).split()
                found[mid.group(1).decode() if mid else raw[:40]] = {
                    letters[f] for f in flags if f in letters}
            return found
        finally:
            m.logout()

    def local_snapshot(self):
        """local_snapshot - every message file name of the local Maildirs."""
        names = set()
        for root, _, files in os.walk(self.local):
            if os.path.basename(root) in ("new", "cur"):
                names |= {os.path.join(root, f) for f in files}
        return names

    def server_status(self):
        """server_status - {mailbox: STATUS line} for every server mailbox."""
        m = login(self.target, self.user, self.pw)
        try:
            # (\\Attrs) "/" Name  or  (\\Attrs) "/" "Name" (no spaces here)
            boxes = [l.rsplit(b" ", 1)[1].strip(b'"').decode()
                     for l in ok(self, m.list('""', "*"), "LIST")]
            return {box: ok(self, m.status('"%s"' % box,
                                           "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"),
                            "STATUS %s" % box)[0] for box in boxes}
        finally:
            m.logout()

    def imap(self):
        m = login(self.target, self.user, self.pw)
        self.addCleanup(m.logout)
        return m

    def local_file(self, box, msgid):
        for sub in ("new", "cur"):
            d = os.path.join(self.local, box, sub)
            for name in os.listdir(d):
                with open(os.path.join(d, name), "rb") as f:
                    if msgid.encode() in f.read(8192):
                        return os.path.join(d, name)
        raise AssertionError("%s not in local %s" % (msgid, box))

    def test_sync_both_ways(self):
        # 1. first pull: everything arrives
        self.mbsync()
        self.assertEqual(set(maildir_messages(os.path.join(self.local, "INBOX"))),
                         set(self.msgids))
        # special-use folders of a new account are synced too
        for name in ("Drafts", "Sent", "Trash", "Junk"):
            self.assertTrue(os.path.isdir(os.path.join(self.local, name)), name)

        # 2. changes on both sides
        m = self.imap()
        ok(self, m.create("Archive"), "CREATE Archive")
        m.select("INBOX")
        ok(self, m.store("1:10", "+FLAGS", "(\\Flagged)"), "server flags")
        # a MOVE on the server: messages 21..30 to Archive
        ok(self, m._simple_command("MOVE", "21:30", "Archive"), "MOVE")
        moved = set(self.msgids[20:30])
        # locally: mark 11..15 seen and answered (Maildir flags in the name)
        for mid in self.msgids[10:15]:
            path = self.local_file("INBOX", mid)
            base = os.path.basename(path).split(":2,", 1)[0]
            os.rename(path, os.path.join(self.local, "INBOX", "cur", base + ":2,RS"))
        # locally: a new message written by the user's mail program
        new_mid = "<written-locally@example.test>"
        tmp = os.path.join(self.local, "INBOX", "tmp", "1700000000.local1.host")
        with open(tmp, "wb") as f:
            f.write(make_message(subject="written locally", msgid=new_mid))
        os.rename(tmp, os.path.join(self.local, "INBOX", "new", "1700000000.local1.host"))

        self.mbsync()

        server_inbox = self.server_state("INBOX")
        local_inbox = maildir_messages(os.path.join(self.local, "INBOX"))
        self.assertIn(new_mid, server_inbox)  # pushed
        self.assertFalse(moved & set(local_inbox), "moved messages still in local INBOX")
        self.assertEqual(set(maildir_messages(os.path.join(self.local, "Archive"))), moved)
        for mid in self.msgids[:10]:
            self.assertIn("F", local_inbox[mid], mid)  # pulled flag
        for mid in self.msgids[10:15]:
            self.assertEqual(server_inbox[mid] & {"S", "R"}, {"S", "R"}, mid)  # pushed flags
        self.assertEqual(len(server_inbox), MESSAGES - 10 + 1)

        # 3. a second run transfers nothing: no local file appears, goes or
        # is renamed (a flag change), and nothing changes on the server
        # (STATUS: same UIDNEXT, HIGHESTMODSEQ and counts in every box)
        local_before = self.local_snapshot()
        server_before = self.server_status()
        text = self.mbsync()
        self.assertEqual(self.local_snapshot(), local_before, text[-2000:])
        self.assertEqual(self.server_status(), server_before, text[-2000:])

        # 4. server state = local state, box by box
        for box in ("INBOX", "Archive"):
            server = self.server_state(box)
            local = maildir_messages(os.path.join(self.local, box))
            self.assertEqual(set(server), set(local), box)
            for mid, flags in server.items():
                self.assertEqual(flags - {"T"}, local[mid] - {"T"}, "%s %s" % (box, mid))


if __name__ == "__main__":
    unittest.main(verbosity=2)

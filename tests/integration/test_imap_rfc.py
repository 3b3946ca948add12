"""test_imap_rfc - RFC 3501 / RFC 9051 commands as Python's imaplib (and a
raw TLS client where imaplib hides the wire) sends them, against mx-imapd in
a full cluster: mail arrives by SMTP through mx-inbound -> mx-delivery ->
mx-store, accounts and passwords come from LDAP.

MX_IMAP_TARGET=dovecot runs the same file against Debian's Dovecot, to
check that the tests ask what the RFCs say.

Extensions (IDLE, CONDSTORE/QRESYNC, QUOTA, SORT/THREAD, ESEARCH, ...) are
in test_imap_extensions.py.
"""

import base64
import imaplib
import re
import ssl
import time
import unittest

from imap_testlib import (RawImap, fetch_map, forwarded_message, imap_plain, imaps, is_mx,
                          japanese_iso2022, japanese_utf8_base64, login, make_message,
                          multipart_message, ok, quote, refused, start_target, tls_context,
                          untagged)


class ImapCase(unittest.TestCase):
    target = None

    @classmethod
    def setUpClass(cls):
        cls.target = start_target()

    @classmethod
    def tearDownClass(cls):
        if cls.target:
            cls.target.close()

    def new_user(self, **kw):
        return self.target.add_account(**kw)

    def login(self, user, password):
        m = login(self.target, user, password)
        self.addCleanup(_logout, m)
        return m

    def raw(self, user=None, password=None, tls=True):
        r = RawImap(self.target, tls=tls)
        self.addCleanup(r.close)
        if user:
            r.login(user, password)
        return r

    def user_with_mail(self, n=3, subject="msg"):
        user, pw = self.new_user()
        self.target.deliver_many(user, [make_message(subject="%s %d" % (subject, i),
                                                     body="body of %s %d\r\n" % (subject, i))
                                        for i in range(1, n + 1)])
        return user, pw


def _logout(m):
    try:
        m.logout()
    except Exception:
        pass


def _no_recent(data):
    """_no_recent - FETCH data without \\Recent (session-dependent, RFC 3501)."""
    out = []
    for d in data:
        d = re.sub(rb" +", b" ", d.replace(b"\\Recent", b""))
        out.append(d.replace(b"( ", b"(").replace(b" )", b")"))
    return out


def fetch_lines(lines):
    """fetch_lines - the untagged FETCH responses among LINES, joined."""
    return b" ".join(l for l in lines if re.match(rb"\* \d+ FETCH", l))


def caps_of(lines_or_line):
    text = b" ".join(lines_or_line) if isinstance(lines_or_line, list) else lines_or_line
    m = re.search(rb"CAPABILITY ([^\]\r\n]*)", text)
    return set(m.group(1).upper().split()) if m else set()


class TestConnectionState(ImapCase):
    """RFC 3501 6.1 (any state), 6.2 (not authenticated), 11.1 (STARTTLS)."""

    def test_greeting_and_capability(self):
        r = self.raw()
        self.assertTrue(r.greeting.startswith(b"* OK"), r.greeting)
        status, lines, _ = r.command(b"CAPABILITY")
        self.assertEqual(status, b"OK")
        caps = caps_of([l for l in lines if l.startswith(b"* CAPABILITY")])
        self.assertIn(b"IMAP4REV1", caps)
        self.assertIn(b"AUTH=PLAIN", caps)
        # implicit TLS: logins are allowed, STARTTLS makes no sense
        self.assertNotIn(b"LOGINDISABLED", caps)
        self.assertNotIn(b"STARTTLS", caps)

    def test_plain_port_offers_starttls_and_disables_login(self):
        m = imap_plain(self.target)
        self.addCleanup(_logout, m)
        self.assertIn("STARTTLS", m.capabilities)
        self.assertIn("LOGINDISABLED", m.capabilities)
        user, pw = self.new_user()
        with self.assertRaises(imaplib.IMAP4.error):
            m.login(user, pw)

    def test_starttls_then_login(self):
        user, pw = self.new_user()
        m = imap_plain(self.target)
        self.addCleanup(_logout, m)
        ok(self, m.starttls(ssl_context=tls_context(self.target)), "STARTTLS")
        # imaplib asks CAPABILITY again after STARTTLS (RFC 3501 6.2.1)
        self.assertNotIn("LOGINDISABLED", m.capabilities)
        self.assertNotIn("STARTTLS", m.capabilities)
        ok(self, m.login(user, pw), "LOGIN after STARTTLS")
        self.assertEqual(m.state, "AUTH")

    def test_starttls_response_injection_ignored(self):
        # Bytes pipelined after STARTTLS must not be executed (the "STARTTLS
        # command injection" class of bugs, RFC 3207 / RFC 2595 4).
        r = self.raw(tls=False)
        tag = r.next_tag()
        r.send(tag + b" STARTTLS\r\nX1 CAPABILITY\r\n")
        status, lines, _ = r.read_until_tagged(tag)
        self.assertEqual(status, b"OK")
        try:
            r.sock = tls_context(self.target).wrap_socket(r.sock)
        except (ssl.SSLError, OSError):
            return  # the server dropped a client that pipelined: also safe
        r.buf = b""
        status, lines, _ = r.command(b"NOOP")
        self.assertEqual(status, b"OK")
        self.assertFalse(any(l.startswith(b"X1 ") for l in lines), lines)

    def test_noop_and_logout(self):
        r = self.raw()
        self.assertEqual(r.command(b"NOOP")[0], b"OK")
        status, lines, _ = r.command(b"LOGOUT")
        self.assertEqual(status, b"OK")
        self.assertTrue(any(l.startswith(b"* BYE") for l in lines), lines)
        with self.assertRaises((EOFError, OSError)):
            r.read_line()

    def test_login_wrong_password(self):
        user, _ = self.new_user()
        r = self.raw()
        status, _, line = r.command(b"LOGIN %s %s" % (quote(user), quote("wrong")))
        self.assertEqual(status, b"NO", line)
        # RFC 5530 response code for a failed authentication
        self.assertIn(b"[AUTHENTICATIONFAILED]", line)
        # still not authenticated: SELECT is a state error
        self.assertIn(r.command(b"SELECT INBOX")[0], (b"BAD", b"NO"))

    def test_login_unknown_user(self):
        r = self.raw()
        status, _, line = r.command(b'LOGIN "nobody-here@example.test" "x-secret"')
        self.assertEqual(status, b"NO", line)

    def test_disabled_account_clear_message(self):
        user, pw = self.target.disabled_account()
        r = self.raw()
        status, _, line = r.command(b"LOGIN %s %s" % (quote(user), quote(pw)))
        self.assertEqual(status, b"NO", line)
        self.assertRegex(line.lower(), rb"disabled")

    def test_login_literal_password(self):
        # passwords with specials must work as literals (RFC 3501 4.3)
        user, pw = self.new_user()
        r = self.raw()
        tag = r.next_tag()
        r.send(b"%s LOGIN %s {%d}\r\n" % (tag, quote(user), len(pw)))
        self.assertTrue(r.read_line().startswith(b"+"))
        r.send(pw.encode() + b"\r\n")
        status, _, line = r.read_until_tagged(tag)
        self.assertEqual(status, b"OK", line)

    def test_capability_after_login_in_ok_code(self):
        user, pw = self.new_user()
        r = self.raw()
        status, lines, line = r.command(b"LOGIN %s %s" % (quote(user), quote(pw)))
        self.assertEqual(status, b"OK")
        # either a [CAPABILITY ...] code on OK or an untagged CAPABILITY is
        # allowed; if given it must list IMAP4rev1
        caps = caps_of(lines + [line])
        if caps:
            self.assertIn(b"IMAP4REV1", caps)


class TestAuthenticatePlain(ImapCase):
    """RFC 3501 6.2.2, RFC 4616 PLAIN, RFC 4959 SASL-IR."""

    def plain(self, user, pw, authzid=""):
        return base64.b64encode(("%s\0%s\0%s" % (authzid, user, pw)).encode())

    def test_sasl_ir(self):
        user, pw = self.new_user()
        r = self.raw()
        status, lines, _ = r.command(b"CAPABILITY")
        self.assertIn(b"SASL-IR", caps_of(lines))
        status, _, line = r.command(b"AUTHENTICATE PLAIN " + self.plain(user, pw))
        self.assertEqual(status, b"OK", line)
        self.assertEqual(r.command(b"SELECT INBOX")[0], b"OK")

    def test_without_initial_response(self):
        user, pw = self.new_user()
        r = self.raw()
        tag = r.next_tag()
        r.send(tag + b" AUTHENTICATE PLAIN\r\n")
        cont = r.read_line()
        self.assertTrue(cont.startswith(b"+"), cont)
        r.send(self.plain(user, pw) + b"\r\n")
        status, _, line = r.read_until_tagged(tag)
        self.assertEqual(status, b"OK", line)

    def test_imaplib_authenticate(self):
        user, pw = self.new_user()
        m = imaps(self.target)
        self.addCleanup(_logout, m)
        ok(self, m.authenticate("PLAIN", lambda _: ("\0%s\0%s" % (user, pw)).encode()))

    def test_wrong_password(self):
        user, _ = self.new_user()
        r = self.raw()
        status, _, line = r.command(b"AUTHENTICATE PLAIN " + self.plain(user, "bad"))
        self.assertEqual(status, b"NO", line)

    def test_cancel(self):
        r = self.raw()
        tag = r.next_tag()
        r.send(tag + b" AUTHENTICATE PLAIN\r\n")
        self.assertTrue(r.read_line().startswith(b"+"))
        r.send(b"*\r\n")
        status, _, line = r.read_until_tagged(tag)
        self.assertEqual(status, b"BAD", line)

    def test_other_authzid_refused(self):
        user, pw = self.new_user()
        other, _ = self.new_user()
        r = self.raw()
        status, _, line = r.command(b"AUTHENTICATE PLAIN " + self.plain(user, pw, authzid=other))
        self.assertEqual(status, b"NO", line)

    def test_unknown_mechanism(self):
        r = self.raw()
        status, _, line = r.command(b"AUTHENTICATE X-UNKNOWN-MECH")
        self.assertIn(status, (b"NO", b"BAD"), line)


class TestMailboxes(ImapCase):
    """RFC 3501 6.3: SELECT EXAMINE CREATE DELETE RENAME SUBSCRIBE
    UNSUBSCRIBE LIST LSUB STATUS APPEND; RFC 2342 NAMESPACE."""

    def list_names(self, m, pattern="*", ref='""'):
        data = ok(self, m.list(ref, pattern), "LIST")
        names = {}
        for item in data:
            if item is None:
                continue
            mm = re.match(rb'\(([^)]*)\) (NIL|"[^"]*") (.*)$', item)
            self.assertIsNotNone(mm, item)
            name = mm.group(3)
            if name.startswith(b'"'):
                name = name[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
            names[name.decode()] = set(mm.group(1).decode().lower().split())
        return names

    def sep(self, m):
        data = ok(self, m.list('""', '""'), "LIST separator")
        mm = re.match(rb'\([^)]*\) "(.)"', data[0])
        return mm.group(1).decode() if mm else "/"

    def test_select_untagged_responses(self):
        user, pw = self.user_with_mail(2)
        m = self.login(user, pw)
        data = ok(self, m.select("INBOX"), "SELECT")
        self.assertEqual(data, [b"2"])
        flags = untagged(m, "FLAGS")
        self.assertTrue(flags and b"\\Seen" in flags[0] and b"\\Deleted" in flags[0], flags)
        self.assertTrue(untagged(m, "PERMANENTFLAGS"))
        uidvalidity = untagged(m, "UIDVALIDITY")
        self.assertTrue(uidvalidity and int(uidvalidity[0]) > 0, uidvalidity)
        uidnext = untagged(m, "UIDNEXT")
        self.assertTrue(uidnext and int(uidnext[0]) >= 3, uidnext)

    def test_select_read_write_and_examine_read_only(self):
        user, pw = self.user_with_mail(1)
        r = self.raw(user, pw)
        status, lines, line = r.command(b"SELECT INBOX")
        self.assertEqual(status, b"OK")
        self.assertIn(b"[READ-WRITE]", line)
        status, lines, line = r.command(b"EXAMINE INBOX")
        self.assertEqual(status, b"OK")
        self.assertIn(b"[READ-ONLY]", line)
        self.assertTrue(any(re.match(rb"\* 1 EXISTS", l) for l in lines), lines)
        # a read-only mailbox's flags cannot change: NO (RFC 3501 6.4.6),
        # or OK with nothing stored
        r.command(b"STORE 1 +FLAGS (\\Seen)")
        # EXAMINE must not set \Seen through FETCH BODY[] either
        r.command(b"FETCH 1 BODY[]", check=True)
        status, lines, _ = r.command(b"FETCH 1 FLAGS")
        self.assertFalse(any(b"\\Seen" in l for l in lines), lines)

    def test_select_missing_mailbox(self):
        user, pw = self.new_user()
        r = self.raw(user, pw)
        status, _, line = r.command(b"SELECT no-such-box")
        self.assertEqual(status, b"NO", line)
        # a failed SELECT leaves the authenticated state (RFC 3501 6.3.1)
        self.assertIn(r.command(b"FETCH 1 FLAGS")[0], (b"BAD", b"NO"))

    def test_inbox_is_case_insensitive(self):
        user, pw = self.user_with_mail(1)
        m = self.login(user, pw)
        self.assertEqual(ok(self, m.select("inbox"), "SELECT inbox"), [b"1"])
        self.assertEqual(ok(self, m.select("InBoX"), "SELECT InBoX"), [b"1"])

    def test_create_list_delete_hierarchy(self):
        user, pw = self.new_user()
        m = self.login(user, pw)
        sep = self.sep(m)
        ok(self, m.create("Projects"), "CREATE")
        ok(self, m.create("Projects%s2026" % sep), "CREATE child")
        # creating with a trailing separator is allowed (RFC 3501 6.3.3)
        ok(self, m.create("Archive%s" % sep), "CREATE with trailing separator")
        names = self.list_names(m)
        self.assertIn("Projects", names)
        self.assertIn("Projects%s2026" % sep, names)
        self.assertIn("Archive", names)
        self.assertEqual(m.create("Projects")[0], "NO")  # exists
        self.assertEqual(m.create("INBOX")[0], "NO")
        ok(self, m.delete("Projects%s2026" % sep), "DELETE child")
        ok(self, m.delete("Projects"), "DELETE")
        self.assertNotIn("Projects", self.list_names(m))
        self.assertEqual(m.delete("INBOX")[0], "NO")
        self.assertEqual(m.delete("never-existed")[0], "NO")

    def test_list_percent_and_star(self):
        user, pw = self.new_user()
        m = self.login(user, pw)
        sep = self.sep(m)
        for name in ("top", "top%smid" % sep, "top%smid%sleaf" % (sep, sep)):
            ok(self, m.create(name), "CREATE %s" % name)
        star = self.list_names(m, "top*")
        self.assertEqual({n for n in star if n.startswith("top")},
                         {"top", "top%smid" % sep, "top%smid%sleaf" % (sep, sep)})
        pct = self.list_names(m, "top%s%%" % sep)
        self.assertEqual(set(pct), {"top%smid" % sep})
        self.assertIn("\\haschildren", pct["top%smid" % sep])
        top = self.list_names(m, "%")
        self.assertIn("INBOX", top)
        self.assertIn("top", top)
        self.assertNotIn("top%smid" % sep, top)
        # reference + pattern
        self.assertEqual(set(self.list_names(m, "%", ref='"top%s"' % sep)), {"top%smid" % sep})

    def test_list_empty_pattern_gives_separator(self):
        user, pw = self.new_user()
        m = self.login(user, pw)
        data = ok(self, m.list('""', '""'), "LIST \"\" \"\"")
        self.assertEqual(len(data), 1)
        self.assertRegex(data[0], rb'^\(\\Noselect[^)]*\) ("."|NIL) ""$')

    def test_special_use_mailboxes_exist_for_new_account(self):
        user, pw = self.new_user()
        m = self.login(user, pw)
        names = self.list_names(m)
        by_use = {}
        for name, attrs in names.items():
            for use in ("\\drafts", "\\sent", "\\trash", "\\junk"):
                if use in attrs:
                    by_use[use] = name
        self.assertEqual(set(by_use), {"\\drafts", "\\sent", "\\trash", "\\junk"}, names)
        for name in by_use.values():
            ok(self, m.select(quote(name).decode()), "SELECT %s" % name)

    def test_modified_utf7_names(self):
        # without UTF8=ACCEPT mailbox names travel in modified UTF-7 (RFC 3501 5.1.3)
        user, pw = self.new_user()
        m = self.login(user, pw)
        ok(self, m.create("Entw&APw-rfe"), "CREATE mUTF-7")          # Entwürfe
        ok(self, m.create('"&ZeVnLIqe-"'), "CREATE mUTF-7 CJK")       # 日本語
        names = self.list_names(m)
        self.assertIn("Entw&APw-rfe", names)
        self.assertIn("&ZeVnLIqe-", names)
        ok(self, m.select("Entw&APw-rfe"), "SELECT mUTF-7")
        # a name that is not valid modified UTF-7 is refused
        self.assertIn(refused(lambda: m.create("bad&-name&AB")), ("NO", "BAD"))

    def test_rename(self):
        user, pw = self.new_user()
        m = self.login(user, pw)
        sep = self.sep(m)
        ok(self, m.create("old"), "CREATE")
        ok(self, m.create("old%skid" % sep), "CREATE kid")
        msg = make_message(subject="in old")
        ok(self, m.append("old", None, None, msg), "APPEND")
        ok(self, m.rename("old", "new"), "RENAME")
        names = self.list_names(m)
        self.assertIn("new", names)
        self.assertIn("new%skid" % sep, names)  # inferiors move too
        self.assertNotIn("old", names)
        self.assertEqual(ok(self, m.select("new"), "SELECT new"), [b"1"])
        m.close()
        self.assertEqual(m.rename("nope", "nope2")[0], "NO")
        ok(self, m.create("taken"), "CREATE")
        self.assertEqual(m.rename("new", "taken")[0], "NO")

    @unittest.skipUnless(is_mx(), "Dovecot's Maildir refuses RENAME INBOX ([CANNOT])")
    def test_rename_inbox_moves_messages(self):
        # RFC 3501 6.3.5 / RFC 9051 6.3.6: renaming INBOX moves its messages
        user, pw = self.user_with_mail(2)
        m = self.login(user, pw)
        ok(self, m.rename("INBOX", "old-inbox"), "RENAME INBOX")
        self.assertEqual(ok(self, m.select("old-inbox"), "SELECT"), [b"2"])
        self.assertEqual(ok(self, m.select("INBOX"), "SELECT INBOX"), [b"0"])

    def test_subscribe_unsubscribe_lsub(self):
        user, pw = self.new_user()
        m = self.login(user, pw)
        ok(self, m.create("news"), "CREATE")
        ok(self, m.subscribe("news"), "SUBSCRIBE")
        data = ok(self, m.lsub('""', "*"), "LSUB")
        self.assertTrue(any(d and d.rstrip(b'"').endswith(b" news") or
                            d.endswith(b'"news"') for d in data), data)
        ok(self, m.unsubscribe("news"), "UNSUBSCRIBE")
        data = ok(self, m.lsub('""', "*"), "LSUB")
        self.assertFalse(any(d and (d.endswith(b" news") or d.endswith(b'"news"'))
                             for d in data), data)

    def test_namespace(self):
        user, pw = self.new_user()
        m = self.login(user, pw)
        data = ok(self, m.namespace(), "NAMESPACE")
        # personal namespace present: (("" "/")) or (("INBOX." ".")) etc.
        self.assertRegex(data[0], rb'^\(\("[^"]*" ("."|NIL)\)\) ')

    def test_status(self):
        user, pw = self.user_with_mail(3)
        m = self.login(user, pw)
        data = ok(self, m.status("INBOX", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)"),
                  "STATUS")
        text = data[0]
        self.assertRegex(text, rb"MESSAGES 3\b")
        self.assertRegex(text, rb"UNSEEN 3\b")
        self.assertRegex(text, rb"UIDNEXT \d+")
        self.assertRegex(text, rb"UIDVALIDITY \d+")
        self.assertEqual(m.status("nope", "(MESSAGES)")[0], "NO")

    def test_status_size_imap4rev2(self):
        user, pw = self.user_with_mail(2)
        r = self.raw(user, pw)
        status, lines, _ = r.command(b"CAPABILITY")
        caps = caps_of(lines)
        if b"IMAP4REV2" not in caps and b"STATUS=SIZE" not in caps:
            self.skipTest("neither IMAP4rev2 nor STATUS=SIZE advertised")
        status, lines, line = r.command(b"STATUS INBOX (SIZE MESSAGES)")
        self.assertEqual(status, b"OK", line)
        self.assertTrue(any(re.search(rb"SIZE \d+", l) for l in lines), lines)

    def test_append_flags_and_date(self):
        user, pw = self.new_user()
        m = self.login(user, pw)
        msg = make_message(subject="appended")
        date = '"17-Jul-1996 02:44:25 -0700"'
        data = ok(self, m.append("INBOX", "(\\Seen \\Flagged $Label1)", date, msg), "APPEND")
        m.select("INBOX")
        got = fetch_map(ok(self, m.fetch("1", "(FLAGS INTERNALDATE RFC822.SIZE)"), "FETCH"))[1]
        self.assertIn(b"\\Seen", got)
        self.assertIn(b"\\Flagged", got)
        self.assertIn(b"$Label1", got)
        # the same instant; the server may give it in another zone
        self.assertEqual(time.mktime(imaplib.Internaldate2tuple(got)),
                         time.mktime(imaplib.Internaldate2tuple(
                             b'INTERNALDATE "17-Jul-1996 02:44:25 -0700"')))
        self.assertIn(b"RFC822.SIZE %d" % len(msg), got)
        self.assertTrue(data)

    def test_append_appenduid(self):
        user, pw = self.new_user()
        r = self.raw(user, pw)
        msg = make_message(subject="uidplus")
        tag = r.next_tag()
        r.send(b"%s APPEND INBOX {%d}\r\n" % (tag, len(msg)))
        self.assertTrue(r.read_line().startswith(b"+"))
        r.send(msg + b"\r\n")
        status, _, line = r.read_until_tagged(tag)
        self.assertEqual(status, b"OK", line)
        mm = re.search(rb"\[APPENDUID (\d+) (\d+)\]", line)
        self.assertIsNotNone(mm, line)
        status, lines, line = r.command(b"SELECT INBOX")
        uidvalidity = re.search(rb"UIDVALIDITY (\d+)", b" ".join(lines)).group(1)
        self.assertEqual(mm.group(1), uidvalidity)
        status, lines, _ = r.command(b"UID FETCH %s (RFC822.SIZE)" % mm.group(2))
        self.assertTrue(any(b"RFC822.SIZE %d" % len(msg) in l for l in lines), lines)

    def test_append_literal_plus(self):
        user, pw = self.new_user()
        r = self.raw(user, pw)
        status, lines, _ = r.command(b"CAPABILITY")
        caps = caps_of(lines)
        self.assertTrue(b"LITERAL+" in caps or b"LITERAL-" in caps, caps)
        msg = make_message(subject="literal plus")
        status, _, line = r.command(b"APPEND INBOX (\\Draft) {%d+}\r\n%s" % (len(msg), msg))
        self.assertEqual(status, b"OK", line)

    def test_append_missing_mailbox_trycreate(self):
        user, pw = self.new_user()
        r = self.raw(user, pw)
        msg = make_message()
        status, _, line = r.command(b"APPEND nowhere {%d+}\r\n%s" % (len(msg), msg))
        self.assertEqual(status, b"NO")
        self.assertIn(b"[TRYCREATE]", line)

    def test_append_visible_to_selected_session(self):
        user, pw = self.new_user()
        r = self.raw(user, pw)
        r.command(b"SELECT INBOX", check=True)
        m = self.login(user, pw)
        ok(self, m.append("INBOX", None, None, make_message()), "APPEND")
        status, lines, _ = r.command(b"NOOP")
        self.assertTrue(any(re.match(rb"\* 1 EXISTS", l) for l in lines), lines)


class TestSelectedState(ImapCase):
    """RFC 3501 6.4: CHECK CLOSE EXPUNGE SEARCH FETCH STORE COPY UID;
    RFC 3691 UNSELECT; RFC 4315 UID EXPUNGE, COPYUID; RFC 6851 MOVE."""

    def test_check(self):
        user, pw = self.user_with_mail(1)
        m = self.login(user, pw)
        m.select("INBOX")
        ok(self, m.check(), "CHECK")

    def test_close_expunges_deleted_silently(self):
        user, pw = self.user_with_mail(3)
        r = self.raw(user, pw)
        r.command(b"SELECT INBOX", check=True)
        r.command(b"STORE 2 +FLAGS.SILENT (\\Deleted)", check=True)
        status, lines, _ = r.command(b"CLOSE")
        self.assertEqual(status, b"OK")
        self.assertFalse(any(b"EXPUNGE" in l for l in lines), lines)
        status, lines, _ = r.command(b"SELECT INBOX")
        self.assertTrue(any(re.match(rb"\* 2 EXISTS", l) for l in lines), lines)

    def test_unselect_keeps_deleted(self):
        user, pw = self.user_with_mail(2)
        m = self.login(user, pw)
        m.select("INBOX")
        ok(self, m.store("1", "+FLAGS", "(\\Deleted)"), "STORE")
        ok(self, m.unselect(), "UNSELECT")
        self.assertEqual(ok(self, m.select("INBOX"), "SELECT"), [b"2"])

    def test_close_on_examine_expunges_nothing(self):
        user, pw = self.user_with_mail(2)
        m = self.login(user, pw)
        m.select("INBOX")
        m.store("1", "+FLAGS", "(\\Deleted)")
        # SELECT/EXAMINE of another mailbox closes without expunging
        m.select("INBOX", readonly=True)
        ok(self, m.close(), "CLOSE after EXAMINE")
        self.assertEqual(ok(self, m.select("INBOX"), "SELECT"), [b"2"])

    def test_expunge_responses_in_order(self):
        user, pw = self.user_with_mail(5)
        m = self.login(user, pw)
        m.select("INBOX")
        ok(self, m.store("2,4", "+FLAGS", "(\\Deleted)"), "STORE")
        data = ok(self, m.expunge(), "EXPUNGE")
        # each EXPUNGE response renumbers the ones after it (RFC 3501 7.4.1);
        # any order that removes exactly 2 and 4 is right
        left = [1, 2, 3, 4, 5]
        for seq in data:
            del left[int(seq) - 1]
        self.assertEqual(left, [1, 3, 5])
        self.assertEqual(ok(self, m.select("INBOX"), "SELECT"), [b"3"])

    def test_uid_expunge(self):
        user, pw = self.user_with_mail(3)
        m = self.login(user, pw)
        m.select("INBOX")
        uids = ok(self, m.uid("SEARCH", "ALL"), "UID SEARCH")[0].split()
        ok(self, m.store("1:3", "+FLAGS", "(\\Deleted)"), "STORE")
        ok(self, m.uid("EXPUNGE", uids[1].decode()), "UID EXPUNGE")
        left = ok(self, m.uid("SEARCH", "ALL"), "UID SEARCH")[0].split()
        self.assertEqual(left, [uids[0], uids[2]])

    def test_copy_with_copyuid(self):
        user, pw = self.user_with_mail(3)
        r = self.raw(user, pw)
        r.command(b"CREATE dest", check=True)
        r.command(b"SELECT INBOX", check=True)
        r.command(b"STORE 1 +FLAGS (\\Flagged)", check=True)
        status, _, line = r.command(b"COPY 1:2 dest")
        self.assertEqual(status, b"OK", line)
        mm = re.search(rb"\[COPYUID (\d+) (\S+) (\S+)\]", line)
        self.assertIsNotNone(mm, line)
        status, lines, _ = r.command(b"SELECT dest")
        self.assertTrue(any(re.search(rb"UIDVALIDITY %s\b" % mm.group(1), l) for l in lines))
        status, lines, _ = r.command(b"FETCH 1:* (UID FLAGS)")
        self.assertEqual(len([l for l in lines if b"FETCH" in l]), 2)
        self.assertIn(b"\\Flagged", lines[0])  # flags are copied
        status, _, line = r.command(b"COPY 1 nowhere")
        self.assertEqual(status, b"NO")
        self.assertIn(b"[TRYCREATE]", line)

    def test_move(self):
        user, pw = self.user_with_mail(3)
        r = self.raw(user, pw)
        status, lines, _ = r.command(b"CAPABILITY")
        self.assertIn(b"MOVE", caps_of(lines))
        r.command(b"CREATE moved", check=True)
        r.command(b"SELECT INBOX", check=True)
        status, lines, line = r.command(b"MOVE 2 moved")
        self.assertEqual(status, b"OK", line)
        # COPYUID comes as an untagged OK before the EXPUNGE (RFC 6851 4.3)
        self.assertTrue(any(b"[COPYUID" in l for l in lines + [line]), lines)
        self.assertTrue(any(re.match(rb"\* 2 EXPUNGE", l) for l in lines), lines)
        status, lines, _ = r.command(b"STATUS moved (MESSAGES)")
        self.assertTrue(any(b"MESSAGES 1" in l for l in lines), lines)
        status, lines, _ = r.command(b"UID MOVE 1:* moved")
        self.assertEqual(status, b"OK")
        status, lines, _ = r.command(b"NOOP")
        status, lines, _ = r.command(b"STATUS moved (MESSAGES)")
        self.assertTrue(any(b"MESSAGES 3" in l for l in lines), lines)

    def test_store_variants(self):
        user, pw = self.user_with_mail(2)
        r = self.raw(user, pw)
        r.command(b"SELECT INBOX", check=True)
        status, lines, _ = r.command(b"STORE 1 +FLAGS (\\Seen \\Flagged)")
        self.assertEqual(status, b"OK")
        self.assertTrue(any(re.match(rb"\* 1 FETCH \(.*FLAGS \(", l) for l in lines), lines)
        self.assertIn(b"\\Flagged", b" ".join(lines))
        status, lines, _ = r.command(b"STORE 1 -FLAGS (\\Flagged)")
        self.assertNotIn(b"\\Flagged", fetch_lines(lines))
        self.assertIn(b"\\Seen", fetch_lines(lines))
        status, lines, _ = r.command(b"STORE 1 FLAGS (\\Answered $Custom)")
        # (a new keyword may come with untagged FLAGS / PERMANENTFLAGS first)
        flags = fetch_lines(lines)
        self.assertIn(b"\\Answered", flags)
        self.assertIn(b"$Custom", flags)
        self.assertNotIn(b"\\Seen", flags)
        status, lines, _ = r.command(b"STORE 1:2 +FLAGS.SILENT (\\Draft)")
        self.assertEqual(status, b"OK")
        self.assertFalse(any(b"FETCH" in l for l in lines), lines)
        status, lines, _ = r.command(b"FETCH 1:2 FLAGS")
        self.assertTrue(all(b"\\Draft" in l for l in lines if b"FETCH" in l), lines)
        status, lines, _ = r.command(b"UID STORE 1:* -FLAGS.SILENT (\\Draft)")
        self.assertEqual(status, b"OK")
        status, _, line = r.command(b"STORE 1 +FLAGS (\\Recent)")
        self.assertIn(status, (b"NO", b"BAD"), line)  # \Recent cannot be stored

    def test_fetch_body_sets_seen_peek_does_not(self):
        user, pw = self.user_with_mail(2)
        m = self.login(user, pw)
        m.select("INBOX")
        m.fetch("1", "(BODY.PEEK[])")
        self.assertNotIn(b"\\Seen", fetch_map(m.fetch("1", "(FLAGS)")[1])[1])
        got = fetch_map(m.fetch("2", "(BODY[])")[1])[2]
        # the \Seen change is reported in the same or a later response
        flags = fetch_map(m.fetch("2", "(FLAGS)")[1])[2]
        self.assertIn(b"\\Seen", got + flags)

    def test_sequence_sets(self):
        user, pw = self.user_with_mail(5)
        m = self.login(user, pw)
        m.select("INBOX")
        self.assertEqual(sorted(fetch_map(m.fetch("1,3:4", "(UID)")[1])), [1, 3, 4])
        self.assertEqual(sorted(fetch_map(m.fetch("4:2", "(UID)")[1])), [2, 3, 4])
        self.assertEqual(sorted(fetch_map(m.fetch("*", "(UID)")[1])), [5])
        self.assertEqual(sorted(fetch_map(m.fetch("3:*", "(UID)")[1])), [3, 4, 5])
        uids = m.uid("SEARCH", "ALL")[1][0].split()
        # UID range beyond the last UID still matches the last message
        data = ok(self, m.uid("FETCH", "%d:*" % (int(uids[-1]) + 100), "(UID)"), "UID FETCH")
        self.assertEqual(len([d for d in data if d]), 1)
        # a message sequence number beyond EXISTS is an error
        self.assertIn(refused(lambda: m.fetch("9", "(UID)")), ("NO", "BAD"))


class TestFetch(ImapCase):
    """RFC 3501 6.4.5 / RFC 9051 6.4.5 and RFC 3516 BINARY."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.user, cls.pw = cls.target.add_account()
        cls.plain = make_message(subject="Plain one", body="line one\r\nline two\r\n",
                                 sender='"Ann Example" <ann@remote.test>',
                                 to="Bob <bob@example.test>, carol@example.test",
                                 date="Mon, 7 Feb 1994 21:52:25 -0800",
                                 msgid="<fetch-1@remote.test>",
                                 headers=("Cc: cc@remote.test", "X-Extra: extra value"))
        cls.multi = multipart_message("Multi two")
        cls.target.deliver(cls.user, cls.plain)
        cls.target.deliver(cls.user, cls.multi)
        cls.target.deliver(cls.user, forwarded_message("Forward three"))

    def setUp(self):
        self.m = self.login(self.user, self.pw)
        self.m.select("INBOX", readonly=True)

    def fetch1(self, seq, items):
        return fetch_map(ok(self, self.m.fetch(str(seq), items), "FETCH %s" % items))[seq]

    def message_of(self, seq):
        return self.fetch1(seq, "(BODY.PEEK[])")

    def test_flags_internaldate_size_uid(self):
        got = self.fetch1(1, "(FLAGS INTERNALDATE RFC822.SIZE UID)")
        self.assertRegex(got, rb"FLAGS \([^)]*\)")
        self.assertRegex(got, rb'INTERNALDATE "\d{2}-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}"')
        size = int(re.search(rb"RFC822.SIZE (\d+)", got).group(1))
        self.assertEqual(size, len(self.message_of(1).split(b"}\r\n", 1)[1]))
        self.assertRegex(got, rb"UID \d+")

    def test_macros(self):
        for macro, items in (("ALL", (b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE")),
                             ("FAST", (b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE")),
                             ("FULL", (b"FLAGS", b"ENVELOPE", b"BODY "))):
            got = self.fetch1(1, macro)
            for item in items:
                self.assertIn(item, got, macro)

    def test_envelope(self):
        got = self.fetch1(1, "(ENVELOPE)")
        self.assertIn(b'"Mon, 7 Feb 1994 21:52:25 -0800"', got)
        self.assertIn(b'"Plain one"', got)
        self.assertIn(b'(("Ann Example" NIL "ann" "remote.test"))', got)
        self.assertIn(b'(("Bob" NIL "bob" "example.test")(NIL NIL "carol" "example.test"))', got)
        self.assertIn(b'((NIL NIL "cc" "remote.test"))', got)
        self.assertIn(b'"<fetch-1@remote.test>"', got)

    def test_body_and_bodystructure_multipart(self):
        got = self.fetch1(2, "(BODYSTRUCTURE)")
        self.assertIn(b'"MIXED"', got.upper())
        self.assertIn(b'"ALTERNATIVE"', got.upper())
        self.assertIn(b'"APPLICATION" "OCTET-STREAM"', got.upper())
        self.assertIn(b'"BOUNDARY" "OUTER-BOUNDARY-42"', got.upper())
        self.assertIn(b'"ATTACHMENT"', got.upper())
        body = self.fetch1(2, "(BODY)")
        self.assertIn(b"BODY (", body)
        self.assertNotIn(b'"ATTACHMENT"', body.upper())  # BODY has no extension data

    def test_bodystructure_single_part(self):
        got = self.fetch1(1, "(BODYSTRUCTURE)").upper()
        self.assertRegex(got, rb'BODYSTRUCTURE \("TEXT" "PLAIN" \("CHARSET" "US-ASCII"\) NIL NIL '
                              rb'"7BIT" \d+ 2')

    def test_sections(self):
        whole = self.message_of(2).split(b"}\r\n", 1)[1]
        header = self.fetch1(2, "(BODY.PEEK[HEADER])")
        self.assertIn(b"Subject: Multi two", header)
        self.assertTrue(header.rstrip(b")").endswith(b"\r\n\r\n"), header[-20:])
        text = self.fetch1(2, "(BODY.PEEK[TEXT])").split(b"}\r\n", 1)[1]
        self.assertTrue(whole.endswith(text.rstrip(b")")) or text.rstrip(b")") in whole)
        part1 = self.fetch1(2, "(BODY.PEEK[1])").split(b"}\r\n", 1)[1]
        self.assertTrue(part1.startswith(b"first part text"), part1)
        part22 = self.fetch1(2, "(BODY.PEEK[2.2])").split(b"}\r\n", 1)[1]
        self.assertTrue(part22.startswith(b"<p>alternative html</p>"), part22)
        mime = self.fetch1(2, "(BODY.PEEK[2.1.MIME])").split(b"}\r\n", 1)[1]
        self.assertIn(b"Content-Type: text/plain", mime)
        mime3 = self.fetch1(2, "(BODY.PEEK[3.MIME])")
        self.assertIn(b"Content-Transfer-Encoding: base64", mime3)
        # a single-part message's part 1 is its body
        p1 = self.fetch1(1, "(BODY.PEEK[1])").split(b"}\r\n", 1)[1]
        self.assertTrue(p1.startswith(b"line one\r\nline two"), p1)

    def test_message_rfc822_part(self):
        got = self.fetch1(3, "(BODYSTRUCTURE)").upper()
        # message/rfc822: body fields, then the inner envelope, the inner
        # body structure and the line count (RFC 3501 7.4.2)
        self.assertIn(b'"MESSAGE" "RFC822"', got)
        self.assertIn(b'"INNER MESSAGE"', got)
        header = self.fetch1(3, "(BODY.PEEK[2.HEADER])").split(b"}\r\n", 1)[1]
        self.assertIn(b"Subject: inner message", header)
        self.assertNotIn(b"Forward three", header)
        text = self.fetch1(3, "(BODY.PEEK[2.TEXT])").split(b"}\r\n", 1)[1]
        self.assertTrue(text.startswith(b"inner body text"), text)
        inner = self.fetch1(3, "(BODY.PEEK[2.1])").split(b"}\r\n", 1)[1]
        self.assertTrue(inner.startswith(b"inner body text"), inner)
        fields = self.fetch1(3, "(BODY.PEEK[2.HEADER.FIELDS (SUBJECT)])").split(b"}\r\n", 1)[1]
        self.assertTrue(fields.startswith(b"Subject: inner message\r\n"), fields)

    def test_header_fields_and_not(self):
        got = self.fetch1(1, "(BODY.PEEK[HEADER.FIELDS (SUBJECT X-EXTRA)])")
        lit = got.split(b"}\r\n", 1)[1]
        self.assertIn(b"Subject: Plain one\r\n", lit)
        self.assertIn(b"X-Extra: extra value\r\n", lit)
        self.assertNotIn(b"From:", lit)
        got = self.fetch1(1, "(BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT X-EXTRA)])")
        lit = got.split(b"}\r\n", 1)[1]
        self.assertNotIn(b"Subject:", lit)
        self.assertIn(b"From:", lit)
        # the response names the section as asked
        self.assertRegex(got.upper(), rb"BODY\[HEADER\.FIELDS\.NOT \(SUBJECT X-EXTRA\)\]")

    def test_partial(self):
        whole = self.message_of(1).split(b"}\r\n", 1)[1].rstrip(b")")
        got = self.fetch1(1, "(BODY.PEEK[]<0.10>)")
        self.assertIn(b"BODY[]<0> {10}\r\n" + whole[:10], got)
        got = self.fetch1(1, "(BODY.PEEK[]<5.7>)")
        self.assertIn(b"BODY[]<5> {7}\r\n" + whole[5:12], got)
        got = self.fetch1(1, "(BODY.PEEK[TEXT]<5.100000>)")
        self.assertIn(b"BODY[TEXT]<5>", got)
        self.assertIn(b"one\r\nline two", got)
        # an origin beyond the end gives an empty string
        got = self.fetch1(1, "(BODY.PEEK[]<100000.10>)")
        self.assertRegex(got, rb'BODY\[\]<100000> (""|\{0\})')

    def test_rfc822_items(self):
        got = self.fetch1(1, "(RFC822.HEADER)")
        self.assertIn(b"RFC822.HEADER {", got)
        got = self.fetch1(1, "(RFC822.TEXT)")
        self.assertIn(b"line one", got)

    def test_binary(self):
        r = self.raw(self.user, self.pw)
        status, lines, _ = r.command(b"CAPABILITY")
        if b"BINARY" not in caps_of(lines):
            self.skipTest("BINARY not advertised")
        r.command(b"EXAMINE INBOX", check=True)
        status, lines, _ = r.command(b"FETCH 2 (BINARY.PEEK[3] BINARY.SIZE[3])")
        self.assertEqual(status, b"OK")
        text = b"".join(lines)
        self.assertIn(bytes(range(10)), text)  # decoded from base64
        self.assertIn(b"BINARY.SIZE[3] 10", text)
        status, lines, _ = r.command(b"FETCH 2 BINARY.PEEK[]")
        self.assertEqual(status, b"OK")

    def test_uid_fetch_includes_uid(self):
        uids = ok(self, self.m.uid("SEARCH", "ALL"), "UID SEARCH")[0].split()
        data = ok(self, self.m.uid("FETCH", uids[0].decode(), "(FLAGS)"), "UID FETCH")
        self.assertIn(b"UID " + uids[0], data[0])

    def test_unknown_item_is_bad(self):
        self.assertEqual(refused(lambda: self.m.fetch("1", "(NOSUCHITEM)")), "BAD")


class TestSearch(ImapCase):
    """RFC 3501 6.4.4 search keys, CHARSET UTF-8 with Japanese text."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.user, cls.pw = cls.target.add_account()
        msgs = [
            make_message(subject="alpha report", body="the quick brown fox\r\n",
                         sender="Ann <ann@remote.test>", to="x@example.test",
                         date="Mon, 01 Jun 2020 10:00:00 +0000",
                         headers=("Cc: cc-one@remote.test", "X-Tag: red")),
            make_message(subject="beta news", body="lazy dogs sleep\r\n" + ("x" * 76 + "\r\n") * 40,
                         sender="Ben <ben@remote.test>", to="y@example.test",
                         date="Wed, 15 Jul 2020 10:00:00 +0000",
                         headers=("Bcc: hidden@remote.test",)),
            make_message(subject="gamma alpha", body="nothing here\r\n",
                         sender="Cid <cid@remote.test>", to="z@example.test",
                         date="Sat, 01 Aug 2020 10:00:00 +0000"),
            japanese_iso2022(),
            japanese_utf8_base64(),
        ]
        cls.target.deliver_many(cls.user, msgs)
        m = login(cls.target, cls.user, cls.pw)
        m.select("INBOX")
        # flags: 1 \Seen \Answered, 2 \Flagged \Deleted, 3 \Draft $Work
        m.store("1", "+FLAGS", "(\\Seen \\Answered)")
        m.store("2", "+FLAGS", "(\\Flagged \\Deleted)")
        m.store("3", "+FLAGS", "(\\Draft $Work)")
        m.logout()

    def setUp(self):
        self.m = self.login(self.user, self.pw)
        self.m.select("INBOX")

    def search(self, *criteria, charset=None):
        data = ok(self, self.m.search(charset, *criteria), "SEARCH %s" % (criteria,))
        return sorted(int(x) for x in data[0].split())

    def test_flag_keys(self):
        self.assertEqual(self.search("ALL"), [1, 2, 3, 4, 5])
        self.assertEqual(self.search("SEEN"), [1])
        self.assertEqual(self.search("UNSEEN"), [2, 3, 4, 5])
        self.assertEqual(self.search("ANSWERED"), [1])
        self.assertEqual(self.search("UNANSWERED"), [2, 3, 4, 5])
        self.assertEqual(self.search("FLAGGED"), [2])
        self.assertEqual(self.search("UNFLAGGED"), [1, 3, 4, 5])
        self.assertEqual(self.search("DELETED"), [2])
        self.assertEqual(self.search("UNDELETED"), [1, 3, 4, 5])
        self.assertEqual(self.search("DRAFT"), [3])
        self.assertEqual(self.search("UNDRAFT"), [1, 2, 4, 5])
        self.assertEqual(self.search("KEYWORD", "$Work"), [3])
        self.assertEqual(self.search("UNKEYWORD", "$Work"), [1, 2, 4, 5])
        # RECENT/NEW/OLD are valid keys (RFC 3501); results depend on sessions
        for key in ("RECENT", "NEW", "OLD"):
            ok(self, self.m.search(None, key), key)

    def test_header_keys(self):
        self.assertEqual(self.search("FROM", "ann@remote"), [1])
        self.assertEqual(self.search("FROM", "BEN"), [2])  # case-insensitive
        self.assertEqual(self.search("TO", "z@example"), [3])
        self.assertEqual(self.search("CC", "cc-one"), [1])
        self.assertEqual(self.search("BCC", "hidden"), [2])
        self.assertEqual(self.search("SUBJECT", "alpha"), [1, 3])
        self.assertEqual(self.search("HEADER", "X-Tag", "red"), [1])
        self.assertEqual(self.search("HEADER", "X-Tag", '""'), [1])  # header present

    def test_text_keys(self):
        self.assertEqual(self.search("BODY", "quick"), [1])
        self.assertEqual(self.search("BODY", "alpha"), [])  # subject is not body
        self.assertEqual(self.search("TEXT", "alpha"), [1, 3])
        self.assertEqual(self.search("TEXT", "lazy"), [2])

    def test_date_keys(self):
        self.assertEqual(self.search("SENTBEFORE", "15-Jul-2020"), [1])
        self.assertEqual(self.search("SENTON", "15-Jul-2020"), [2])
        self.assertEqual(self.search("SENTSINCE", "15-Jul-2020"), [2, 3, 4, 5])
        # internal dates are the arrival time (today)
        self.assertEqual(self.search("BEFORE", "1-Jan-2000"), [])
        self.assertEqual(self.search("SINCE", "1-Jan-2000"), [1, 2, 3, 4, 5])
        today = time.strftime("%d-%b-%Y", time.localtime())
        self.assertIn(len(self.search("ON", today)), (0, 5))  # timezone edge

    def test_size_keys(self):
        self.assertEqual(self.search("LARGER", "2500"), [2])
        self.assertEqual(self.search("SMALLER", "2500"), [1, 3, 4, 5])

    def test_sets_and_logic(self):
        self.assertEqual(self.search("2:4"), [2, 3, 4])
        uids = ok(self, self.m.uid("SEARCH", "ALL"), "UID SEARCH")[0].split()
        self.assertEqual(self.search("UID", b"%s,%s" % (uids[0], uids[4])), [1, 5])
        self.assertEqual(self.search("NOT", "SEEN"), [2, 3, 4, 5])
        self.assertEqual(self.search("OR", "SEEN", "FLAGGED"), [1, 2])
        self.assertEqual(self.search("(SUBJECT alpha FROM cid)"), [3])
        self.assertEqual(self.search("OR", "(SEEN ANSWERED)", "NOT", "(UNDRAFT)"), [1, 3])
        self.assertEqual(self.search("UNSEEN", "UNDELETED", "1:3"), [3])
        data = ok(self, self.m.uid("SEARCH", "SUBJECT", "beta"), "UID SEARCH")
        self.assertEqual(data[0].split(), [uids[1]])

    def test_charset_utf8_japanese(self):
        # ISO-2022-JP message, subject and body
        self.m.literal = "会議".encode("utf-8")
        self.assertEqual(self.search("SUBJECT", charset="UTF-8"), [4])
        self.m.literal = "東京".encode("utf-8")
        self.assertEqual(self.search("BODY", charset="UTF-8"), [4])
        # UTF-8 base64 message
        self.m.literal = "請求書".encode("utf-8")
        self.assertEqual(self.search("SUBJECT", charset="UTF-8"), [5])
        self.m.literal = "よろしく".encode("utf-8")
        self.assertEqual(self.search("TEXT", charset="UTF-8"), [5])
        self.m.literal = "存在しない".encode("utf-8")
        self.assertEqual(self.search("TEXT", charset="UTF-8"), [])

    def test_unknown_charset(self):
        typ, data = self.m.search("X-NO-SUCH-CHARSET", "TEXT", "x")
        self.assertEqual(typ, "NO")
        self.assertIn(b"BADCHARSET", data[0])

    def test_bad_syntax(self):
        self.assertEqual(refused(lambda: self.m.search(None, "NOSUCHKEY")), "BAD")
        self.assertEqual(refused(lambda: self.m.search(None, "(SEEN")), "BAD")


class TestReconnect(ImapCase):
    """A client that reconnects finds the same UIDVALIDITY, UIDs and flags."""

    def test_state_survives_reconnect(self):
        user, pw = self.user_with_mail(4)
        m = login(self.target, user, pw)
        m.select("INBOX")
        m.store("2", "+FLAGS", "(\\Flagged $Keep)")
        before = (untagged(m, "UIDVALIDITY"),
                  _no_recent(ok(self, m.fetch("1:*", "(UID FLAGS)"), "FETCH")))
        m.logout()
        m = self.login(user, pw)
        m.select("INBOX")
        after = (untagged(m, "UIDVALIDITY"),
                 _no_recent(ok(self, m.fetch("1:*", "(UID FLAGS)"), "FETCH")))
        self.assertEqual(before, after)
        self.assertIn(b"$Keep", after[1][1])

    @unittest.skipUnless(is_mx(), "kill -9 of the frontend (mxcluster only)")
    def test_state_survives_frontend_crash(self):
        # mx-imapd keeps no mailbox state of its own: after kill -9 and a
        # restart a reconnecting client finds everything as it was
        user, pw = self.user_with_mail(3)
        m = login(self.target, user, pw)
        m.select("INBOX")
        ok(self, m.store("1", "+FLAGS", "(\\Answered)"), "STORE")
        uidvalidity = untagged(m, "UIDVALIDITY")
        before = _no_recent(ok(self, m.fetch("1:*", "(UID FLAGS)"), "FETCH"))
        imapd = self.target.cluster.imapd
        imapd.kill()
        imapd.start()
        m = self.login(user, pw)
        m.select("INBOX")
        self.assertEqual(untagged(m, "UIDVALIDITY"), uidvalidity)
        self.assertEqual(_no_recent(ok(self, m.fetch("1:*", "(UID FLAGS)"), "FETCH")), before)

    def test_uids_strictly_ascending_and_not_reused(self):
        user, pw = self.user_with_mail(3)
        m = self.login(user, pw)
        m.select("INBOX")
        uids = [int(u) for u in m.uid("SEARCH", "ALL")[1][0].split()]
        self.assertEqual(uids, sorted(set(uids)))
        m.store("3", "+FLAGS", "(\\Deleted)")
        m.expunge()
        ok(self, m.append("INBOX", None, None, make_message()), "APPEND")
        m.noop()
        new = [int(u) for u in m.uid("SEARCH", "ALL")[1][0].split()]
        self.assertGreater(new[-1], uids[-1])


if __name__ == "__main__":
    unittest.main(verbosity=2)

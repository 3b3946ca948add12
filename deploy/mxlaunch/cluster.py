"""cluster - the whole mail path on loopback for IMAP/POP3 tests and benches:
slapd (sample domain), two mx-store shards, mx-delivery, mx-inbound and
mx-imapd, all torn down by close() or at interpreter exit.

    with Cluster() as c:
        user, pw = c.add_account("t1")                  # a fresh mailbox on shard1
        c.deliver(user, b"Subject: hi\\r\\n\\r\\nhello\\r\\n")   # SMTP -> ... -> store
        imaplib.IMAP4_SSL("127.0.0.1", c.imapd.port("imaps"), ssl_context=c.tls_context())

Mail enters through mx-inbound's mta port with smtplib (the real SMTP path);
deliver() waits until the store counts the message, so a test that then
opens IMAP sees it.
"""

import smtplib
import threading

from . import procs
from .delivery import Delivery
from .imapd import Imapd
from .inbound import Inbound, client_tls_context
from .slapd import Slapd, _ssha
from .store import Store

__all__ = ["Cluster", "SAMPLE_USERS"]

# Sample accounts of ldap-schema/sample.ldif that can log in (password
# NAME-secret), and their shards.  bob is disabled; dave forwards without
# keeping a copy, so SMTP mail never reaches his mailbox.
SAMPLE_USERS = {
    "alice@example.test": "shard1",
    "carol@example.test": "shard1",
    "dave@example.test": "shard2",
    "frank@example.test": "shard2",
}

DELIVERY_TIMEOUT = 30.0


class Cluster:
    """slapd + shard1 + shard2 + mx-delivery + mx-inbound + mx-imapd.

    imap_overrides  settings of mx-imapd's imap group ({name: libconfig text})
    imapd_env       extra environment for mx-imapd (ASAN_OPTIONS...)
    start_imapd     False: everything but mx-imapd (start it with start_imapd())
    inbound_overrides settings of mx-inbound's inbound group (as Inbound takes them)
    """

    def __init__(self, log_level="info", imap_overrides=None, imapd_env=None,
                 start_imapd=True, inbound_overrides=None):
        self.log_level = log_level
        self.imap_overrides = dict(imap_overrides or {})
        self.imapd_env = imapd_env
        self.ldap = self.shard1 = self.shard2 = self.delivery = None
        self.inbound = self.imapd = None
        self._lock = threading.Lock()
        self._accounts = {}
        try:
            self.ldap = Slapd()
            self.shard1 = Store(log_level=log_level)
            self.shard2 = Store(log_level=log_level)
            self.delivery = Delivery(self.ldap, {"shard1": [self.shard1.endpoint],
                                                 "shard2": [self.shard2.endpoint]},
                                     log_level=log_level)
            shards = ('( { name = "shard1"; endpoints = [ "%s" ]; }, '
                      '{ name = "shard2"; endpoints = [ "%s" ]; } )'
                      % (self.shard1.endpoint, self.shard2.endpoint))
            inbound_settings = {"shards": shards}
            inbound_settings.update(inbound_overrides or {})
            # The tests send many messages from 127.0.0.1: no per-IP caps.
            self.inbound = Inbound(
                self.ldap, self.delivery.endpoint, log_level=log_level,
                inbound_overrides=inbound_settings,
                instance_overrides={"mta": {"max_connections_per_ip": "1000000",
                                            "max_connection_rate": "0"}})
            if start_imapd:
                self.start_imapd()
        except BaseException:
            self.close()
            raise

    # --- components ---

    @property
    def shards(self):
        return {"shard1": self.shard1, "shard2": self.shard2}

    def start_imapd(self, **kw):
        """start_imapd - start mx-imapd on both shards (kw: Imapd options)."""
        options = {"imap_overrides": self.imap_overrides, "log_level": self.log_level,
                   "env": self.imapd_env}
        options.update(kw)
        self.imapd = Imapd(self.ldap, self.shards, **options)
        return self.imapd

    @property
    def cert(self):
        """cert - the CA file a client needs to verify mx-imapd."""
        return self.imapd.cert

    def tls_context(self):
        return client_tls_context(self.imapd.cert)

    def port(self, name):
        """port - mx-imapd's imap, imaps, pop3 or pop3s port."""
        return self.imapd.port(name)

    # --- accounts ---

    def shard_of(self, user):
        """shard_of - the Store holding USER's mailbox (mxStoreShard)."""
        with self._lock:
            name = self._accounts.get(user.lower()) or SAMPLE_USERS.get(user.lower())
        if name is None:
            entries = self.ldap.ldapsearch("(mail=%s)" % user, ["mxStoreShard"])
            if not entries:
                raise KeyError("no account %s in LDAP" % user)
            name = entries[0][1].get("mxStoreShard", ["shard1"])[0]
        return self.shards[name]

    def _account_ldif(self, name, password, shard, quota_bytes=None, quota_messages=None,
                      status="active"):
        lines = ["dn: uid=%s,ou=people,%s" % (name, self.ldap.base_dn),
                 "objectClass: top", "objectClass: person",
                 "objectClass: organizationalPerson", "objectClass: inetOrgPerson",
                 "objectClass: mxAccount",
                 "uid: %s" % name, "cn: Test %s" % name, "sn: %s" % name,
                 "mail: %s@example.test" % name, "userPassword: %s" % _ssha(password),
                 "mxAccountStatus: %s" % status, "mxStoreShard: %s" % shard]
        if quota_bytes is not None:
            lines.append("mxQuotaBytes: %d" % quota_bytes)
        if quota_messages is not None:
            lines.append("mxQuotaMessages: %d" % quota_messages)
        return "\n".join(lines) + "\n"

    def add_account(self, name, shard="shard1", quota_bytes=None, quota_messages=None,
                    status="active", password=None):
        """add_account - a new mxAccount NAME@example.test on SHARD (password
        NAME-secret unless given); returns (address, password)."""
        return self.add_accounts([name], shard, quota_bytes, quota_messages, status,
                                 password)[0]

    def add_accounts(self, names, shard="shard1", quota_bytes=None, quota_messages=None,
                     status="active", password=None):
        """add_accounts - accounts NAME@example.test in one ldapadd (a
        benchmark adds hundreds); returns [(address, password)]."""
        out, entries = [], []
        for name in names:
            pw = password or "%s-secret" % name
            entries.append(self._account_ldif(name, pw, shard, quota_bytes, quota_messages,
                                              status))
            out.append(("%s@example.test" % name, pw))
        self.ldap.ldapadd("\n".join(entries), timeout=300)
        with self._lock:
            for address, _ in out:
                self._accounts[address] = shard
        return out

    # --- mail ---

    def message_count(self, user, mailbox="INBOX"):
        """message_count - messages in USER's MAILBOX as the store counts
        them (0 while the mailbox does not exist yet)."""
        reply = self.shard_of(user).request("mailbox_status", user=user, mailbox=mailbox)
        if reply.status != 0:
            return 0
        return reply.get("messages") or 0

    def send(self, rcpts, message, sender="someone@remote.test", smtp=None):
        """send - one SMTP transaction to mx-inbound's mta port.  SMTP is an
        open smtplib.SMTP to reuse (bulk sends), else one is opened."""
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        own = smtp is None
        if own:
            smtp = smtplib.SMTP("127.0.0.1", self.inbound.port("mta"), timeout=30)
        try:
            refused = smtp.sendmail(sender, rcpts, message)
            if refused:
                raise procs.ProcessError("mx-inbound refused %s" % refused)
        finally:
            if own:
                smtp.quit()

    def wait_messages(self, user, count, mailbox="INBOX", timeout=DELIVERY_TIMEOUT):
        """wait_messages - until the store holds at least COUNT messages."""
        procs.wait_until(lambda: self.message_count(user, mailbox) >= count,
                         timeout=timeout, interval=0.05,
                         what="%d messages in %s/%s (now %d)"
                         % (count, user, mailbox, self.message_count(user, mailbox)))

    def deliver(self, user, message, sender="someone@remote.test", wait=True):
        """deliver - MESSAGE (bytes, CRLF) to USER by SMTP; waits until the
        store has it."""
        before = self.message_count(user) if wait else 0
        self.send([user], message, sender=sender)
        if wait:
            self.wait_messages(user, before + 1)

    def deliver_many(self, user, messages, sender="someone@remote.test", timeout=None):
        """deliver_many - every message of MESSAGES to USER over one SMTP
        session, then wait for all of them (in order of sending, though the
        store's arrival order may differ for concurrent deliveries)."""
        before = self.message_count(user)
        smtp = smtplib.SMTP("127.0.0.1", self.inbound.port("mta"), timeout=30)
        try:
            for message in messages:
                self.send([user], message, sender=sender, smtp=smtp)
        finally:
            smtp.quit()
        self.wait_messages(user, before + len(messages),
                           timeout=timeout or DELIVERY_TIMEOUT + len(messages) * 0.2)

    # --- life cycle ---

    def logs(self):
        """logs - {component: log text} for failure reports."""
        found = {}
        for name in ("imapd", "inbound", "delivery", "shard1", "shard2"):
            part = getattr(self, name)
            if part is not None:
                try:
                    found[name] = part.log()
                except OSError:
                    pass
        return found

    def close(self):
        for name in ("imapd", "inbound", "delivery", "shard1", "shard2", "ldap"):
            part = getattr(self, name)
            if part is not None:
                try:
                    part.close()
                except Exception:
                    pass
                setattr(self, name, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

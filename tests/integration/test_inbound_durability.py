"""mx-inbound: durability of accepted mail - nothing queued for a client
that went away mid-DATA, nothing lost or doubled across kill -9, a backlog
handed on when delivery comes back, delivery TEMPFAIL retried, and the
before-queue filter's failure modes (tempfail, or fail-open).

Run: ctest -R inbound_durability"""

import os
import shutil
import smtplib
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mxlaunch.inbound import Inbound, TestSink  # noqa: E402
from inbound_testlib import (InboundTestCase, RawSMTP, TIMEOUT, all_files, message,  # noqa: E402
                             queued_id, wait_until)


def send(port, subject, rcpt="alice@example.test"):
    """send - one message over the mta port; returns its queue id."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.org",
                      timeout=TIMEOUT) as s:
        s.ehlo()
        s.mail("sender@example.org")
        s.rcpt(rcpt)
        code, text = s.data(message(subject))
        if code != 250:
            raise AssertionError("DATA refused: %d %r" % (code, text))
        return queued_id(text.decode())


def subjects(sink):
    """subjects - Subject of every message at the sink, in a list."""
    found = []
    for _, _, body in sink.messages().values():
        for line in body.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                found.append(line[9:].decode())
                break
    return found


class DisconnectTest(InboundTestCase):

    def assert_nothing_queued(self, marker):
        wait_until(lambda: "client disconnected during DATA" in self.mx.log(), 10,
                   "the disconnect to be noticed")
        time.sleep(0.3)
        self.assertEqual(all_files(self.mx.spool_dir), [], "spool not empty")
        self.assertFalse([s for s in subjects(self.sink) if marker in s])

    def test_disconnect_mid_data(self):
        with self.raw() as c:
            c.ehlo()
            self.assertEqual(c.cmd("MAIL FROM:<x@example.org>").code, 250)
            self.assertEqual(c.cmd("RCPT TO:<alice@example.test>").code, 250)
            self.assertEqual(c.cmd("DATA").code, 354)
            c.send(b"Subject: half\r\n\r\n" + b"x" * 100000 + b"\r\nmore")
        self.assert_nothing_queued("half")

    def test_disconnect_before_final_crlf(self):
        with self.raw() as c:
            c.ehlo()
            self.assertEqual(c.cmd("MAIL FROM:<x@example.org>").code, 250)
            self.assertEqual(c.cmd("RCPT TO:<alice@example.test>").code, 250)
            self.assertEqual(c.cmd("DATA").code, 354)
            c.send(b"Subject: almost\r\n\r\nall of it\r\n.")  # the last CRLF never comes
        self.assert_nothing_queued("almost")

    def test_session_after_disconnect_works(self):
        """Control: the same server still accepts a complete message."""
        qid = send(self.mx.port("mta"), "complete")
        self.wait_delivered(qid)


class KillTest(InboundTestCase):
    """kill -9 of mx-inbound right after a 250."""

    def restart(self):
        self.mx.kill()
        self.assertFalse(self.mx.running)
        self.mx.start()

    def test_kill_after_250_sink_down(self):
        self.sink.stop()
        try:
            qid = send(self.mx.port("mta"), "kill one")
            self.assertIn(qid, self.mx.spool_entries())  # durable before the 250
            self.restart()
            time.sleep(1.0)  # the rescan found it; delivery is still down
            self.assertEqual(self.mx.spool_entries(), [qid])
        finally:
            self.sink.start()
        self.wait_delivered(qid, timeout=30)
        self.assertEqual(subjects(self.sink).count("kill one"), 1)

    def test_kill_while_handoff_unanswered(self):
        """The sink got the hand-off but never answered (silent): after the
        kill and restart the message is handed on again and stored once."""
        self.sink.stop()
        self.sink.silent = True
        self.sink.start()
        try:
            qid = send(self.mx.port("mta"), "kill two")
            wait_until(lambda: "event=sink.dropped_silently id=%s" % qid in self.sink_log(), 10,
                       "the hand-off to reach the silent sink")
            self.restart()
            self.assertIn(qid, self.mx.spool_entries())
        finally:
            self.sink.stop()
            self.sink.silent = False
            self.sink.start()
        self.wait_delivered(qid, timeout=30)
        self.assertEqual(subjects(self.sink).count("kill two"), 1)
        self.assertEqual(self.mx.log().count("event=handoff.done id=%s" % qid), 1)

    def test_redelivery_after_restart_is_deduplicated(self):
        """A crash after delivery's ack but before the spool entry was
        removed: the entry is handed on again, delivery answers DUPLICATE,
        the spool empties and the message exists once."""
        self.sink.stop()
        saved = tempfile.mkdtemp(prefix="mxspool-copy-")
        try:
            qid = send(self.mx.port("mta"), "dedup")
            queue = os.path.join(self.mx.spool_dir, "queue")
            shutil.copy2(os.path.join(queue, qid), os.path.join(saved, qid))
            self.sink.start()
            self.wait_delivered(qid, timeout=30)
            self.mx.kill()
            shutil.copy2(os.path.join(saved, qid), os.path.join(queue, qid))
            self.mx.start()
            wait_until(lambda: qid in self.sink.duplicates(), 30, "a DUPLICATE answer")
            wait_until(lambda: not self.mx.spool_entries(), 30, "an empty spool")
        finally:
            shutil.rmtree(saved, ignore_errors=True)
            if not self.sink.proc.running:
                self.sink.start()
        self.assertEqual(subjects(self.sink).count("dedup"), 1)
        self.wait_logged("event=handoff.done id=%s status=duplicate" % qid)

    def sink_log(self):
        with open(os.path.join(self.sink.dir, "sink.log"), errors="replace") as f:
            return f.read()


class RestartTest(InboundTestCase):
    """What a restart finds in the spool: stale tmp files, damaged entries."""

    def test_kill_mid_data_leaves_nothing(self):
        with self.raw() as c:
            c.ehlo()
            self.assertEqual(c.cmd("MAIL FROM:<x@example.org>").code, 250)
            self.assertEqual(c.cmd("RCPT TO:<alice@example.test>").code, 250)
            self.assertEqual(c.cmd("DATA").code, 354)
            c.send(b"Subject: killed mid-data\r\n\r\n" + b"x" * 50000)
            wait_until(lambda: all_files(os.path.join(self.mx.spool_dir, "tmp")), 10,
                       "the message's tmp file")
            self.mx.kill()
        self.mx.start()
        for sub in ("tmp", "queue"):
            self.assertEqual(all_files(os.path.join(self.mx.spool_dir, sub)), [], sub)
        self.assertIn("event=spool.stale_tmp_removed", self.mx.log())
        qid = send(self.mx.port("mta"), "after the kill")
        self.wait_delivered(qid)
        self.assertNotIn("killed mid-data", subjects(self.sink))

    def test_damaged_entry_moved_aside(self):
        """A spool entry without a valid envelope is moved to corrupt/ for
        the operator (never deleted, never blocking the others)."""
        self.mx.kill()
        queue = os.path.join(self.mx.spool_dir, "queue")
        name = "01M8DAMAGED0000000000000001"
        with open(os.path.join(queue, name), "wb") as f:
            f.write(b"Subject: half an entry\r\n\r\nno envelope follows\r\n")
        self.mx.start()
        qid = send(self.mx.port("mta"), "next to a damaged entry")
        self.wait_delivered(qid)
        self.assertTrue(os.path.exists(os.path.join(self.mx.spool_dir, "corrupt", name)))
        self.assertIn("event=handoff.damaged_entry id=%s" % name, self.mx.log())


class FailoverTest(InboundTestCase):
    """Two delivery endpoints, the first never answers: the hand-off times
    out there and goes to the second."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.silent = TestSink(silent=True)
            cls.good = TestSink()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for name in ("silent", "good"):
            if getattr(cls, name, None) is not None:
                getattr(cls, name).close()
                setattr(cls, name, None)
        super().tearDownClass()

    def test_failover_to_second_instance(self):
        mx = Inbound(self.ldap, [self.silent.endpoint, self.good.endpoint])
        try:
            ids = [send(mx.port("mta"), "failover %d" % i) for i in range(3)]
            wait_until(lambda: set(ids) <= set(self.good.messages()), 30,
                       "the messages at the second delivery instance")
            wait_until(lambda: not mx.spool_entries(), 10, "an empty spool")
            self.assertEqual(sorted(subjects(self.good)), ["failover %d" % i for i in range(3)])
            self.assertTrue(mx.running)
        finally:
            mx.close()


class BacklogTest(InboundTestCase):

    def test_20_messages_while_delivery_down(self):
        self.sink.stop()
        try:
            ids = []
            with smtplib.SMTP("127.0.0.1", self.mx.port("mta"), local_hostname="client.example.org",
                              timeout=TIMEOUT) as s:
                s.ehlo()
                for i in range(20):
                    s.mail("sender@example.org")
                    s.rcpt("alice@example.test")
                    code, text = s.data(message("backlog %02d" % i))
                    self.assertEqual(code, 250)
                    ids.append(queued_id(text.decode()))
            self.assertEqual(len(set(ids)), 20)
            self.assertEqual(sorted(self.mx.spool_entries()), sorted(ids))
            time.sleep(2.5)  # hand-offs time out and wait for their retry
            self.assertEqual(len(self.mx.spool_entries()), 20)
        finally:
            self.sink.start()
        wait_until(lambda: set(ids) <= set(self.sink.messages()), 60, "all 20 at the sink")
        wait_until(lambda: not self.mx.spool_entries(), 30, "an empty spool")
        got = subjects(self.sink)
        self.assertEqual(sorted(got), ["backlog %02d" % i for i in range(20)])


class TempfailTest(InboundTestCase):
    sink_kwargs = {"tempfail": 2}

    def test_tempfail_retried(self):
        qid = send(self.mx.port("mta"), "tempfail")
        self.wait_delivered(qid, timeout=30)
        done = "event=handoff.done id=%s status=ok attempts=3" % qid
        log = self.mx.log()
        self.assertEqual(log.count("event=handoff.deferred id=%s" % qid), 2, log[-3000:])
        self.assertIn(done, log)


class NoFilterCase(InboundTestCase):
    """A filter endpoint where nothing listens: a port we hold bound but not
    listening (connections are refused, and no other test can take it)."""

    fail_open = False

    @classmethod
    def setUpClass(cls):
        cls.hole = socket.socket()
        cls.hole.bind(("127.0.0.1", 0))
        cls.inbound_kwargs = {
            "filter_endpoints": ["tcp://127.0.0.1:%d" % cls.hole.getsockname()[1]],
            "filter_fail_open": cls.fail_open}
        try:
            super().setUpClass()
        except BaseException:
            cls.hole.close()
            raise

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.hole.close()


class FilterUnreachableTest(NoFilterCase):
    """A filter is configured but nothing listens: mail is tempfailed."""

    def test_mta_tempfailed(self):
        with RawSMTP(self.mx.port("mta"), read_greeting=False) as c:
            reply = c.reply()  # the connect-time check cannot be answered
            self.assertEqual((reply.code, reply.enhanced), (421, "4.3.0"), reply)
            self.assertTrue(c.is_closed())

    def test_msa_data_tempfailed(self):
        with RawSMTP(self.mx.port("msa")) as c:
            c.ehlo()
            c.starttls(self.tls)
            c.ehlo()
            self.assertEqual(c.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXNlY3JldA==").code, 235)
            self.assertEqual(c.cmd("MAIL FROM:<alice@example.test>").code, 250)
            self.assertEqual(c.cmd("RCPT TO:<carol@example.test>").code, 250)
            self.assertEqual(c.cmd("DATA").code, 354)
            c.send(message("filtered") + b".\r\n")
            reply = c.reply()
            self.assertEqual((reply.code, reply.enhanced), (451, "4.3.0"), reply)
            self.assertEqual(c.cmd("NOOP").code, 250)
        time.sleep(0.5)
        self.assertEqual(all_files(self.mx.spool_dir), [])
        self.assertEqual(self.sink.messages(), {})


class FilterFailOpenTest(NoFilterCase):
    """The same unreachable filter with fail_open: mail is accepted."""

    fail_open = True

    def test_accepted_unfiltered(self):
        qid = send(self.mx.port("mta"), "fail open")
        self.wait_delivered(qid)
        self.assertIn("event=smtp.filter_unavailable_fail_open", self.mx.log())


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""benchlib - what the benchmark scripts share: driving smtp-source."""
import subprocess
import time


def smtp_source(port, messages, sessions, size):
    """smtp_source - send with Postfix's smtp-source; returns (seconds, sent)."""
    argv = ["smtp-source", "-c", "-s", str(sessions), "-m", str(messages), "-l", str(size),
            "-f", "sender@remote.test", "-t", "alice@example.test", "127.0.0.1:%d" % port]
    start = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - start
    if out.returncode != 0:
        raise RuntimeError("smtp-source failed: %s" % out.stderr.strip())
    # -c prints a running count; the last number is the total sent.
    counts = [int(t) for t in out.stdout.replace("\r", "\n").split() if t.isdigit()]
    return elapsed, counts[-1] if counts else messages

"""procs - start real server processes and make sure they stop.

Every process is started in its own session (start_new_session=True), so it
leads a new process group whose id is its pid.  Stopping sends SIGTERM to the
whole group, waits a grace period, then SIGKILLs the group.  Because Linux
keeps a pid allocated while any process still uses it as a process-group id,
signalling the group after the leader died (and was reaped) can only reach
our own leftovers, never an unrelated process that reused the number.

Processes started with keep=False are entered in a module-wide registry that
stops them at interpreter exit (atexit) and when the interpreter receives
SIGTERM or SIGINT; the previous handler (or the default action) runs after.
Processes started with keep=True (the quickstart's persistent mode) are left
running and can be stopped later through their pid file (stop_pidfile).

Nothing here survives SIGKILL of the Python interpreter itself: persistent
children are meant to survive, temporary ones are then orphaned.  Tests that
care look for leftovers with group_members().
"""

import atexit
import errno
import os
import random
import signal
import socket
import subprocess
import threading
import time

__all__ = [
    "ProcessError", "StartupError", "ManagedProcess", "start_process",
    "free_port", "port_probe", "wait_until", "stop_pidfile", "group_members",
    "registry", "stop_all",
]

DEFAULT_GRACE = 5.0


class ProcessError(RuntimeError):
    """A managed process could not be started or failed."""


class StartupError(ProcessError):
    """A process did not become ready in time, or died while starting.

    The message names the component, the reason, and ends with the last lines
    of its log file, which is usually all an operator needs.
    """


def _tail(path, lines=20):
    """_tail - last LINES lines of a text file, "" if it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


def group_members(pgid):
    """group_members - pids of live (non-zombie) processes whose pgid is PGID.

    Reads /proc; used to check that nothing was left behind.
    """
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue  # exited while we looked
        # Fields after the last ')' (the command name may contain ')').
        rest = stat[stat.rfind(")") + 2:].split()
        if len(rest) < 3:
            continue
        state, pg = rest[0], int(rest[2])
        if pg == pgid and state not in ("Z", "X"):
            found.append(int(name))
    return found


def _all_threads_stopped(pid):
    """_all_threads_stopped - every thread of PID is in state T (stopped)."""
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return True  # gone: nothing left to answer
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid), "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        if stat[stat.rfind(")") + 2:].split()[:1] != ["T"]:
            return False
    return True


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return bool(group_members(pgid))


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class ManagedProcess:
    """One started process (and its process group).

    Attributes: name, argv, log_path, pid, pgid, popen (None when attached
    through a pid file), keep (True = not stopped at exit).
    """

    def __init__(self, name, argv, log_path, popen=None, pid=None, keep=False):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.popen = popen
        self.pid = popen.pid if popen is not None else pid
        self.pgid = self.pid  # start_new_session: the child leads its group
        self.keep = keep
        self._stopped = False

    def __repr__(self):
        return "<ManagedProcess %s pid=%s>" % (self.name, self.pid)

    def poll(self):
        """poll - exit status, or None while the leader runs."""
        if self.popen is not None:
            return self.popen.poll()
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return -1
        except PermissionError:
            pass
        return None

    @property
    def running(self):
        return self.poll() is None

    def log_tail(self, lines=20):
        """log_tail - the last LINES lines of the component's log file."""
        return _tail(self.log_path, lines)

    def signal(self, sig):
        """signal - send SIG to the whole process group."""
        _killpg(self.pgid, sig)

    def pause(self):
        """pause - SIGSTOP the group: the server keeps its sockets but hangs.

        kill() returns before the target has stopped (a thread could still
        answer one more request), so wait until every thread of the leader
        shows state T."""
        self.signal(signal.SIGSTOP)
        wait_until(lambda: _all_threads_stopped(self.pid), timeout=5,
                   what="%s to stop" % self.name)

    def resume(self):
        """resume - SIGCONT the group after pause()."""
        self.signal(signal.SIGCONT)

    def wait_ready(self, probe, timeout=10.0, interval=0.02, what=None):
        """wait_ready - call PROBE until it returns true, or fail.

        PROBE is a callable returning a true value when the component answers;
        exceptions it raises count as "not yet" (the last one is reported).
        Raises StartupError if the deadline passes or the process exits first;
        the process is then stopped, so a failed start leaves nothing behind.
        """
        deadline = time.monotonic() + timeout
        last = None
        while True:
            rc = self.poll()
            if rc is not None:
                self.stop()
                raise StartupError(
                    "%s exited with status %s while starting (%s)\n"
                    "--- last lines of %s ---\n%s"
                    % (self.name, rc, " ".join(self.argv), self.log_path,
                       self.log_tail()))
            try:
                if probe():
                    return
            except Exception as e:  # the probe's failure is "not ready yet"
                last = e
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        self.stop()
        raise StartupError(
            "%s not ready after %.1fs%s%s (%s)\n--- last lines of %s ---\n%s"
            % (self.name, timeout, " waiting for " + what if what else "",
               "; last probe error: %s" % last if last else "",
               " ".join(self.argv), self.log_path, self.log_tail()))

    def kill(self):
        """kill - SIGKILL the group, as a crash would, and wait until the
        leader is gone (then reap what is left)."""
        self.signal(signal.SIGKILL)
        wait_until(lambda: not self.running, timeout=5, what="%s to die" % self.name)
        self.stop(grace=0)

    def stop(self, grace=DEFAULT_GRACE):
        """stop - SIGTERM the group, SIGKILL it after GRACE seconds.

        Safe to call twice, from atexit and after the leader already died
        (the rest of its group is still killed).  Returns the leader's exit
        status if known.
        """
        # A stopped (SIGSTOP) group ignores SIGTERM until continued.
        _killpg(self.pgid, signal.SIGCONT)
        _killpg(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.popen is not None:
                self.popen.poll()  # reap the leader so it is not a zombie
            if not _group_alive(self.pgid):
                break
            time.sleep(0.01)
        else:
            _killpg(self.pgid, signal.SIGKILL)
            end = time.monotonic() + 5.0
            while _group_alive(self.pgid) and time.monotonic() < end:
                if self.popen is not None:
                    self.popen.poll()
                time.sleep(0.01)
        rc = None
        if self.popen is not None:
            try:
                rc = self.popen.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass
        self._stopped = True
        registry.unregister(self)
        return rc


class _Registry:
    """Processes (and clean-up callbacks) to stop at exit or on a signal."""

    def __init__(self):
        self._lock = threading.RLock()
        self._procs = []
        self._cleanups = []
        self._installed = False
        self._previous = {}

    def register(self, proc):
        with self._lock:
            self._install()
            self._procs.append(proc)

    def unregister(self, proc):
        with self._lock:
            if proc in self._procs:
                self._procs.remove(proc)

    def add_cleanup(self, fn):
        """add_cleanup - run FN (no arguments) after the processes stopped."""
        with self._lock:
            self._install()
            self._cleanups.append(fn)

    def remove_cleanup(self, fn):
        with self._lock:
            if fn in self._cleanups:
                self._cleanups.remove(fn)

    def stop_all(self):
        """stop_all - stop every registered process, newest first."""
        with self._lock:
            procs = list(reversed(self._procs))
            cleanups = list(reversed(self._cleanups))
            self._procs.clear()
            self._cleanups.clear()
        for p in procs:
            try:
                p.stop()
            except Exception:
                pass
        for fn in cleanups:
            try:
                fn()
            except Exception:
                pass

    def _install(self):
        if self._installed:
            return
        self._installed = True
        atexit.register(self.stop_all)
        # signal.signal only works in the main thread; elsewhere atexit and
        # the caller's own handling must do.
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                if signal.getsignal(sig) == signal.SIG_IGN:
                    continue  # e.g. SIGINT of a background job: keep ignoring
                self._previous[sig] = signal.signal(sig, self._on_signal)
            except (ValueError, OSError):
                pass

    def _on_signal(self, signum, frame):
        self.stop_all()
        prev = self._previous.get(signum, signal.SIG_DFL)
        if callable(prev):
            prev(signum, frame)  # e.g. default_int_handler -> KeyboardInterrupt
        elif prev == signal.SIG_DFL:
            # Die of the same signal so the parent sees the real cause.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


    def _forget(self):
        # In a fork()ed child: the processes belong to the parent; the child
        # must not stop them at its own exit or on its own signals.
        self._procs = []
        self._cleanups = []
        self._lock = threading.RLock()


registry = _Registry()
os.register_at_fork(after_in_child=registry._forget)


def stop_all():
    """stop_all - stop every temporary process started so far."""
    registry.stop_all()


def start_process(name, argv, log_path, env=None, cwd=None, keep=False,
                  ready=None, timeout=10.0, what=None):
    """start_process - start ARGV as component NAME, logging to LOG_PATH.

    stdout and stderr go (appended) to LOG_PATH; stdin is /dev/null.  With
    keep=False the process is stopped at interpreter exit or on SIGTERM /
    SIGINT; with keep=True it is left running.  If READY (a probe callable,
    see ManagedProcess.wait_ready) is given, waits up to TIMEOUT seconds for
    it and raises StartupError (after stopping the process) on failure.
    """
    log = open(log_path, "ab")
    try:
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, start_new_session=True, close_fds=True)
    except OSError as e:
        raise ProcessError("cannot start %s (%s): %s"
                           % (name, " ".join(argv), e)) from e
    finally:
        log.close()
    proc = ManagedProcess(name, argv, log_path, popen=popen, keep=keep)
    if not keep:
        registry.register(proc)
    if ready is not None:
        proc.wait_ready(ready, timeout=timeout, what=what)
    return proc


# Ports handed out by free_port(): below Linux's ephemeral range (32768-60999
# by default), so no outgoing connection - a client's, a ZeroMQ socket's - can
# be given one between free_port() and the server's bind, and reserved across
# the test processes ctest runs in parallel by a file per port, so two of them
# never get the same one.
_PORT_RANGE = (20000, 32768)
_PORT_DIR = os.path.join("/tmp", "mxtest-ports")
_reserved_ports = []


def _release_ports():
    for path in _reserved_ports:
        try:
            os.unlink(path)
        except OSError:
            pass


atexit.register(_release_ports)


def _owner_alive(path):
    try:
        with open(path) as f:
            pid = int(f.read().strip() or "0")
    except (OSError, ValueError):
        return True  # being written, or unreadable: leave it alone
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def free_port(host="127.0.0.1"):
    """free_port - a TCP port on HOST that nobody uses and no other test
    process will be given until this one exits (see _PORT_RANGE)."""
    os.makedirs(_PORT_DIR, exist_ok=True)
    for _ in range(2000):
        port = random.randrange(*_PORT_RANGE)
        path = os.path.join(_PORT_DIR, str(port))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if not _owner_alive(path):  # its test process died without cleaning up
                try:
                    os.unlink(path)
                except OSError:
                    pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:  # in use by something that is not a test of ours
                os.unlink(path)
                continue
        _reserved_ports.append(path)
        return port
    raise ProcessError("free_port: no free port in %d-%d" % _PORT_RANGE)


def port_probe(host, port, timeout=0.5):
    """port_probe - a probe callable: true once HOST:PORT accepts TCP."""
    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False
    return probe


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition"):
    """wait_until - poll PREDICATE until true; TimeoutError after TIMEOUT s."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s"
                               % (timeout, what))
        time.sleep(interval)


def read_pidfile(path):
    """read_pidfile - pid in PATH, or None if absent or unreadable."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_pidfile(path, grace=DEFAULT_GRACE, name=None):
    """stop_pidfile - stop the process group led by the pid in PATH.

    For persistent components started by an earlier run.  The pid file must
    name a group leader (our processes all are); a stale file naming a dead
    pid is harmless.  Returns True if something was running.
    """
    pid = read_pidfile(path)
    if pid is None or pid <= 1:
        return False
    try:
        if os.getpgid(pid) != pid:
            # Not a group leader: not one of ours; signal only that pid.
            os.kill(pid, signal.SIGTERM)
            return True
    except ProcessLookupError:
        if not group_members(pid):
            return False
    except OSError as e:
        if e.errno != errno.ESRCH:
            raise
    proc = ManagedProcess(name or os.path.basename(path), [], "", pid=pid,
                          keep=True)
    proc.stop(grace)
    return True

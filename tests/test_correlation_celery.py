"""Correlation in real Celery worker and beat processes, with traces sent through the real
OTLP exporter; a worker killed with SIGKILL mid-run loses nothing and counts nothing twice."""

import json
import os
import signal
import time
import uuid

import pytest
from django.db import connection
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from tests.conftest import PYTHON
from tests.processes import Proc, wait_until
from traces import analysis
from traces.correlate import _load, contributions
from traces.models import EdgeRollup, RedRollup, TraceSummary

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAST = {"SIGHTLINE_SETTLE_SECONDS": "1", "SIGHTLINE_SETTLE_TICK_SECONDS": "1",
        "SIGHTLINE_TASK_VISIBILITY_SECONDS": "5"}


def send_traces(endpoint, prefix, count):
    """count traces: frontend SERVER -> CLIENT -> checkout SERVER -> db CLIENT; every 7th fails."""
    providers = {name: TracerProvider(resource=SdkResource.create({"service.name": f"{prefix}-{name}"}))
                 for name in ("frontend", "checkout")}
    for provider in providers.values():
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True),
                                                       max_export_batch_size=256, schedule_delay_millis=200))
    front, checkout = (providers[name].get_tracer("test") for name in ("frontend", "checkout"))
    for index in range(count):
        with front.start_as_current_span("GET /buy", kind=SpanKind.SERVER):
            with front.start_as_current_span("POST checkout", kind=SpanKind.CLIENT) as client:
                with checkout.start_as_current_span("POST /checkout", kind=SpanKind.SERVER,
                                                    context=set_span_in_context(client)) as server:
                    with checkout.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT,
                                                        attributes={"db.system": "postgresql"}):
                        pass
                    if index % 7 == 0:
                        server.set_status(Status(StatusCode.ERROR, "out of stock"))
    for provider in providers.values():
        provider.shutdown()


def rollups(prefix):
    red = sorted((r.minute, r.environment, r.service, r.operation, r.kind, r.entry, r.count, r.errors,
                  json.dumps(r.histogram, sort_keys=True))
                 for r in RedRollup.objects.filter(service__startswith=prefix))
    edges = sorted((e.minute, e.environment, e.parent, e.child, e.child_type, e.calls, e.errors)
                   for e in EdgeRollup.objects.filter(parent__startswith=prefix))
    return red, edges


def expected_rollups(prefix):
    """What an undisturbed run computes: the analysis of every stored trace, added up once."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT trace_id FROM sightline_span WHERE service_name LIKE %s", [prefix + "%"])
        trace_ids = [bytes(row[0]) for row in cursor.fetchall()]
        spans_by_trace, _ = _load(cursor, trace_ids)
    red, edges = {}, {}
    for spans in spans_by_trace.values():
        parts = contributions(analysis.analyze(spans))
        for table, part in ((red, parts["red"]), (edges, parts["edges"])):
            for key, (count, errors, hist) in part.items():
                entry = table.setdefault(key, [0, 0, {}])
                entry[0] += count
                entry[1] += errors
                for bucket, n in hist.items():
                    entry[2][bucket] = entry[2].get(bucket, 0) + n
    from traces.correlate import _minute

    red_rows = sorted((_minute(k[0]), *k[1:], c, e, json.dumps(h, sort_keys=True))
                      for k, (c, e, h) in ((json.loads(key), value) for key, value in red.items()))
    edge_rows = sorted((_minute(k[0]), *k[1:], c, e)
                       for k, (c, e, h) in ((json.loads(key), value) for key, value in edges.items()))
    return red_rows, edge_rows, len(spans_by_trace)


def celery(kind, env, tmp_path):
    argv = [PYTHON, "-m", "celery", "-A", "config", kind, "--loglevel", "INFO"]
    argv += ["--concurrency", "1"] if kind == "worker" else ["--schedule", str(tmp_path / "beat-schedule")]
    return Proc(argv, env=env)


def test_a_worker_killed_mid_run_gives_the_same_rollups_as_an_undisturbed_run(start_ingest, tmp_path):
    ingest = start_ingest(**FAST)
    env = ingest["env"]
    prefix = f"kill{uuid.uuid4().hex[:6]}"
    worker = celery("worker", env, tmp_path)
    beat = celery("beat", env, tmp_path)
    try:
        worker.wait_for_line("ready.", timeout=60)
        send_traces(ingest["grpc"], prefix, 150)
        wait_until(lambda: TraceSummary.objects.filter(root_service=f"{prefix}-frontend").exists(), 60,
                   "the first traces correlated", worker)
        send_traces(ingest["grpc"], prefix, 150)  # more work arriving while the worker is busy
        os.killpg(worker.pid, signal.SIGKILL)
        worker.proc.wait(10)
        send_traces(ingest["grpc"], prefix, 100)  # and while there is no worker at all
        worker = celery("worker", env, tmp_path)
        wait_until(lambda: TraceSummary.objects.filter(root_service=f"{prefix}-frontend").count() == 400, 120,
                   "all 400 traces correlated", worker)
        time.sleep(3)  # a redelivered task, if any, has had time to run again
        red, edges = rollups(prefix)
        expected_red, expected_edges, traces = expected_rollups(prefix)
        assert traces == 400
        assert red == expected_red
        assert edges == expected_edges
        assert sum(row[6] for row in red) == 400 * 4  # every span counted once
        calls = {(row[2], row[3], row[4]): 0 for row in edges}
        for row in edges:
            calls[(row[2], row[3], row[4])] += row[5]
        assert calls == {(f"{prefix}-frontend", f"{prefix}-checkout", "service"): 400,
                         (f"{prefix}-checkout", "postgresql", "database"): 400}
    finally:
        worker.stop()
        beat.stop()

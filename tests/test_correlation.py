"""Correlation against real PostgreSQL and Redis, without Celery: settling, re-opening,
idempotency, Redis loss, rollup accuracy, retention."""

import datetime as dt
import json
import os
import random
import time

import pytest
from django.db import connection
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ingest import convert, writer
from ingest.pipeline import PENDING_TRACES_KEY
from tests.otlp_builders import trace_request
from traces import analysis, retention, settle
from traces.analysis import merge
from traces.correlate import correlate_traces
from traces.models import RedRollup, RedRollupHour, TraceSummary
from traces.partitions import partition_name
from traces.redis_client import get_redis

pytestmark = pytest.mark.django_db(transaction=True)


def store(request):
    batch = convert.convert_traces(request)
    writer.write_spans(batch)
    return batch


def red_totals(service, model=RedRollup):
    rows = model.objects.filter(service=service)
    return sum(row.count for row in rows), sum(row.errors for row in rows)


def test_a_late_span_reopens_a_settled_trace_and_corrects_the_rollups(settings):
    service = f"late-{os.urandom(4).hex()}"
    trace_id = os.urandom(16)
    store(trace_request(service, spans=5, trace_id=trace_id))
    correlate_traces([trace_id])
    assert TraceSummary.objects.get(trace_id=trace_id).span_count == 5
    assert red_totals(service) == (5, 0)

    late = trace_request(service, spans=1, trace_id=trace_id)
    late.resource_spans[0].scope_spans[0].spans[0].status.code = 2  # an error, arriving late
    store(late)
    correlate_traces([trace_id])
    summary = TraceSummary.objects.get(trace_id=trace_id)
    assert (summary.span_count, summary.error_count) == (6, 1)
    assert red_totals(service) == (6, 1)  # corrected, not 5 + 6
    assert red_totals(service, RedRollupHour) == (6, 1)  # the hourly rollup is corrected too


def test_rollups_are_kept_per_minute_and_per_hour_with_the_environment_and_entry_spans():
    service = f"hours-{os.urandom(4).hex()}"
    hour = 3_600_000_000_000
    base = (time.time_ns() // hour - 2) * hour  # two whole hours ago, on the hour
    ids = []
    for offset in (5, 35, 65, 95):  # minutes: two in each of two hours
        request = trace_request(service, spans=3, start_ns=base + offset * 60_000_000_000)
        request.resource_spans[0].resource.attributes.add(
            key="deployment.environment.name", value=AnyValue(string_value="staging"))
        store(request)
        ids.append(request.resource_spans[0].scope_spans[0].spans[0].trace_id)
    correlate_traces(ids)
    minutes = RedRollup.objects.filter(service=service)
    hours = RedRollupHour.objects.filter(service=service)
    assert {row.environment for row in minutes} == {row.environment for row in hours} == {"staging"}
    assert len({row.minute for row in minutes}) == 4
    assert sorted({row.minute.timestamp() * 1e9 for row in hours}) == [base, base + hour]
    for start in (base, base + hour):
        in_hour = [row for row in minutes if start <= row.minute.timestamp() * 1e9 < start + hour]
        hourly = [row for row in hours if row.minute.timestamp() * 1e9 == start]
        assert sum(row.count for row in in_hour) == sum(row.count for row in hourly) == 6
        assert merge(*(row.histogram for row in in_hour)) == merge(*(row.histogram for row in hourly))
    # every span of trace_request is a root (no parent ids), so each is where a request entered
    assert all(row.entry for row in minutes)


def test_correlating_the_same_traces_twice_changes_nothing():
    service = f"twice-{os.urandom(4).hex()}"
    ids = [os.urandom(16) for _ in range(3)]
    for trace_id in ids:
        store(trace_request(service, spans=4, trace_id=trace_id))
    correlate_traces(ids)
    first = sorted((r.minute, r.operation, r.count, r.errors, tuple(sorted(r.histogram.items())))
                   for r in RedRollup.objects.filter(service=service))
    correlate_traces(ids)  # a worker killed after committing, its task delivered again
    again = sorted((r.minute, r.operation, r.count, r.errors, tuple(sorted(r.histogram.items())))
                   for r in RedRollup.objects.filter(service=service))
    assert first == again and sum(row[2] for row in first) == 12


def test_settling_hands_on_idle_traces_only_and_keeps_those_that_got_a_span(settings):
    settings.SETTLE_SECONDS = 1
    client = get_redis()
    client.delete(PENDING_TRACES_KEY)  # other tests' traces are not this test's business
    idle, busy = os.urandom(16).hex(), os.urandom(16).hex()
    client.zadd(PENDING_TRACES_KEY, {idle: time.time() - 5, busy: time.time()})
    handed = []
    settle.settle_once(client, handed.extend)
    assert idle in handed and busy not in handed
    assert client.zscore(PENDING_TRACES_KEY, idle) is None
    assert client.zscore(PENDING_TRACES_KEY, busy) is not None
    client.zrem(PENDING_TRACES_KEY, busy)


def test_after_redis_lost_its_data_pending_traces_are_rebuilt_from_recent_spans(settings):
    settings.SETTLE_SECONDS = 1
    client = get_redis()
    settle.settle_once(client, lambda ids: None)  # Redis seen whole now
    trace_id = os.urandom(16)
    store(trace_request(f"lost-{os.urandom(4).hex()}", spans=3, trace_id=trace_id))
    client.delete(PENDING_TRACES_KEY, settle.SENTINEL_KEY)  # what a Redis restart without persistence does
    handed = []
    settle.settle_once(client, handed.extend)  # recovers; the trace is not idle yet
    assert client.zscore(PENDING_TRACES_KEY, trace_id.hex()) is not None
    time.sleep(1.2)
    settle.settle_once(client, handed.extend)
    assert trace_id.hex() in handed


def test_percentiles_from_rollups_over_any_range_are_within_5_percent_of_exact():
    service = f"latency-{os.urandom(4).hex()}"
    rng = random.Random(7)
    durations = []
    start = time.time_ns() - 20 * 60 * 10**9
    ids = []
    for minute in range(20):  # 20 minutes of traffic, 50 single-span traces a minute
        for _ in range(50):
            duration = int(rng.lognormvariate(16, 1.2))  # ~ 9 ms median, long tail
            durations.append(duration)
            request = trace_request(service, spans=1, start_ns=start + minute * 60 * 10**9)
            span = request.resource_spans[0].scope_spans[0].spans[0]
            span.end_time_unix_nano = span.start_time_unix_nano + duration
            ids.append(span.trace_id)
            store(request)
    correlate_traces(ids[:500])
    correlate_traces(ids[500:])  # two workers' worth of chunks, merged in the rollup rows
    with connection.cursor() as cursor:
        cursor.execute("SELECT sightline_hist_sum(histogram) FROM sightline_red_rollup WHERE service = %s", [service])
        merged = {int(bucket): count for bucket, count in json.loads(cursor.fetchone()[0]).items()}
    ordered = sorted(durations)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[max(0, int(q * len(ordered) + 0.999999) - 1)]
        assert abs(analysis.quantile(merged, q) - exact) / exact < 0.05, q


def test_retention_drops_whole_old_partitions_and_keeps_recent_ones(settings):
    settings.RETENTION_DAYS_SPANS = 3
    now = dt.datetime.now(dt.timezone.utc)
    today = int(now.timestamp() // 86400)
    service = f"old-{os.urandom(4).hex()}"
    old_request = trace_request(service, spans=2, start_ns=(today - 5) * 86400 * 10**9 + 3600 * 10**9)
    from traces.partitions import ensure_partition

    ensure_partition("sightline_span", today - 5)
    writer.write_spans(convert.convert_traces(old_request))
    store(trace_request(service, spans=2))
    dropped = retention.run(now)
    assert partition_name("sightline_span", today - 5) in dropped
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM sightline_span WHERE service_name = %s", [service])
        assert cursor.fetchone()[0] == 2  # today's spans kept
        cursor.execute("SELECT to_regclass(%s)", [partition_name("sightline_span", today + 1)])
        assert cursor.fetchone()[0] is not None  # tomorrow's partition made ahead


def test_spans_are_loaded_by_index_even_without_statistics():
    """A new day's partition has no statistics until it is analysed; the planner then guessed a
    parallel sequential scan of the whole day for every chunk (54 s instead of 19 ms at 3.7 M
    spans). Correlation plans its trace-id lookups as index lookups whatever the statistics."""
    from django.db import transaction

    from traces.correlate import IDS, _LOAD_SPANS, lookups_by_trace_id

    ids = []
    for _ in range(3):
        request = trace_request(f"plan-{os.urandom(3).hex()}", spans=4)
        store(request)
        ids.append(request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex())
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'sightline_span'")
        for (partition,) in cursor.fetchall():  # forget what statistics there are
            cursor.execute("DELETE FROM pg_statistic WHERE starelid = %s::regclass", [partition])
        lookups_by_trace_id(cursor)
        cursor.execute("EXPLAIN (FORMAT JSON) " + _LOAD_SPANS.format(ids=IDS), [ids])
        plan = str(cursor.fetchall())
    assert "Seq Scan" not in plan and "Index" in plan


def test_retention_analyses_the_recent_partitions():
    store(trace_request(f"analyse-{os.urandom(3).hex()}", spans=3))
    retention.run()
    today = partition_name("sightline_span", int(time.time() // 86400))
    with connection.cursor() as cursor:
        cursor.execute("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = %s", [today])
        assert cursor.fetchone()[0] is not None


def test_a_database_named_only_by_the_newer_db_system_name_is_a_database_node():
    from tests.otlp_builders import spans_request
    from traces.models import EdgeRollup

    service, trace_id, now = f"newdb-{os.urandom(4).hex()}", os.urandom(16), time.time_ns()
    root, call = os.urandom(8), os.urandom(8)
    writer.write_spans(convert.convert_traces(spans_request([
        dict(service=service, name="GET /", kind=2, trace_id=trace_id, span_id=root,
             start_ns=now - 50_000_000, end_ns=now),
        dict(service=service, name="SELECT orders", kind=3, trace_id=trace_id, span_id=call, parent=root,
             start_ns=now - 40_000_000, end_ns=now - 10_000_000,
             attributes={"db.system.name": "postgresql", "db.namespace": "shop", "server.address": "db.internal"}),
    ])))
    correlate_traces([trace_id])
    edges = set(EdgeRollup.objects.filter(parent=service).values_list("child", "child_type"))
    assert edges == {("postgresql shop", "database")}

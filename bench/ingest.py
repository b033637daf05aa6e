"""Ingest benchmark: OTLP/gRPC spans/s sustained end to end, every span counted.

    .venv/bin/python bench/ingest.py [--duration 60] [--clients 8] [--processes 2] [--inflight 6]

1. Start PostgreSQL and Redis (DATABASE_URL / REDIS_URL if set, else embedded ones in a
   temporary directory), create a fresh database, migrate.
2. Start `manage.py ingest --processes N` on free loopback ports.
3. Each client process builds one 500-span request (25 traces x 20 spans, 8 string
   attributes per span) and, before the clock starts, copies of it with fresh trace ids
   (patched into the serialized bytes), so that while the clock runs it spends its CPU
   on sending only. For --duration seconds it sends them over OTLP/gRPC, recording each
   export's latency and whether it was acknowledged.
4. Count the rows stored; compare with the spans acknowledged.
5. In the same run, the machine's ceilings: protobuf decode rate, conversion rate, and
   PostgreSQL COPY rate of the same rows (one connection, no gRPC).
Prints a Markdown table; docs/benchmarks.md records results and method.
"""

import argparse
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPANS_PER_BATCH = 500
TRACES_PER_BATCH = 25


def build_template():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value="bench-svc"))
    resource_spans.resource.attributes.add(key="host.name", value=AnyValue(string_value="bench-host"))
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "bench"
    trace_ids = [os.urandom(16) for _ in range(TRACES_PER_BATCH)]
    start = time.time_ns()
    per_trace = SPANS_PER_BATCH // TRACES_PER_BATCH
    for t, trace_id in enumerate(trace_ids):
        parent = b""
        for s in range(per_trace):
            span_id = os.urandom(8)
            span = scope.spans.add(trace_id=trace_id, span_id=span_id, parent_span_id=parent,
                                   name=f"GET /api/item/{s % 7}", kind=2 if s == 0 else 3,
                                   start_time_unix_nano=start + s * 1000, end_time_unix_nano=start + s * 1000 + 2_500_000)
            for n in range(8):
                span.attributes.add(key=f"attribute.number.{n}", value=AnyValue(string_value=f"value-{n}-{s % 13}"))
            parent = parent or span_id
    return request.SerializeToString(), trace_ids


def fresh_ids(template, trace_ids):
    body = template
    for old in trace_ids:
        body = body.replace(old, os.urandom(16))
    return body


def client(address, duration, start_at, results, prepared):
    import grpc

    template, trace_ids = build_template()
    bodies = [fresh_ids(template, trace_ids) for _ in range(prepared)]
    channel = grpc.insecure_channel(address)
    export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                 request_serializer=None, response_deserializer=None)
    while time.time() < start_at:
        time.sleep(0.01)
    latencies, acknowledged, refused = [], 0, 0
    deadline = start_at + duration
    while time.time() < deadline:
        body = bodies.pop() if bodies else fresh_ids(template, trace_ids)
        began = time.perf_counter()
        try:
            export(body, timeout=30)
            acknowledged += SPANS_PER_BATCH
            latencies.append(time.perf_counter() - began)
        except grpc.RpcError:
            refused += 1
            time.sleep(0.05)
    channel.close()
    results.put((acknowledged, refused, latencies, time.time()))


def ceilings(database_url, seconds=3.0):
    """Single-core decode and conversion rates, and the COPY rate of the same rows."""
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from ingest import convert, writer

    template, trace_ids = build_template()

    def rate(fn):
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            fn()
            count += SPANS_PER_BATCH
        return count / (time.perf_counter() - began)

    decode = rate(lambda: ExportTraceServiceRequest.FromString(template))
    request = ExportTraceServiceRequest.FromString(template)
    conversion = rate(lambda: convert.convert_traces(request))

    batches = [convert.convert_traces(ExportTraceServiceRequest.FromString(fresh_ids(template, trace_ids)))
               for _ in range(int(seconds * 200))]
    from django.db import connection, transaction

    with connection.cursor() as cursor:
        writer._staging(cursor)
    began, written = time.perf_counter(), 0
    for batch in batches:  # COPY alone, into the staging table
        with transaction.atomic(), connection.cursor() as cursor:
            writer._copy(cursor, "stage_span", writer.SPAN_COLUMNS, batch.rows)
        written += len(batch.rows)
        if time.perf_counter() - began > seconds:
            break
    copy_rate = written / (time.perf_counter() - began)
    began, written = time.perf_counter(), 0
    for batch in batches:  # the whole write path: COPY + INSERT ... ON CONFLICT into the partitioned table
        writer.write_spans(batch)
        written += len(batch.rows)
        if time.perf_counter() - began > seconds:
            break
    write_rate = written / (time.perf_counter() - began)
    connection.close()
    return decode, conversion, copy_rate, write_rate


def prepare(database, **settings):
    """Servers (configured or embedded), a fresh migrated database, free ports: the env to run in."""
    import psycopg

    from config.embedded import free_port, start_missing

    workdir = Path(tempfile.mkdtemp(prefix="sightline-bench-"))
    env = dict(os.environ)
    servers = start_missing(workdir, env, log=lambda line: print(f"# {line}"))
    base_url = env["DATABASE_URL"].rsplit("/", 1)[0]
    database_url = f"{base_url}/{database}"
    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database}")
        conn.execute(f"CREATE DATABASE {database}")
    ports = [free_port() for _ in range(3)]
    env.update(DATABASE_URL=database_url, SIGHTLINE_DATA_DIR=str(workdir), SIGHTLINE_OTLP_GRPC_PORT=str(ports[0]),
               SIGHTLINE_OTLP_HTTP_PORT=str(ports[1]), SIGHTLINE_WEB_PORT=str(ports[2]),
               SIGHTLINE_LOG_LEVEL="WARNING", **settings)
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], env=env, cwd=ROOT, check=True)
    return env, servers, ports, database_url, workdir


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2, help="ingest processes")
    parser.add_argument("--inflight", type=int, default=6, help="SIGHTLINE_INGEST_MAX_INFLIGHT per process")
    args = parser.parse_args()

    import psutil
    import psycopg

    from config.embedded import stop_all

    env, servers, ports, database_url, workdir = prepare("sightline_bench", SIGHTLINE_INGEST_MAX_INFLIGHT=str(args.inflight))
    ingest = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "ingest", "--processes", str(args.processes)],
                              env=env, cwd=ROOT, start_new_session=True)
    try:
        time.sleep(4)
        results = multiprocessing.Queue()
        # Enough prepared requests for 100,000 spans/s in all; past that, clients patch on the fly.
        prepared = int(100_000 * args.duration / SPANS_PER_BATCH / args.clients) + 1
        start_at = time.time() + 5 + prepared * args.clients / 2000  # time to prepare them
        clients = [multiprocessing.Process(target=client, args=(f"127.0.0.1:{ports[0]}", args.duration, start_at,
                                                                results, prepared))
                   for _ in range(args.clients)]
        for proc in clients:
            proc.start()
        peak_rss = 0
        while time.time() < start_at + args.duration:
            for child in psutil.Process(ingest.pid).children(recursive=True) or [psutil.Process(ingest.pid)]:
                try:
                    peak_rss = max(peak_rss, child.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.5)
        outcomes = [results.get(timeout=120) for _ in clients]
        for proc in clients:
            proc.join(10)
        elapsed = max(outcome[3] for outcome in outcomes) - start_at
        acknowledged = sum(outcome[0] for outcome in outcomes)
        refused = sum(outcome[1] for outcome in outcomes)
        latencies = sorted(latency for outcome in outcomes for latency in outcome[2])
        with psycopg.connect(database_url) as conn:
            stored = conn.execute("SELECT count(*) FROM sightline_span").fetchone()[0]
    finally:
        os.killpg(ingest.pid, signal.SIGTERM)
        ingest.wait(20)
    decode, conversion, copy_rate, write_rate = ceilings(database_url)
    stop_all(servers)

    p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan")
    print("\n| measure | value |\n|---|---|")
    print(f"| setup | {args.clients} client processes, {args.processes} ingest processes, "
          f"in-flight limit {args.inflight}/process, {args.duration:.0f} s, {os.cpu_count()} cores |")
    print(f"| spans acknowledged | {acknowledged} |")
    print(f"| spans stored | {stored} ({'all acknowledged spans stored' if stored == acknowledged else 'MISMATCH'}) |")
    print(f"| exports refused (retryable) | {refused} |")
    print(f"| sustained end to end | {stored / elapsed:,.0f} spans/s |")
    print(f"| client export latency p50 / p99 | {p50:.1f} ms / {p99:.1f} ms |")
    print(f"| peak RSS of one ingest process | {peak_rss / 2**20:.0f} MiB |")
    print(f"| ceiling: protobuf decode, 1 core | {decode:,.0f} spans/s |")
    print(f"| ceiling: conversion to rows, 1 core | {conversion:,.0f} spans/s |")
    print(f"| ceiling: PostgreSQL COPY of the same rows, 1 connection | {copy_rate:,.0f} spans/s |")
    print(f"| ceiling: whole write path (COPY + INSERT ON CONFLICT), 1 connection | {write_rate:,.0f} spans/s |")


if __name__ == "__main__":
    main()

"""Query benchmark: the APIs over 10 million stored spans (24 hours of a small shop).

    .venv/bin/python bench/query.py [--traces 1000000] [--processes 2] [--runs 15] [--reuse]

1. Start PostgreSQL (DATABASE_URL if set, else an embedded one), create a fresh database
   `sightline_bench_query`, migrate. (--reuse: keep the database of the last run.)
2. Generate --traces traces of 10 spans each (8 services, a database, a cache, a queue;
   five entry routes; lognormal durations; 1 % failing at payment), start times spread
   evenly over the last 24 hours. They go through the real ingest path (OTLP protobuf ->
   ingest.convert -> ingest.writer COPY) and the real correlation (traces.correlate,
   chunks of 500 traces), in --processes processes.
3. VACUUM ANALYZE, then time each query --runs times in-process with Django's test client
   (server time: URL routing, auth, SQL, JSON; no network), after two warm-up runs, and
   print the median, p95 and max. docs/benchmarks.md records the results and method.
"""

import argparse
import datetime as dt
import multiprocessing
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATABASE = "sightline_bench_query"
CHUNK = 500  # traces per export request and per correlation task
DAY_NS = 86_400_000_000_000
ROUTES = ["GET /", "GET /product/{id}", "POST /cart", "POST /checkout", "GET /search"]

# (name, service, kind, parent index, start fraction, end fraction, attributes)
TOPOLOGY = [
    ("{route}", "frontend", 2, None, 0.00, 1.00, {}),
    ("GET", "frontend", 3, 0, 0.05, 0.40, {"peer.service": "cart"}),
    ("GET /cart", "cart", 2, 1, 0.07, 0.38, {"http.route": "/cart"}),
    ("HGET", "cart", 3, 2, 0.10, 0.15, {"db.system": "redis"}),
    ("POST", "frontend", 3, 0, 0.42, 0.95, {}),
    ("POST /checkout", "checkout", 2, 4, 0.44, 0.93, {"http.route": "/checkout"}),
    ("INSERT orders", "checkout", 3, 5, 0.46, 0.55, {"db.system": "postgresql", "db.name": "shop"}),
    ("POST /charge", "checkout", 3, 5, 0.57, 0.85, {}),
    ("POST /charge", "payment", 2, 7, 0.58, 0.84, {"http.route": "/charge"}),
    ("orders publish", "checkout", 4, 5, 0.86, 0.88, {"messaging.system": "kafka",
                                                      "messaging.destination.name": "orders"}),
]


def build_request(rng, first_index, count, total, now_ns):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    request = ExportTraceServiceRequest()
    scopes = {}
    for service in sorted({node[1] for node in TOPOLOGY}):
        resource_spans = request.resource_spans.add()
        for key, value in (("service.name", service), ("deployment.environment.name", "prod"),
                           ("host.name", f"{service}-1")):
            resource_spans.resource.attributes.add(key=key, value=AnyValue(string_value=value))
        scopes[service] = resource_spans.scope_spans.add()
        scopes[service].scope.name = "bench"
    trace_ids = []
    for index in range(first_index, first_index + count):
        trace_id = rng.randbytes(16)
        trace_ids.append(trace_id)
        start = now_ns - DAY_NS + index * (DAY_NS // total)
        duration = int(min(rng.lognormvariate(18.4, 0.5), 5e9))  # median ~ 100 ms
        failed = rng.random() < 0.01
        route = ROUTES[index % len(ROUTES)]
        span_ids = [rng.randbytes(8) for _ in TOPOLOGY]
        for position, (name, service, kind, parent, low, high, attributes) in enumerate(TOPOLOGY):
            span = scopes[service].spans.add(
                trace_id=trace_id, span_id=span_ids[position], name=name.format(route=route), kind=kind,
                start_time_unix_nano=start + int(duration * low), end_time_unix_nano=start + int(duration * high))
            if parent is not None:
                span.parent_span_id = span_ids[parent]
            for key, value in attributes.items():
                span.attributes.add(key=key, value=AnyValue(string_value=value))
            if kind == 2:
                code = 500 if failed and service in ("payment", "checkout", "frontend") else 200
                span.attributes.add(key="http.response.status_code", value=AnyValue(int_value=code))
            if position == 0:
                span.attributes.add(key="user.id", value=AnyValue(string_value=f"user-{rng.randrange(100_000)}"))
            if failed and service == "payment":
                span.status.code, span.status.message = 2, "card declined"
    return request, trace_ids


def generate(worker, workers, total, now_ns, progress):
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from ingest import convert, writer
    from traces.correlate import correlate_traces

    rng = random.Random(worker)
    for first in range(worker * CHUNK, total, workers * CHUNK):
        request, trace_ids = build_request(rng, first, min(CHUNK, total - first), total, now_ns)
        writer.write_spans(convert.convert_traces(request))
        correlate_traces(trace_ids)
        progress.put(len(trace_ids))


def timed(client, path, runs):
    for _ in range(2):
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.content[:300])
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200
    data = response.json().get("data")
    return times, len(data) if isinstance(data, list) else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=1_000_000, help="10 spans each")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--reuse", action="store_true", help="query the database of the last run")
    args = parser.parse_args()

    from bench.ingest import prepare
    from config.embedded import stop_all

    if args.reuse:
        base = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres").rsplit("/", 1)[0]
        env, servers = dict(os.environ, DATABASE_URL=f"{base}/{DATABASE}"), []
    else:
        env, servers, _, _, _ = prepare(DATABASE, SIGHTLINE_PUBLIC_READ="true")
    os.environ.update(DATABASE_URL=env["DATABASE_URL"], SIGHTLINE_PUBLIC_READ="true", SIGHTLINE_LOG_LEVEL="WARNING",
                      DJANGO_SETTINGS_MODULE="config.settings")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")  # settings want one; the queries do not use it
    try:
        if not args.reuse:
            began = time.time()
            now_ns = time.time_ns()
            progress = multiprocessing.Queue()
            workers = [multiprocessing.Process(target=generate, args=(w, args.processes, args.traces, now_ns, progress))
                       for w in range(args.processes)]
            for worker in workers:
                worker.start()
            done = 0
            while done < args.traces:
                done += progress.get(timeout=600)
                if done % 50_000 < CHUNK:
                    rate = done * len(TOPOLOGY) / (time.time() - began)
                    print(f"# {done:,} traces ({done * len(TOPOLOGY):,} spans) stored and correlated, "
                          f"{rate:,.0f} spans/s", flush=True)
            for worker in workers:
                worker.join()
            print(f"# generated {args.traces * len(TOPOLOGY):,} spans in {time.time() - began:.0f} s")
        import psycopg

        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            counts = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in (
                "sightline_span", "sightline_trace_summary", "sightline_red_rollup", "sightline_red_rollup_hour",
                "sightline_edge_rollup", "sightline_edge_rollup_hour", "sightline_critical_path_share")}
            size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
        for table, count in counts.items():
            print(f"# {table}: {count:,} rows")
        print(f"# database size: {size}")

        import django

        django.setup()
        from django.test import Client

        client = Client(HTTP_HOST="localhost")
        # Every range ends where the data ends (a --reuse run may come hours after the data was made).
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT max(start_time) FROM sightline_trace_summary")
            data_end = cursor.fetchone()[0] + dt.timedelta(seconds=1)
        end_ms = int(data_end.timestamp() * 1000)
        day = f"lookback=24h&end={end_ms}"
        hour = f"lookback=1h&end={end_ms}"
        trace = client.get(f"/api/v1/traces?service=payment&status=error&{day}&limit=1").json()["data"][0]
        queries = [
            ("/api/v1/services, 24 h", f"/api/v1/services?{day}"),
            ("/api/v1/dependencies, 24 h", f"/api/v1/dependencies?{day}"),
            ("/api/v1/traces?service=payment, 24 h", f"/api/v1/traces?service=payment&{day}"),
            ("/api/v1/traces?service=cart, status=error, 24 h", f"/api/v1/traces?service=cart&status=error&{day}"),
            ("/api/v1/traces, service+operation+attr, 1 h",
             f"/api/v1/traces?service=payment&operation=POST%20/charge&attr.http.response.status_code=500&{hour}"),
            ("/api/v1/services/checkout/operations, 24 h", f"/api/v1/services/checkout/operations?{day}"),
            ("/api/v1/services, 1 h", f"/api/v1/services?{hour}"),
            ("/api/v1/hotspots?service=checkout, 1 h", f"/api/v1/hotspots?service=checkout&{hour}"),
            ("/api/v1/hotspots?service=checkout, 24 h", f"/api/v1/hotspots?service=checkout&{day}"),
            ("/api/v1/traces/{id}", f"/api/v1/traces/{trace['trace_id']}"),
            ("/api/services (Jaeger)", "/api/services"),
            ("/api/traces?service=payment (Jaeger), 1 h",
             f"/api/traces?service=payment&lookback=1h&end={end_ms * 1000}&limit=20"),
            ("/api/dependencies (Jaeger), 24 h", f"/api/dependencies?lookback=86400000&endTs={end_ms}"),
        ]
        print(f"\n{counts['sightline_span']:,} spans; {args.runs} runs per query after 2 warm-ups\n")
        print("| query | rows | median ms | p95 ms | max ms |")
        print("|---|---:|---:|---:|---:|")
        for label, path in queries:
            try:
                times, rows = timed(client, path, args.runs)
            except AssertionError as exc:
                print(f"| {label} | failed: {exc} | | | |")
                continue
            times.sort()
            p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
            print(f"| {label} | {rows} | {statistics.median(times):.1f} | {p95:.1f} | {times[-1]:.1f} |", flush=True)
        time_pages(args.runs, trace["trace_id"], data_end)
    finally:
        stop_all(servers)


def time_pages(runs, trace_id, data_end):
    """The dashboard pages as a logged-in user gets them (server time, as above), over ranges
    that end where the data ends."""
    from django.contrib.auth.models import User
    from django.test import Client

    user, _ = User.objects.get_or_create(username="bench")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    end = (data_end + dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
    hour = f"start={(data_end - dt.timedelta(hours=1)).strftime('%Y-%m-%dT%H:%M')}&end={end}"
    day = f"start={(data_end - dt.timedelta(hours=24)).strftime('%Y-%m-%dT%H:%M')}&end={end}"
    pages = [
        ("services overview, 1 h", f"/?{hour}"),
        ("services overview, 24 h", f"/?{day}"),
        ("service map, 1 h", f"/map/?{hour}"),
        ("service map, 24 h", f"/map/?{day}"),
        ("service page checkout, 1 h", f"/services/checkout/?{hour}"),
        ("service page checkout, 24 h", f"/services/checkout/?{day}"),
        ("trace search payment, 1 h", f"/traces/?service=payment&{hour}"),
        ("trace search payment errors, 24 h", f"/traces/?service=payment&errors=1&{day}"),
        ("trace view (10 spans)", f"/traces/{trace_id}/"),
        ("metrics explorer", "/explore/metrics/"),
    ]
    print(f"\nDashboard pages; {runs} runs per page after 2 warm-ups\n")
    print("| page | median ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|")
    for label, path in pages:
        response = client.get(path)
        if response.status_code != 200:
            print(f"| {label} | HTTP {response.status_code} | | |")
            continue
        client.get(path)
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            client.get(path)
            times.append((time.perf_counter() - began) * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        print(f"| {label} | {statistics.median(times):.1f} | {p95:.1f} | {times[-1]:.1f} |", flush=True)


if __name__ == "__main__":
    main()

"""Correlation benchmark: does correlation keep up with ingest, and how far behind is it?

    .venv/bin/python bench/correlation.py [--rate 10000] [--duration 60] [--workers 2]

1. Start PostgreSQL and Redis (DATABASE_URL / REDIS_URL if set, else embedded), a fresh
   database, then ingest (2 processes), a Celery worker and beat, as `serve` would.
2. Clients send 500-span requests (25 traces x 20 spans) over OTLP/gRPC at a steady --rate
   spans/s for --duration seconds.
3. Then wait until every trace is summarised (or 120 s), and measure from the database:
   - correlation throughput: spans in traces summarised per second, over the run;
   - lag per trace: summary written - last span of the trace stored (p50, p99);
   - the settle window is part of the lag by design (SIGHTLINE_SETTLE_SECONDS, default 10).
"""

import argparse
import importlib.util
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("bench_ingest", ROOT / "bench" / "ingest.py")
bench_ingest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_ingest)


def steady_client(address, rate, duration, start_at, results):
    import grpc

    template, trace_ids = bench_ingest.build_template()
    export = grpc.insecure_channel(address).unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    interval = bench_ingest.SPANS_PER_BATCH / rate
    bodies = [bench_ingest.fresh_ids(template, trace_ids) for _ in range(int(duration / interval) + 2)]
    while time.time() < start_at:
        time.sleep(0.01)
    sent, next_at = 0, start_at
    while time.time() < start_at + duration and bodies:
        try:
            export(bodies.pop(), timeout=30)
            sent += bench_ingest.SPANS_PER_BATCH
        except grpc.RpcError:
            pass
        next_at += interval
        time.sleep(max(0.0, next_at - time.time()))
    results.put(sent)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=10_000, help="spans/s sent, in all")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="Celery worker concurrency")
    args = parser.parse_args()

    import psycopg

    from config.embedded import stop_all

    env, servers, ports, database_url, workdir = bench_ingest.prepare(
        "sightline_bench_correlation", SIGHTLINE_WORKER_CONCURRENCY=str(args.workers))
    import redis

    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    manage = [sys.executable, str(ROOT / "manage.py")]
    processes = [
        subprocess.Popen(manage + ["ingest", "--processes", "2"], env=env, cwd=ROOT, start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "WARNING",
                          "--concurrency", str(args.workers)], env=env, cwd=ROOT, start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "WARNING",
                          "--schedule", str(workdir / "beat")], env=env, cwd=ROOT, start_new_session=True),
    ]
    try:
        time.sleep(6)
        results = multiprocessing.Queue()
        start_at = time.time() + 5
        clients = [multiprocessing.Process(target=steady_client, args=(f"127.0.0.1:{ports[0]}", args.rate / args.clients,
                                                                       args.duration, start_at, results))
                   for _ in range(args.clients)]
        for proc in clients:
            proc.start()
        sent = sum(results.get(timeout=args.duration + 120) for _ in clients)
        ingest_end = time.time()
        with psycopg.connect(database_url, autocommit=True) as conn:
            deadline = time.time() + 120
            while time.time() < deadline:
                stored_traces = conn.execute("SELECT count(DISTINCT trace_id) FROM sightline_span").fetchone()[0]
                summarised = conn.execute("SELECT count(*), coalesce(sum(span_count), 0) "
                                          "FROM sightline_trace_summary").fetchone()
                if summarised[0] >= stored_traces:
                    break
                time.sleep(1)
            drained = time.time()
            lag = conn.execute("""
                SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)
                FROM (SELECT extract(epoch FROM s.correlated_at - max(sp.received_at)) AS lag
                      FROM sightline_trace_summary s JOIN sightline_span sp ON sp.trace_id = s.trace_id
                      GROUP BY s.trace_id, s.correlated_at) AS lags""").fetchone()
            first, last = conn.execute(
                "SELECT (SELECT extract(epoch FROM min(received_at)) FROM sightline_span), "
                "(SELECT extract(epoch FROM max(correlated_at)) FROM sightline_trace_summary)").fetchone()
            rollup_spans = conn.execute("SELECT coalesce(sum(count), 0) FROM sightline_red_rollup").fetchone()[0]
    finally:
        for proc in processes:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in processes:
            proc.wait(30)
        stop_all(servers)

    settle = int(os.environ.get("SIGHTLINE_SETTLE_SECONDS") or 10)
    print("\n| measure | value |\n|---|---|")
    print(f"| setup | {args.clients} clients at {args.rate:,} spans/s in all for {args.duration:.0f} s; "
          f"ingest 2 processes; worker concurrency {args.workers}; settle {settle} s; {os.cpu_count()} cores |")
    print(f"| spans sent and acknowledged | {sent:,} |")
    print(f"| traces stored / summarised | {stored_traces:,} / {summarised[0]:,} |")
    print(f"| spans in RED rollups | {rollup_spans:,} |")
    print(f"| correlation throughput (spans summarised / (last summary - first span stored)) | "
          f"{summarised[1] / (float(last) - float(first)):,.0f} spans/s |")
    print(f"| backlog drained after ingest stopped | {drained - ingest_end:.1f} s |")
    print(f"| lag, last span stored -> trace in rollups: p50 / p99 | {lag[0]:.1f} s / {lag[1]:.1f} s "
          f"(target p99 < settle + 5 = {settle + 5} s) |")


if __name__ == "__main__":
    main()

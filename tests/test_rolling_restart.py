"""Ingest stopped with SIGTERM: it drains, and a rolling restart loses nothing acknowledged.

1. Requests in flight at SIGTERM, on both protocols, are finished and answered (held
   deterministically behind a table lock), new ones are refused, idle keep-alive
   connections do not hold the exit; what is still running when the grace is over is not
   answered, so its sender retries.
2. A rolling restart under steady load: the real OpenTelemetry SDK exporters (gRPC and
   HTTP, a few threads each) send batches of spans with unique ids and record which came
   back SUCCESS; ingest is sent SIGTERM while requests are in flight (the writes held a
   moment behind a table lock, so that some certainly are), must exit 0 within the grace,
   and is started again on the same ports while the exporters keep sending and retrying,
   three times over. Every span of every SUCCESS batch is stored, exactly once.
"""

import http.client
import os
import re
import signal
import socket
import threading
import time
import uuid

import grpc
import psycopg
import pytest
from django.conf import settings
from django.db import connection
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from tests.conftest import database_url, free_ports, sightline_env
from tests.otlp_builders import trace_request, trace_stub
from tests.processes import Proc, grpc_serving, manage, wait_until
from traces.models import Span

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

GRACE = 10  # SIGHTLINE_SHUTDOWN_GRACE_SECONDS for the ingest processes under test
RESTARTS = 3
BATCH = 300  # spans per export: big enough that requests are in flight when SIGTERM comes
SENDERS = {"grpc": 2, "http": 2}  # exporter threads per protocol
SCOPE = InstrumentationScope("rolling-restart", "1")


# --- requests in flight at SIGTERM --------------------------------------------------------

class WritesHeld:
    """A transaction holding the resource table locked: every ingest write waits behind it."""

    def __init__(self):
        self.connection = psycopg.connect(database_url())
        self.connection.execute("LOCK TABLE sightline_resource IN EXCLUSIVE MODE")

    @staticmethod
    def waiting():
        """How many database sessions wait for a lock (the held writes)."""
        with psycopg.connect(database_url(), autocommit=True) as other:
            return other.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock'").fetchone()[0]

    def release(self):
        self.connection.rollback()
        self.connection.close()


def sdk_spans(service, count=3):
    resource = Resource.create({"service.name": service})
    trace_id, now = uuid.uuid4().int, time.time_ns()
    return [ReadableSpan(name="held", context=SpanContext(trace_id, index + 1, is_remote=False),
                         resource=resource, start_time=now, end_time=now + 1000, instrumentation_scope=SCOPE)
            for index in range(count)]


def post_traces(connection, request):
    """POST on a kept-alive connection; (status, Connection header) of the answer."""
    connection.request("POST", "/v1/traces", body=request.SerializeToString(),
                       headers={"Content-Type": "application/x-protobuf"})
    response = connection.getresponse()
    response.read()
    return response.status, response.getheader("Connection")


def in_thread(results, key, function, *args):
    def run():
        try:
            results[key] = function(*args)
        except Exception as exc:  # recorded: the test asserts on it
            results[key] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_requests_in_flight_at_sigterm_are_finished_and_answered_and_new_ones_refused(start_ingest):
    ingest = start_ingest(SIGHTLINE_SHUTDOWN_GRACE_SECONDS="10")
    ports, proc = ingest["ports"], ingest["proc"]
    service = f"drain-{uuid.uuid4().hex[:8]}"
    idle = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=10)
    assert post_traces(idle, trace_request(service)) == (200, None)  # kept alive, idle from now on
    held = WritesHeld()
    results, threads = {}, []
    try:
        exporter = GrpcSpanExporter(endpoint=ingest["grpc"], insecure=True, timeout=20)
        spans = sdk_spans(service)
        threads.append(in_thread(results, "grpc", exporter.export, spans))
        busy = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=20)
        http_request = trace_request(service, spans=5)
        threads.append(in_thread(results, "http", post_traces, busy, http_request))
        wait_until(lambda: WritesHeld.waiting() >= 2, 20, "both exports waiting for their write", proc)
        slow_request = trace_request(service, spans=4)
        body = slow_request.SerializeToString()
        slow = socket.create_connection(("127.0.0.1", ports["http"]), timeout=20)
        slow.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:50])  # the rest comes after SIGTERM

        proc.proc.send_signal(signal.SIGTERM)
        proc.wait_for_line("stopping: 2 export requests in flight", timeout=10)
        time.sleep(0.5)
        assert proc.proc.poll() is None, "ingest exited with requests in flight"
        slow.sendall(body[50:])
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", ports["http"]), timeout=2).close()
        with grpc.insecure_channel(ingest["grpc"]) as channel, pytest.raises(grpc.RpcError) as refused:
            trace_stub(channel).Export(trace_request(service), timeout=3)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        released = time.monotonic()
        held.release()
    code = proc.proc.wait(10)
    took = time.monotonic() - released
    for thread in threads:
        thread.join(10)
    exporter.shutdown()

    assert code == 0, proc.output[-3000:]
    assert took < 3, f"ingest took {took:.1f} s to exit once the writes went through (idle connection held it?)"
    assert results == {"grpc": SpanExportResult.SUCCESS, "http": (200, "close")}
    answer = http.client.HTTPResponse(slow)
    answer.begin()
    assert (answer.status, answer.getheader("Connection")) == (200, "close")
    assert idle.sock.recv(1) == b"", "the idle keep-alive connection was not closed"
    trace_id = spans[0].context.trace_id.to_bytes(16, "big")
    assert Span.objects.filter(trace_id=trace_id).count() == 3
    for request, count in ((http_request, 5), (slow_request, 4)):
        assert Span.objects.filter(trace_id=request.resource_spans[0].scope_spans[0].spans[0].trace_id).count() == count
    assert "stopped: every request answered" in proc.output


def test_requests_still_running_after_the_grace_are_not_answered_and_ingest_exits(start_ingest):
    ingest = start_ingest(SIGHTLINE_SHUTDOWN_GRACE_SECONDS="2")
    ports, proc = ingest["ports"], ingest["proc"]
    service = f"stuck-{uuid.uuid4().hex[:8]}"
    request = trace_request(service, spans=4)
    trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id
    held = WritesHeld()
    results = {}
    try:
        with grpc.insecure_channel(ingest["grpc"]) as channel:
            threads = [in_thread(results, "grpc", trace_stub(channel).Export, request, 20),
                       in_thread(results, "http", post_traces,
                                 http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=20), request)]
            wait_until(lambda: WritesHeld.waiting() >= 2, 20, "both exports waiting for their write", proc)
            sent = time.monotonic()
            proc.proc.send_signal(signal.SIGTERM)
            code = proc.proc.wait(10)
            took = time.monotonic() - sent
            for thread in threads:
                thread.join(10)
    finally:
        held.release()

    assert code == 1 and took < 2 + 2, (code, took, proc.output[-3000:])
    assert "stopped after the grace of 2 s: 2 export requests still running" in proc.output
    assert isinstance(results["grpc"], grpc.RpcError)  # never an OK for what was not committed
    assert isinstance(results["http"], (http.client.HTTPException, ConnectionError)), results["http"]
    wait_until(lambda: WritesHeld.waiting() == 0, 10, "the abandoned writes rolled back")
    assert Span.objects.filter(trace_id=trace_id).count() == 0


def test_with_several_processes_sigterm_to_the_parent_drains_every_receiver(start_ingest):
    ingest = start_ingest(args=("--processes", "2"), SIGHTLINE_SHUTDOWN_GRACE_SECONDS="10")
    proc = ingest["proc"]
    wait_until(lambda: len(proc.descendants()) == 2, 30, "two receiver processes", proc)
    children = proc.descendants()
    service = f"many-{uuid.uuid4().hex[:8]}"
    held = WritesHeld()
    results, threads, requests = {}, [], []
    try:
        for index in range(4):  # on four connections: the kernel spreads them over both
            requests.append(trace_request(service, spans=2))
            connection = http.client.HTTPConnection("127.0.0.1", ingest["ports"]["http"], timeout=20)
            threads.append(in_thread(results, index, post_traces, connection, requests[-1]))
        wait_until(lambda: WritesHeld.waiting() >= 4, 20, "four exports waiting for their write", proc)
        proc.proc.send_signal(signal.SIGTERM)  # the parent only, as serve and container runtimes do
        wait_until(lambda: proc.output.count("stopping:") == 2, 10, "both receivers draining", proc)
        time.sleep(0.5)
        assert proc.proc.poll() is None
    finally:
        held.release()
    assert proc.proc.wait(15) == 0, proc.output[-3000:]
    for thread in threads:
        thread.join(10)
    assert results == {index: (200, "close") for index in range(4)}
    assert not any(child.is_running() and child.status() != "zombie" for child in children)
    for request in requests:
        assert Span.objects.filter(trace_id=request.resource_spans[0].scope_spans[0].spans[0].trace_id).count() == 2


# --- a rolling restart under load ---------------------------------------------------------

class Load:
    """Exporter threads sending batches until stopped; each batch is recorded with its result."""

    def __init__(self, ports, service):
        self.resource = Resource.create({"service.name": service})
        self.ports = ports
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.batches = []  # (protocol, [(trace_id, span_id)], SpanExportResult, finished_at)
        self.threads = [threading.Thread(target=self._send, args=(protocol,), daemon=True, name=f"load-{protocol}")
                        for protocol, count in SENDERS.items() for _ in range(count)]

    def _exporter(self, protocol):
        if protocol == "grpc":
            return GrpcSpanExporter(endpoint=f"127.0.0.1:{self.ports['grpc']}", insecure=True, timeout=10)
        return HttpSpanExporter(endpoint=f"http://127.0.0.1:{self.ports['http']}/v1/traces", timeout=10)

    def _batch(self):
        trace_id = uuid.uuid4().int
        now = time.time_ns()
        spans, ids = [], []
        for index in range(BATCH):
            span_id = int.from_bytes(os.urandom(8), "big") or 1
            context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
            spans.append(ReadableSpan(name=f"op-{index % 8}", context=context, resource=self.resource,
                                      kind=SpanKind.INTERNAL, start_time=now + index, end_time=now + 10**6,
                                      attributes={"index": index}, instrumentation_scope=SCOPE))
            ids.append((trace_id.to_bytes(16, "big"), span_id.to_bytes(8, "big")))
        return spans, ids

    def _send(self, protocol):
        exporter = self._exporter(protocol)
        try:
            while not self.stopping.is_set():
                spans, ids = self._batch()
                result = exporter.export(spans)
                with self.lock:
                    self.batches.append((protocol, ids, result, time.monotonic()))
                time.sleep(0.01)
        finally:
            exporter.shutdown()

    def start(self):
        for thread in self.threads:
            thread.start()

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)

    def flowing_since(self, moment, batches=5):
        """Whether each protocol has had `batches` accepted since moment."""
        with self.lock:
            accepted = [protocol for protocol, _, result, at in self.batches
                        if result == SpanExportResult.SUCCESS and at > moment]
        return all(accepted.count(protocol) >= batches for protocol in SENDERS)


def start_ingest(env, ports):
    proc = Proc(manage("ingest"), env=env)
    wait_until(lambda: grpc_serving(ports["grpc"]), 60, "ingest gRPC health", proc)
    return proc


def stored_counts(service):
    with connection.cursor() as cursor:
        cursor.execute("SELECT trace_id, span_id, count(*) FROM sightline_span WHERE service_name = %s "
                       "GROUP BY trace_id, span_id", [service])
        return {(bytes(trace_id), bytes(span_id)): count for trace_id, span_id, count in cursor.fetchall()}


def in_flight_at_stop(proc):
    """What the stopping process logged: requests being exported and HTTP connections open."""
    match = re.search(r"stopping: (\d+) export requests in flight", proc.output)
    assert match, f"no 'stopping' line in the ingest log:\n{proc.output[-3000:]}"
    return int(match.group(1))


def test_a_rolling_restart_under_load_stores_every_span_the_exporters_were_told_was_accepted(tmp_path):
    started = time.monotonic()
    ports = free_ports()
    service = f"rolling-{uuid.uuid4().hex[:8]}"
    env = sightline_env(ports, tmp_path / "ingest", DATABASE_URL=database_url(),
                        REDIS_URL=settings.SIGHTLINE_REDIS_URL,
                        SIGHTLINE_SHUTDOWN_GRACE_SECONDS=str(GRACE), SIGHTLINE_INGEST_MAX_INFLIGHT="32")
    ingest = start_ingest(env, ports)
    load = Load(ports, service)
    load.start()
    stops = []  # (seconds to exit, requests in flight at SIGTERM)
    try:
        for _ in range(RESTARTS):
            since = time.monotonic()
            wait_until(lambda: load.flowing_since(since), 30, "exports accepted by this ingest", ingest)
            # Requests certainly in flight at SIGTERM: hold the writes a moment, as a slow disk would.
            held = WritesHeld()
            try:
                wait_until(lambda: WritesHeld.waiting() >= 2, 10, "exports in flight", ingest)
                sent_at = time.monotonic()
                ingest.proc.send_signal(signal.SIGTERM)
                time.sleep(0.3)
            finally:
                held.release()
            code = ingest.proc.wait(GRACE + 10)
            took = time.monotonic() - sent_at
            assert code == 0, f"ingest exited with {code}:\n{ingest.output[-3000:]}"
            assert took < GRACE, f"ingest took {took:.1f} s to stop:\n{ingest.output[-3000:]}"
            stops.append((round(took, 2), in_flight_at_stop(ingest)))
            ingest = start_ingest(env, ports)  # same ports: the exporters' retries find it
        since = time.monotonic()
        wait_until(lambda: load.flowing_since(since), 30, "exports accepted after the last restart", ingest)
    finally:
        load.stop()
        ingest.stop()

    stored = stored_counts(service)
    accepted = [ids for _, ids, result, _ in load.batches if result == SpanExportResult.SUCCESS]
    failed = [protocol for protocol, _, result, _ in load.batches if result != SpanExportResult.SUCCESS]
    lost = [span for ids in accepted for span in ids if span not in stored]
    twice = {span: count for span, count in stored.items() if count != 1}
    by_protocol = {protocol: sum(1 for p, _, r, _ in load.batches if p == protocol and r == SpanExportResult.SUCCESS)
                   for protocol in SENDERS}
    print(f"\nrolling restart: {len(accepted)} batches ({len(accepted) * BATCH} spans) accepted {by_protocol}, "
          f"{len(failed)} failed ({', '.join(sorted(set(failed))) or 'none'}), {len(stored)} spans stored; "
          f"stops (seconds, requests in flight): {stops}; {time.monotonic() - started:.1f} s in all")
    assert lost == [], f"{len(lost)} spans of accepted batches are missing"
    assert twice == {}, f"{len(twice)} spans stored more than once"
    assert all(by_protocol.values()), by_protocol
    assert all(in_flight >= 2 for _, in_flight in stops), stops

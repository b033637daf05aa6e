"""OTLP/HTTP against the live ingest process, checked in PostgreSQL field by field.

The Python SDK's own HTTP exporters send protobuf; the published OTLP/JSON examples
are posted as they are; hand-made requests cover gzip, chunked bodies, limits and the
error answers.
"""

import gzip
import zlib
import http.client
import json
import os
import socket
import uuid

import psutil
import pytest
from django.conf import settings
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest, ExportMetricsServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric as MetricProto
from opentelemetry.proto.metrics.v1.metrics_pb2 import NumberDataPoint, ResourceMetrics, ScopeMetrics
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceProto
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span as SpanProto
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

from config.embedded import EmbeddedRedis
from ingest import otlp_json
from tests.conftest import SHARED_DATA, database_url, free_ports, sightline_env
from tests.processes import Proc, grpc_serving, manage, wait_until
from traces.models import Metric, MetricPoint, MetricType, Resource, Scope, Span, Temporality

pytestmark = pytest.mark.django_db(transaction=True)

PROTOBUF, JSON = "application/x-protobuf", "application/json"
EXAMPLES = SHARED_DATA / "otlp-examples"
T0 = 1_763_000_000_000_000_000  # fixed times make nanosecond checks exact
SMALL_LIMIT = 1024  # the smallest SIGHTLINE_INGEST_MAX_BODY_BYTES allowed
TOKEN = "s3cret-ingest-token"


def http_port(server):
    return server["ports"]["http"]


def post(port, path, body, content_type=PROTOBUF, method="POST", **headers):
    """One request on a fresh connection; returns (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        headers = {"Content-Type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def raw_exchange(port, data):
    """Send data as is, close our side, and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def trace_request(service, count=1, trace_id=None):
    """A request with `count` spans of one new trace; returns (request, trace_id)."""
    trace_id = trace_id or os.urandom(16)
    spans = [SpanProto(trace_id=trace_id, span_id=(index + 1).to_bytes(8, "big"), name=f"op-{index}",
                       kind=SpanProto.SPAN_KIND_INTERNAL, start_time_unix_nano=T0 + index,
                       end_time_unix_nano=T0 + 10**6)
             for index in range(count)]
    resource = ResourceProto(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=resource,
                                                                   scope_spans=[ScopeSpans(spans=spans)])]), trace_id


def stored(trace_id):
    return Span.objects.filter(trace_id=trace_id).count()


# --- the Python SDK's HTTP exporters ----------------------------------------------------

def record_trace(service):
    """Two spans made by the SDK, kept in memory; returns them and the ids to look for."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": service, "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("shop.http", "3.2.1")
    root = tracer.start_span("POST /pay", kind=SpanKind.SERVER, start_time=T0, attributes={
        "text": "yes", "flag": True, "count": 7, "ratio": 0.5,
        "texts": ["a", "b"], "flags": [True, False], "counts": [1, 2], "ratios": [1.5, 2.5]})
    root.add_event("validated", {"fields": 4, "ok": True}, timestamp=T0 + 1_000)
    child = tracer.start_span("INSERT payment", kind=SpanKind.CLIENT, start_time=T0 + 2_000,
                              context=set_span_in_context(root), links=[Link(root.get_span_context(), {"why": "x"})])
    child.set_status(Status(StatusCode.ERROR, "deadlock"))
    child.end(end_time=T0 + 500_000_123)
    root.set_status(Status(StatusCode.OK))
    root.end(end_time=T0 + 1_000_000_007)
    context = root.get_span_context()
    return memory.get_finished_spans(), context.trace_id.to_bytes(16, "big"), context.span_id.to_bytes(8, "big")


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip], ids=["plain", "gzip"])
def test_spans_from_the_python_http_exporter_are_stored_field_by_field(ingest_server, compression):
    service = f"http-{uuid.uuid4().hex[:8]}"
    spans, trace_id, root_id = record_trace(service)
    exporter = OTLPSpanExporter(endpoint=f"{ingest_server['http']}/v1/traces", compression=compression)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()

    rows = {row.name: row for row in Span.objects.filter(trace_id=trace_id)}
    assert set(rows) == {"POST /pay", "INSERT payment"}
    root, child = rows["POST /pay"], rows["INSERT payment"]
    assert bytes(root.span_id) == root_id and root.parent_span_id is None
    assert (root.kind, root.status_code, root.service_name) == (2, 1, service)
    assert (root.start_ns, root.end_ns, root.duration_ns) == (T0, T0 + 1_000_000_007, 1_000_000_007)
    assert root.attributes == {"text": "yes", "flag": True, "count": 7, "ratio": 0.5, "texts": ["a", "b"],
                               "flags": [True, False], "counts": [1, 2], "ratios": [1.5, 2.5]}
    assert root.events == [{"time_unix_nano": T0 + 1_000, "name": "validated",
                            "attributes": {"fields": 4, "ok": True}, "dropped_attributes_count": 0}]

    assert bytes(child.parent_span_id) == root_id and bytes(child.trace_id) == trace_id
    assert (child.kind, child.start_ns, child.end_ns) == (3, T0 + 2_000, T0 + 500_000_123)
    assert (child.status_code, child.status_message) == (2, "deadlock")
    [link] = child.links
    assert (link["trace_id"], link["span_id"], link["attributes"]) == (trace_id.hex(), root_id.hex(), {"why": "x"})

    resource = Resource.objects.get(id=root.resource_id)
    assert resource.service_name == service
    assert resource.attributes["deployment.environment"] == "test"
    assert resource.attributes["telemetry.sdk.language"] == "python"
    scope = Scope.objects.get(id=root.scope_id)
    assert (scope.name, scope.version) == ("shop.http", "3.2.1")


def test_a_counter_and_a_histogram_from_the_python_http_exporter_are_stored(ingest_server):
    service = f"http-metrics-{uuid.uuid4().hex[:8]}"
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=SdkResource.create({"service.name": service}), metric_readers=[reader])
    meter = provider.get_meter("shop.meter", "0.9")
    meter.create_counter("payments", unit="{payment}", description="payments taken").add(3, {"card": "visa"})
    latency = meter.create_histogram("pay.latency", unit="ms")
    latency.record(40.0)
    latency.record(300.0)
    exporter = OTLPMetricExporter(endpoint=f"{ingest_server['http']}/v1/metrics")
    assert exporter.export(reader.get_metrics_data()) == MetricExportResult.SUCCESS
    exporter.shutdown()
    provider.shutdown()

    metrics = {metric.name: metric for metric in Metric.objects.filter(service_name=service)}
    assert set(metrics) == {"payments", "pay.latency"}
    payments = metrics["payments"]
    assert (payments.type, payments.temporality, payments.is_monotonic) == (
        MetricType.SUM, Temporality.CUMULATIVE, True)
    assert (payments.unit, payments.description) == ("{payment}", "payments taken")
    [point] = MetricPoint.objects.filter(metric_id=payments.id)
    assert (point.value_int, point.value_double, point.attributes) == (3, None, {"card": "visa"})
    assert 0 < point.start_time_ns <= point.time_ns

    assert (metrics["pay.latency"].type, metrics["pay.latency"].unit) == (MetricType.HISTOGRAM, "ms")
    [hist] = MetricPoint.objects.filter(metric_id=metrics["pay.latency"].id)
    assert (hist.count, hist.sum, hist.min, hist.max) == (2, 340.0, 40.0, 300.0)
    bounds, counts = hist.explicit_bounds, hist.bucket_counts
    assert len(counts) == len(bounds) + 1 and sum(counts) == 2
    assert counts[bounds.index(50.0)] == 1 and counts[bounds.index(500.0)] == 1  # 25 < 40 <= 50, 250 < 300 <= 500
    assert Scope.objects.get(id=payments.scope_id).version == "0.9"


# --- the published OTLP/JSON examples -----------------------------------------------------

def test_the_published_json_trace_example_is_stored_field_by_field(ingest_server):
    status, headers, body = post(http_port(ingest_server), "/v1/traces", (EXAMPLES / "trace.json").read_bytes(), JSON)
    assert (status, headers["Content-Type"]) == (200, JSON)
    assert "partialSuccess" not in json.loads(body)

    span = Span.objects.get(trace_id=bytes.fromhex("5b8efff798038103d269b633813fc60c"))
    assert (bytes(span.span_id).hex(), bytes(span.parent_span_id).hex()) == ("eee19b7ec3c1b174", "eee19b7ec3c1b173")
    assert (span.name, span.kind, span.status_code) == ("I'm a server span", 2, 0)
    assert (span.start_ns, span.end_ns, span.duration_ns) == (1544712660000000000, 1544712661000000000, 10**9)
    assert span.start_time.year == 2018
    assert span.attributes == {"my.span.attr": "some value"}
    assert (span.events, span.links, span.service_name) == ([], [], "my.service")
    resource = Resource.objects.get(id=span.resource_id)
    assert (resource.service_name, resource.attributes) == ("my.service", {"service.name": "my.service"})
    scope = Scope.objects.get(id=span.scope_id)
    assert (scope.name, scope.version, scope.attributes) == (
        "my.library", "1.0.0", {"my.scope.attribute": "some scope attribute"})


def test_the_published_json_metrics_example_is_stored_field_by_field(ingest_server):
    status, _, body = post(http_port(ingest_server), "/v1/metrics", (EXAMPLES / "metrics.json").read_bytes(), JSON)
    assert (status, json.loads(body)) == (200, {})

    metrics = {metric.name: metric for metric in Metric.objects.filter(service_name="my.service")}
    assert {name: metrics[name].type for name in metrics if name.startswith("my.")} == {
        "my.counter": MetricType.SUM, "my.gauge": MetricType.GAUGE, "my.histogram": MetricType.HISTOGRAM,
        "my.exponential.histogram": MetricType.EXPONENTIAL_HISTOGRAM}
    counter = metrics["my.counter"]
    assert (counter.temporality, counter.is_monotonic, counter.unit, counter.description) == (
        Temporality.DELTA, True, "1", "I am a Counter")

    def point(name):
        [only] = MetricPoint.objects.filter(metric_id=metrics[name].id)
        assert only.time_ns == 1544712660300000000
        return only

    counter_point = point("my.counter")
    assert (counter_point.value_double, counter_point.value_int) == (5.0, None)
    assert counter_point.start_time_ns == 1544712660300000000
    assert counter_point.attributes == {"my.counter.attr": "some value"}
    assert (point("my.gauge").value_double, point("my.gauge").start_time_ns) == (10.0, 0)
    hist = point("my.histogram")
    assert (hist.count, hist.sum, hist.min, hist.max) == (2, 2.0, 0.0, 2.0)
    assert (hist.bucket_counts, hist.explicit_bounds) == ([1, 1], [1.0])
    exp = point("my.exponential.histogram")
    assert (exp.count, exp.sum, exp.min, exp.max, exp.scale, exp.zero_count) == (3, 10.0, 0.0, 5.0, 0, 1)
    assert exp.positive == {"offset": 1, "bucket_counts": [0, 2]}
    assert Scope.objects.get(id=counter.scope_id).attributes == {"my.scope.attribute": "some scope attribute"}


# --- bodies: gzip, chunked, empty ----------------------------------------------------------

def test_a_gzip_json_body_is_accepted_and_stored(ingest_server):
    request, trace_id = trace_request("gzip-json", count=3)
    body = gzip.compress(otlp_json.encode(request))
    status, _, _ = post(http_port(ingest_server), "/v1/traces", body, JSON, Content_Encoding="gzip")
    assert status == 200 and stored(trace_id) == 3


def test_a_deflate_body_as_the_python_http_exporter_can_send_is_accepted(ingest_server):
    request, trace_id = trace_request("deflate", count=2)
    body = zlib.compress(request.SerializeToString())
    status, _, _ = post(http_port(ingest_server), "/v1/traces", body, Content_Encoding="deflate")
    assert status == 200 and stored(trace_id) == 2


def test_a_body_of_several_gzip_members_is_read_whole(ingest_server):
    request, trace_id = trace_request("gzip-members", count=4)
    data = request.SerializeToString()
    body = gzip.compress(data[:10]) + gzip.compress(data[10:])
    status, _, _ = post(http_port(ingest_server), "/v1/traces", body, Content_Encoding="gzip")
    assert status == 200 and stored(trace_id) == 4


def test_a_body_that_is_not_gzip_but_says_so_gets_400(ingest_server):
    request, trace_id = trace_request("not-gzip")
    status, _, body = post(http_port(ingest_server), "/v1/traces", request.SerializeToString(), Content_Encoding="gzip")
    assert status == 400 and "gzip" in status_pb2.Status.FromString(body).message
    assert stored(trace_id) == 0


def in_pieces(data, size):
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_a_chunked_body_arrives_whole_and_every_span_is_stored(ingest_server):
    request, trace_id = trace_request("chunked", count=40)
    data = request.SerializeToString()
    status, _, _ = post(http_port(ingest_server), "/v1/traces", in_pieces(data, 97))  # no length: chunked
    assert status == 200 and stored(trace_id) == 40


def test_a_chunked_gzip_body_is_read_whole(ingest_server):
    request, trace_id = trace_request("chunked-gzip", count=25)
    data = gzip.compress(request.SerializeToString())
    status, _, _ = post(http_port(ingest_server), "/v1/traces", in_pieces(data, 50), Content_Encoding="gzip")
    assert status == 200 and stored(trace_id) == 25


def chunked_head(port, content_type=PROTOBUF):
    return (f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()


@pytest.mark.parametrize("framing", [
    lambda data: b"%x\r\n%s\r\n" % (len(data), data),  # the closing 0 chunk never comes
    lambda data: b"%x\r\n%s" % (len(data) + 10, data),  # the chunk is cut short
    lambda data: b"%x\r\n%s0\r\n\r\n" % (len(data), data),  # no CRLF after the data
    lambda data: b"zz\r\n%s\r\n0\r\n\r\n" % data,  # the size is not hex
    lambda data: b"%x\r\n%s\r\n0\r\n" % (len(data), data),  # the trailer section never ends
], ids=["no-last-chunk", "short-chunk", "no-crlf", "bad-size", "no-end"])
def test_a_truncated_or_malformed_chunked_body_gets_400_and_stores_nothing(ingest_server, framing):
    port = http_port(ingest_server)
    request, trace_id = trace_request("truncated-chunked", count=2)
    status, body = raw_exchange(port, chunked_head(port) + framing(request.SerializeToString()))
    assert status == 400 and status_pb2.Status.FromString(body).code == 3  # INVALID_ARGUMENT
    assert stored(trace_id) == 0


def test_an_empty_chunked_body_is_not_taken_for_an_empty_export(ingest_server):
    port = http_port(ingest_server)
    status, body = raw_exchange(port, chunked_head(port) + b"0\r\n\r\n")
    assert status == 400 and "empty" in status_pb2.Status.FromString(body).message


def test_an_empty_protobuf_body_is_a_valid_empty_export(ingest_server):
    status, headers, body = post(http_port(ingest_server), "/v1/traces", b"")
    assert (status, headers["Content-Type"]) == (200, PROTOBUF)
    assert ExportTraceServiceResponse.FromString(body) == ExportTraceServiceResponse()


def test_a_post_without_length_or_chunking_gets_411(ingest_server):
    port = http_port(ingest_server)
    head = f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PROTOBUF}\r\n\r\n".encode()
    assert raw_exchange(port, head)[0] == 411


# --- answers ------------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_success_and_errors_are_answered_in_the_request_content_type(ingest_server, content_type):
    port = http_port(ingest_server)
    request, trace_id = trace_request("answers")
    good = request.SerializeToString() if content_type == PROTOBUF else otlp_json.encode(request)
    status, headers, body = post(port, "/v1/traces", good, content_type + "; charset=utf-8")
    assert (status, headers["Content-Type"]) == (200, content_type)
    assert stored(trace_id) == 1
    if content_type == PROTOBUF:
        assert ExportTraceServiceResponse.FromString(body) == ExportTraceServiceResponse()
    else:
        assert json.loads(body) == {}

    status, headers, body = post(port, "/v1/metrics", b"\x0a\x05oops", content_type)
    assert (status, headers["Content-Type"]) == (400, content_type)
    error = status_pb2.Status.FromString(body) if content_type == PROTOBUF else json.loads(body)
    code, message = (error.code, error.message) if content_type == PROTOBUF else (error["code"], error["message"])
    assert code == 3 and message  # INVALID_ARGUMENT, with a reason


def test_a_half_invalid_json_batch_stores_the_valid_span_and_reports_the_other(ingest_server):
    request, trace_id = trace_request("half-invalid")
    bad = request.resource_spans[0].scope_spans[0].spans.add()
    bad.CopyFrom(request.resource_spans[0].scope_spans[0].spans[0])
    bad.trace_id, bad.span_id = bytes(16), b"\x09" * 8
    body = otlp_json.encode(request)
    assert b'"traceId":"00000000000000000000000000000000"' in body

    status, _, answer = post(http_port(ingest_server), "/v1/traces", body, JSON)

    assert status == 200
    partial = json.loads(answer)["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "trace_id" in partial["errorMessage"]
    assert [bytes(span.span_id) for span in Span.objects.filter(trace_id=trace_id)] == [(1).to_bytes(8, "big")]


def test_a_partial_success_comes_back_in_protobuf_for_a_protobuf_request(ingest_server):
    name = f"m-{uuid.uuid4().hex[:8]}"
    request = ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(scope_metrics=[ScopeMetrics(metrics=[
        MetricProto(name=name, gauge=Gauge(data_points=[NumberDataPoint(as_int=1, time_unix_nano=T0),
                                                         NumberDataPoint(as_int=2)]))])])])
    status, _, answer = post(http_port(ingest_server), "/v1/metrics", request.SerializeToString())
    response = ExportMetricsServiceResponse.FromString(answer)
    assert status == 200 and response.partial_success.rejected_data_points == 1
    assert "time_unix_nano" in response.partial_success.error_message
    assert [point.value_int for point in MetricPoint.objects.filter(metric__name=name)] == [1]


def test_a_batch_sent_twice_is_stored_once(ingest_server):
    request, trace_id = trace_request("twice", count=5)
    for _ in range(2):
        assert post(http_port(ingest_server), "/v1/traces", request.SerializeToString())[0] == 200
    assert stored(trace_id) == 5


def test_a_body_that_is_not_protobuf_gets_400_and_stores_nothing(ingest_server):
    request, trace_id = trace_request("cut")
    status, _, body = post(http_port(ingest_server), "/v1/traces", request.SerializeToString()[:-3])
    assert status == 400 and "ExportTraceServiceRequest" in status_pb2.Status.FromString(body).message
    assert stored(trace_id) == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "", "application/x-protobufs"])
def test_an_unsupported_content_type_gets_415_and_the_connection_is_closed(ingest_server, content_type):
    status, headers, _ = post(http_port(ingest_server), "/v1/traces", b"{}", content_type)
    assert status == 415 and headers["Connection"] == "close"


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, gzip"])
def test_an_unsupported_content_encoding_gets_415(ingest_server, encoding):
    assert post(http_port(ingest_server), "/v1/traces", b"x", Content_Encoding=encoding)[0] == 415


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_methods_other_than_post_get_405(ingest_server, method):
    status, headers, body = post(http_port(ingest_server), "/v1/metrics", None, JSON, method=method)
    assert (status, headers["Allow"]) == (405, "POST")
    assert method in json.loads(body)["message"]


@pytest.mark.parametrize("path", ["/", "/v1/logs", "/v1/traces/extra", "/v1/TRACES"])
def test_unknown_paths_get_404(ingest_server, path):
    assert post(http_port(ingest_server), path, b"", JSON)[0] == 404


def test_one_connection_carries_several_requests_even_after_a_400(ingest_server):
    connection = http.client.HTTPConnection("127.0.0.1", http_port(ingest_server), timeout=15)
    try:
        answers = []
        for body in (trace_request("keepalive")[0].SerializeToString(), b"\xff\xff", b""):
            connection.request("POST", "/v1/traces", body=body, headers={"Content-Type": PROTOBUF})
            response = connection.getresponse()
            response.read()
            answers.append(response.status)
        assert answers == [200, 400, 200]
    finally:
        connection.close()


# --- a second ingest process with a small body limit and a token ---------------------------

@pytest.fixture(scope="module")
def strict_server(ingest_server, tmp_path_factory):
    """An ingest process accepting at most 1024-byte bodies, only with the token."""
    ports = free_ports()
    env = sightline_env(ports, tmp_path_factory.mktemp("strict-ingest"),
                        DATABASE_URL=database_url(),
                        REDIS_URL=settings.SIGHTLINE_REDIS_URL, SIGHTLINE_INGEST_MAX_BODY_BYTES=str(SMALL_LIMIT),
                        SIGHTLINE_INGEST_TOKENS=TOKEN)
    proc = Proc(manage("ingest"), env=env)
    try:
        wait_until(lambda: grpc_serving(ports["grpc"]), 60, "strict ingest gRPC health", proc)
        yield ports["http"]
    finally:
        proc.stop()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_without_the_ingest_token_the_answer_is_401(strict_server):
    request, trace_id = trace_request("no-token")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        status, _, body = post(strict_server, "/v1/traces", request.SerializeToString(), **headers)
        assert status == 401 and status_pb2.Status.FromString(body).code == 16  # UNAUTHENTICATED
    assert stored(trace_id) == 0
    assert post(strict_server, "/v1/traces", request.SerializeToString(), **AUTH)[0] == 200
    assert stored(trace_id) == 1


def test_a_body_over_the_limit_gets_413_however_it_is_sent(strict_server):
    request, trace_id = trace_request("x" * 2000)  # about 2 kB once serialised
    data = request.SerializeToString()
    assert len(data) > SMALL_LIMIT and len(gzip.compress(data)) < SMALL_LIMIT
    gzipped = {"Content-Encoding": "gzip"}
    for body, headers in ((data, {}), (gzip.compress(data), gzipped),
                          (in_pieces(data, 100), {}), (in_pieces(gzip.compress(data), 10), gzipped)):
        status, _, answer = post(strict_server, "/v1/traces", body, **headers, **AUTH)
        assert status == 413 and status_pb2.Status.FromString(answer).code == 8  # RESOURCE_EXHAUSTED
    assert stored(trace_id) == 0


def test_a_redis_outage_is_answered_503_with_retry_after_and_the_retry_is_stored_once(start_ingest, tmp_path):
    redis = EmbeddedRedis(tmp_path / "redis")
    redis_url = redis.start()
    try:
        port = http_port(start_ingest(REDIS_URL=redis_url))
        request, trace_id = trace_request("redis-outage", count=3)
        redis.stop()
        status, headers, body = post(port, "/v1/traces", request.SerializeToString())
        assert (status, headers["Retry-After"]) == (503, "2")
        assert status_pb2.Status.FromString(body).code == 14  # UNAVAILABLE: the exporter retries
        redis.start(port=redis.port)
        wait_until(lambda: post(port, "/v1/traces", request.SerializeToString())[0] == 200, 30, "a 200 after Redis")
        assert stored(trace_id) == 3
    finally:
        redis.stop()


def test_two_ingest_processes_share_the_http_port(start_ingest):
    ingest = start_ingest(args=("--processes", "2"))
    port = http_port(ingest)

    def http_listeners():
        return [child for child in psutil.Process(ingest["proc"].pid).children()
                if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in child.net_connections())]

    wait_until(lambda: len(http_listeners()) == 2, 30, "both receiver processes listening on the HTTP port")
    request, trace_id = trace_request("reuseport", count=2)
    assert all(post(port, "/v1/traces", request.SerializeToString())[0] == 200 for _ in range(10))
    assert stored(trace_id) == 2

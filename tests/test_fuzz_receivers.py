"""Random and mutated bodies against the live receivers: answered, never crashed on.

Senders retry, so a receiver that crashes or answers "internal error" on one bad body
turns it into a loop. Whatever arrives, OTLP/HTTP answers 200 (the valid part stored) or
400, and OTLP/gRPC OK or INVALID_ARGUMENT; the connection is never dropped and the
process keeps serving.
"""

import gzip
import http.client
import json
import os

import grpc
import pytest
from google.rpc import status_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest, ExportMetricsServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)

from ingest import otlp_json
from tests.processes import grpc_serving

# Nothing here reads the database, but the ingest process writes to the test database,
# which pytest-django only creates when a collected test is marked.
pytestmark = pytest.mark.django_db(transaction=True)

PROTOBUF, JSON = "application/x-protobuf", "application/json"
T0 = 1_763_000_000_000_000_000
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

# Valid requests touching every part of the data model, written as OTLP/JSON once and
# decoded here, so the seeds exercise the codec as well.
TRACE_SEED = otlp_json.decode_traces(json.dumps({"resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "fuzz"}}]},
    "schemaUrl": "https://opentelemetry.io/schemas/1.26.0",
    "scopeSpans": [{"scope": {"name": "fuzz.scope", "version": "1"}, "spans": [{
        "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "parentSpanId": "00f067aa0ba902b7",
        "name": "op", "kind": 2, "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 10**6),
        "attributes": [{"key": "s", "value": {"stringValue": "v"}}, {"key": "i", "value": {"intValue": "-3"}},
                       {"key": "d", "value": {"doubleValue": 1.5}}, {"key": "b", "value": {"boolValue": True}},
                       {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "x"}]}}},
                       {"key": "k", "value": {"kvlistValue": {"values": [{"key": "n", "value": {"intValue": 1}}]}}},
                       {"key": "y", "value": {"bytesValue": "3q2+7w=="}}],
        "events": [{"timeUnixNano": str(T0 + 5), "name": "e", "attributes": [{"key": "q", "value": {"intValue": 2}}]}],
        "links": [{"traceId": "0af7651916cd43dd8448eb211c80319d", "spanId": "b7ad6b7169203332"}],
        "status": {"code": 2, "message": "failed"}}]}]}]}).encode())

METRICS_SEED = otlp_json.decode_metrics(json.dumps({"resourceMetrics": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "fuzz"}}]},
    "scopeMetrics": [{"scope": {"name": "fuzz.meter"}, "metrics": [
        {"name": "g", "gauge": {"dataPoints": [{"asDouble": 1.5, "timeUnixNano": str(T0)}]}},
        {"name": "c", "sum": {"aggregationTemporality": 2, "isMonotonic": True, "dataPoints": [
            {"asInt": "7", "startTimeUnixNano": str(T0), "timeUnixNano": str(T0 + 1)}]}},
        {"name": "h", "histogram": {"aggregationTemporality": 1, "dataPoints": [{
            "timeUnixNano": str(T0), "count": "3", "sum": 6, "min": 1, "max": 3, "bucketCounts": ["1", "2"],
            "explicitBounds": [2], "exemplars": [{"asDouble": 2, "timeUnixNano": str(T0), "spanId": "b7ad6b7169203331",
                                                  "traceId": "0af7651916cd43dd8448eb211c80319c"}]}]}},
        {"name": "x", "exponentialHistogram": {"dataPoints": [{
            "timeUnixNano": str(T0), "count": "2", "scale": 1, "zeroCount": "1",
            "positive": {"offset": -1, "bucketCounts": ["1"]}}]}},
        {"name": "s", "summary": {"dataPoints": [{
            "timeUnixNano": str(T0), "count": "4", "sum": 10, "quantileValues": [{"quantile": 0.5, "value": 2}]}]}},
    ]}]}]}).encode())

SEEDS = {
    "/v1/traces": {PROTOBUF: TRACE_SEED.SerializeToString(), JSON: otlp_json.encode(TRACE_SEED)},
    "/v1/metrics": {PROTOBUF: METRICS_SEED.SerializeToString(), JSON: otlp_json.encode(METRICS_SEED)},
}
REQUESTS = {"/v1/traces": ExportTraceServiceRequest, "/v1/metrics": ExportMetricsServiceRequest}
RESPONSES = {"/v1/traces": ExportTraceServiceResponse, "/v1/metrics": ExportMetricsServiceResponse}
GRPC_METHODS = {"/opentelemetry.proto.collector.trace.v1.TraceService/Export": TRACE_SEED.SerializeToString(),
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export": METRICS_SEED.SerializeToString()}


@st.composite
def mutated(draw, seed):
    """seed with 1-4 edits: a byte changed or flipped, a cut, an insertion, a slice repeated."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        edit = draw(st.sampled_from(["set", "flip", "truncate", "insert", "delete", "repeat"]))
        if edit == "set" and data:
            data[position] = draw(st.integers(0, 255))
        elif edit == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif edit == "truncate":
            del data[position:]
        elif edit == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif edit == "delete":
            del data[position:position + draw(st.integers(1, 16))]
        else:
            data[position:position] = data[position:position + draw(st.integers(1, 32))]
    return bytes(data)


@st.composite
def http_requests(draw):
    path = draw(st.sampled_from(sorted(SEEDS)))
    content_type = draw(st.sampled_from([PROTOBUF, JSON]))
    body = draw(st.one_of(st.binary(max_size=1024), mutated(SEEDS[path][content_type])))
    compressed = draw(st.booleans())
    if compressed and draw(st.booleans()):
        body = gzip.compress(body)
    elif compressed:
        body = draw(mutated(gzip.compress(body)))  # broken gzip as well as broken contents
    return path, content_type, compressed, body


def post(port, path, content_type, compressed, body):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": content_type, **({"Content-Encoding": "gzip"} if compressed else {})}
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()  # a dropped connection raises here and fails the test
        return response.status, response.headers["Content-Type"], response.read()
    finally:
        connection.close()


def decode_answer(path, content_type, status, answer):
    """The response or google.rpc.Status, in the request's content type (raises if it is not)."""
    if content_type == JSON:
        return json.loads(answer)
    return (RESPONSES[path] if status == 200 else status_pb2.Status).FromString(answer)


# --- fuzzing -----------------------------------------------------------------------------

@FUZZ
@given(http_requests())
def test_random_and_mutated_http_bodies_are_answered_200_or_400(ingest_server, request_parts):
    path, content_type, compressed, body = request_parts
    status, answer_type, answer = post(ingest_server["ports"]["http"], path, content_type, compressed, body)
    assert answer_type == content_type
    decoded = decode_answer(path, content_type, status, answer)  # raises unless in the request's type
    event(f"HTTP {status}")  # --hypothesis-show-statistics: how many bodies got past decoding
    assert status in (200, 400), f"{status}: {decoded}"


@pytest.fixture(scope="module")
def channel(ingest_server):
    with grpc.insecure_channel(ingest_server["grpc"]) as channel:
        yield channel


def raw_export(channel, method):
    return channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)


@FUZZ
@given(st.sampled_from(sorted(GRPC_METHODS)), st.data())
def test_random_and_mutated_grpc_messages_are_answered_ok_or_invalid_argument(ingest_server, channel, method, data):
    body = data.draw(st.one_of(st.binary(max_size=1024), mutated(GRPC_METHODS[method])))
    try:
        raw_export(channel, method)(body, timeout=30)
        event("gRPC OK")
    except grpc.RpcError as error:
        event(f"gRPC {error.code().name}")  # a dropped connection would be UNAVAILABLE, and fail below
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{(error.code(), error.details())}"


def test_the_receivers_still_serve_after_the_fuzzing(ingest_server):
    assert ingest_server["proc"].proc.poll() is None
    assert grpc_serving(ingest_server["ports"]["grpc"])
    status, _, _ = post(ingest_server["ports"]["http"], "/v1/traces", PROTOBUF, False, TRACE_SEED.SerializeToString())
    assert status == 200


# --- inputs the fuzzing found ------------------------------------------------------------

def test_a_grpc_message_that_does_not_decode_is_invalid_argument(channel):
    with pytest.raises(grpc.RpcError) as caught:
        raw_export(channel, "/opentelemetry.proto.collector.trace.v1.TraceService/Export")(b"\x0a\xff\xff", timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("part, field, value", [
    ("span", "start_time_unix_nano", 2**64 - 1), ("span", "dropped_attributes_count", 2**32 - 1),
    ("resource", "dropped_attributes_count", 2**31)])
def test_a_number_too_large_for_its_column_is_not_answered_retry_later(ingest_server, part, field, value):
    request = ExportTraceServiceRequest()
    request.CopyFrom(TRACE_SEED)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.trace_id = os.urandom(16)
    setattr(span if part == "span" else request.resource_spans[0].resource, field, value)
    status, _, answer = post(ingest_server["ports"]["http"], "/v1/traces", PROTOBUF, False, request.SerializeToString())
    assert status in (200, 400), f"{status}: {decode_answer('/v1/traces', PROTOBUF, status, answer)}"

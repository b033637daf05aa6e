"""Hand-built OTLP requests for tests of the response contract."""

import os

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList


def trace_request(service, spans=1, trace_id=None, attributes=8, start_ns=None):
    """One resource, one scope, `spans` spans of one trace with `attributes` string attributes each."""
    import time

    request = trace_service_pb2.ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "tests"
    trace_id = trace_id or os.urandom(16)
    start = start_ns or time.time_ns()
    for index in range(spans):
        span = scope_spans.spans.add(trace_id=trace_id, span_id=os.urandom(8), name=f"op-{index % 10}", kind=2,
                                     start_time_unix_nano=start + index, end_time_unix_nano=start + index + 1_000_000)
        for number in range(attributes):
            span.attributes.add(key=f"attr.{number}", value=AnyValue(string_value=f"value-{number}"))
    return request


def trace_stub(channel):
    return trace_service_pb2_grpc.TraceServiceStub(channel)


def any_value(value):
    """A Python value as an OTLP AnyValue (lists as arrays, dicts as key-value lists)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(item) for item in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(
            values=[KeyValue(key=key, value=any_value(item)) for key, item in value.items()]))
    return AnyValue(string_value=value)


def spans_request(spans):
    """An export request from span dicts: service, name, trace_id, span_id, start_ns, end_ns and
    optionally parent (span id), kind, status (code), message, attributes, resource (attributes).
    Spans of one service (and resource) share a ResourceSpans, as an SDK would send them."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    groups = {}
    for spec in spans:
        resource = dict(spec.get("resource", {}), **{"service.name": spec["service"]})
        key = tuple(sorted((k, repr(v)) for k, v in resource.items()))
        if key not in groups:
            resource_spans = request.resource_spans.add()
            for name, value in resource.items():
                resource_spans.resource.attributes.add(key=name, value=any_value(value))
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name, scope_spans.scope.version = "tests", "1.0"
            groups[key] = scope_spans
        span = groups[key].spans.add(trace_id=spec["trace_id"], span_id=spec["span_id"], name=spec["name"],
                                     kind=spec.get("kind", 1), start_time_unix_nano=spec["start_ns"],
                                     end_time_unix_nano=spec["end_ns"])
        if spec.get("parent"):
            span.parent_span_id = spec["parent"]
        span.status.code = spec.get("status", 0)
        span.status.message = spec.get("message", "")
        for name, value in spec.get("attributes", {}).items():
            span.attributes.add(key=name, value=any_value(value))
    return request

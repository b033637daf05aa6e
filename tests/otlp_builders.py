"""Hand-built OTLP requests for tests of the response contract."""

import os

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


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

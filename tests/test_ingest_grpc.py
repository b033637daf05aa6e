"""The real OpenTelemetry Python SDK exporters over OTLP/gRPC, checked field by field in PostgreSQL."""

import uuid

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from grpc import Compression
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from traces.models import Metric, MetricPoint, MetricType, Resource, Scope, Span, Temporality

pytestmark = pytest.mark.django_db(transaction=True)

T0 = 1_763_000_000_000_000_000  # fixed start times make nanosecond checks exact


def send_trace(endpoint, service, compression=None):
    provider = TracerProvider(resource=SdkResource.create({"service.name": service, "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True,
                                                                      compression=compression)))
    tracer = provider.get_tracer("shop.checkout", "2.1.0")
    root = tracer.start_span("GET /checkout", kind=SpanKind.SERVER, start_time=T0, attributes={
        "http.request.method": "GET", "http.response.status_code": 200, "ratio": 0.25, "cached": False,
        "tags": ["a", "b"], "sizes": [1, 2, 3],
    })
    root.add_event("cart loaded", {"items": 3}, timestamp=T0 + 1_000)
    parent_context = root.get_span_context()
    from opentelemetry.trace import set_span_in_context

    child = tracer.start_span("charge card", kind=SpanKind.CLIENT, start_time=T0 + 5_123,
                              context=set_span_in_context(root), links=[Link(parent_context, {"reason": "retry"})])
    child.set_status(Status(StatusCode.ERROR, "card declined"))
    child.end(end_time=T0 + 2_000_456_789)
    root.end(end_time=T0 + 3_000_000_001)
    provider.shutdown()
    return parent_context.trace_id.to_bytes(16, "big"), parent_context.span_id.to_bytes(8, "big"), \
        child.get_span_context().span_id.to_bytes(8, "big")


@pytest.mark.parametrize("compression", [None, Compression.Gzip], ids=["plain", "gzip"])
def test_spans_from_the_python_grpc_exporter_are_stored_field_by_field(ingest_server, compression):
    service = f"grpc-{uuid.uuid4().hex[:8]}"
    trace_id, root_id, child_id = send_trace(ingest_server["grpc"], service, compression)
    spans = {span.name: span for span in Span.objects.filter(trace_id=trace_id)}
    assert set(spans) == {"GET /checkout", "charge card"}
    root, child = spans["GET /checkout"], spans["charge card"]

    assert bytes(root.span_id) == root_id and root.parent_span_id is None
    assert root.kind == 2  # OTLP SPAN_KIND_SERVER
    assert (root.start_ns, root.end_ns, root.duration_ns) == (T0, T0 + 3_000_000_001, 3_000_000_001)
    assert root.start_time.timestamp() == pytest.approx(T0 / 1e9, abs=1e-6)
    assert root.status_code == 0 and root.service_name == service
    assert root.attributes == {"http.request.method": "GET", "http.response.status_code": 200, "ratio": 0.25,
                               "cached": False, "tags": ["a", "b"], "sizes": [1, 2, 3]}
    assert root.events == [{"time_unix_nano": T0 + 1_000, "name": "cart loaded", "attributes": {"items": 3},
                            "dropped_attributes_count": 0}]

    assert bytes(child.span_id) == child_id and bytes(child.parent_span_id) == root_id
    assert child.kind == 3 and (child.start_ns, child.end_ns) == (T0 + 5_123, T0 + 2_000_456_789)
    assert (child.status_code, child.status_message) == (2, "card declined")
    [link] = child.links
    assert link["flags"] & 0x100  # the SDK marks whether the linked context is remote
    assert {key: value for key, value in link.items() if key != "flags"} == {
        "trace_id": trace_id.hex(), "span_id": root_id.hex(), "trace_state": "",
        "attributes": {"reason": "retry"}, "dropped_attributes_count": 0}
    assert child.flags & 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK is set by the SDK

    resource = Resource.objects.get(id=root.resource_id)
    assert resource.service_name == service
    assert resource.attributes["deployment.environment"] == "test"
    assert resource.attributes["telemetry.sdk.language"] == "python"
    scope = Scope.objects.get(id=root.scope_id)
    assert (scope.name, scope.version) == ("shop.checkout", "2.1.0")


def test_metrics_of_every_instrument_from_the_python_grpc_exporter_are_stored(ingest_server):
    service = f"metrics-{uuid.uuid4().hex[:8]}"
    exporter = OTLPMetricExporter(endpoint=ingest_server["grpc"], insecure=True, preferred_temporality={
        UpDownCounter: AggregationTemporality.CUMULATIVE, Counter: AggregationTemporality.DELTA,
        Histogram: AggregationTemporality.CUMULATIVE})
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=SdkResource.create({"service.name": service}), metric_readers=[reader], views=[
        View(instrument_name="payload.size", aggregation=ExponentialBucketHistogramAggregation())])
    meter = provider.get_meter("shop.metrics", "0.3")
    meter.create_counter("orders", unit="{order}", description="orders placed").add(5, {"region": "eu"})
    meter.create_up_down_counter("queue.depth").add(-2)
    tracer = TracerProvider().get_tracer("exemplars")
    with tracer.start_as_current_span("request") as active:  # the SDK attaches it as an exemplar
        meter.create_histogram("latency", unit="ms").record(120.0, {"route": "/a"})
    context = active.get_span_context()
    meter.create_histogram("payload.size", unit="By").record(1000)
    meter.create_gauge("temperature", unit="Cel").set(21.5)
    provider.shutdown()

    metrics = {metric.name: metric for metric in Metric.objects.filter(service_name=service)}
    assert set(metrics) == {"orders", "queue.depth", "latency", "payload.size", "temperature"}
    orders = metrics["orders"]
    assert (orders.type, orders.temporality, orders.is_monotonic) == (MetricType.SUM, Temporality.DELTA, True)
    assert (orders.unit, orders.description) == ("{order}", "orders placed")
    queue = metrics["queue.depth"]
    assert (queue.type, queue.temporality, queue.is_monotonic) == (MetricType.SUM, Temporality.CUMULATIVE, False)
    assert metrics["latency"].type == MetricType.HISTOGRAM
    assert metrics["payload.size"].type == MetricType.EXPONENTIAL_HISTOGRAM
    assert metrics["temperature"].type == MetricType.GAUGE

    def point(name):
        [only] = MetricPoint.objects.filter(metric_id=metrics[name].id)
        return only

    orders_point = point("orders")
    assert (orders_point.value_int, orders_point.attributes) == (5, {"region": "eu"})
    assert orders_point.start_time_ns > 0 and orders_point.time_ns >= orders_point.start_time_ns
    assert point("queue.depth").value_int == -2
    assert point("temperature").value_double == 21.5
    latency = point("latency")
    assert (latency.count, latency.sum, latency.min, latency.max) == (1, 120.0, 120.0, 120.0)
    assert latency.explicit_bounds[:3] == [0.0, 5.0, 10.0] and sum(latency.bucket_counts) == 1
    assert latency.bucket_counts[latency.explicit_bounds.index(100.0) + 1] == 1  # 100 < 120 <= 250
    assert latency.attributes == {"route": "/a"}
    [exemplar] = latency.exemplars
    assert exemplar["value"] == 120.0 and exemplar["time_unix_nano"] > 0
    assert (exemplar["trace_id"], exemplar["span_id"]) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    size = point("payload.size")
    assert size.count == 1 and size.sum == 1000 and size.scale is not None
    assert sum(size.positive["bucket_counts"]) == 1
    assert Scope.objects.get(id=metrics["orders"].scope_id).name == "shop.metrics"

"""The demo shop's telemetry, through the OpenTelemetry Python SDK as a real service sends it.

Each service has its own Resource, TracerProvider and MeterProvider, as seven separate
processes would. A planned trace (dashboards.demo.shop) is replayed as SDK spans with
explicit start and end times; where a call crosses from one service to another the
parent's context goes through a W3C traceparent header (inject, then extract), exactly
as between two instrumented processes, so the whole request is one trace.
"""

import uuid

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from dashboards.demo import shop

ENVIRONMENT = "demo"
KINDS = {shop.SERVER: SpanKind.SERVER, shop.CLIENT: SpanKind.CLIENT, shop.PRODUCER: SpanKind.PRODUCER,
         shop.CONSUMER: SpanKind.CONSUMER, shop.INTERNAL: SpanKind.INTERNAL}
# The semantic conventions' advice for http.server.request.duration, in seconds.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
DB_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
PROPAGATOR = TraceContextTextMapPropagator()


def resources():
    """One Resource per service, as each process's SDK would build it (SDK attributes included)."""
    return {service: Resource.create({
        "service.name": service, "service.namespace": "shop", "service.version": version,
        "service.instance.id": str(uuid.uuid4()), "host.name": f"{service}-{uuid.uuid4().hex[:5]}",
        "deployment.environment.name": ENVIRONMENT, "deployment.environment": ENVIRONMENT,
    }) for service, version in shop.VERSIONS.items()}


def span_exporter(endpoint, headers, timeout=10):
    return OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"), headers=headers,
                            timeout=timeout)


def metric_exporter(endpoint, headers):
    return OTLPMetricExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"), headers=headers)


class Collector(SpanProcessor):
    """Keeps ended spans for the caller to export in batches: back-dated history is sent in
    large requests straight through the exporter instead of one trace at a time."""

    def __init__(self):
        self.spans = []

    def on_end(self, span):
        self.spans.append(span)

    def take(self):
        spans, self.spans = self.spans, []
        return spans


class Tracing:
    """One TracerProvider per service; emit() replays a planned trace through them."""

    def __init__(self, resources, processor_for):
        """processor_for(service) -> the SpanProcessor of that service's provider."""
        self.providers = {}
        for service, resource in resources.items():
            # shutdown_on_exit=False: the demo flushes on its own terms, and a second Ctrl-C
            # must not hang in an exit handler waiting for an unreachable Sightline.
            provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            provider.add_span_processor(processor_for(service))
            self.providers[service] = provider
        self._tracers = {}

    def _tracer(self, service, scope):
        key = (service, scope)
        if key not in self._tracers:
            version = shop.VERSIONS[service] if scope.startswith("shop.") else None
            self._tracers[key] = self.providers[service].get_tracer(scope, version)
        return self._tracers[key]

    def emit(self, root, base_ns):
        """Send the planned trace rooted at `root`, its times taken from base_ns (epoch ns)."""
        return self._emit(root, None, base_ns)

    def _emit(self, planned, parent, base_ns):
        span = self._tracer(planned.service, planned.scope).start_span(
            planned.name, context=self._context(planned, parent), kind=KINDS[planned.kind],
            attributes=planned.attributes, start_time=base_ns + _ns(planned.start))
        for name, at, attributes in planned.events:
            span.add_event(name, attributes, timestamp=base_ns + _ns(at))
        if planned.error is not None:
            span.set_status(Status(StatusCode.ERROR, planned.error or None))
        count = 1
        for child in planned.children:
            count += self._emit(child, span, base_ns)
        span.end(end_time=base_ns + _ns(planned.end))
        return count

    @staticmethod
    def _context(planned, parent):
        if parent is None:
            return context_api.Context()  # a new trace
        parent_context = trace.set_span_in_context(parent)
        if planned.parent.service == planned.service:
            return parent_context
        headers = {}  # another process: the context travels in the request's (or message's) headers
        PROPAGATOR.inject(headers, context=parent_context)
        return PROPAGATOR.extract(headers)

    def shutdown(self):
        """Flush and stop every provider (exports what is still buffered)."""
        for provider in self.providers.values():
            provider.shutdown()


def _ns(ms):
    return int(round(ms * 1_000_000))


class Metrics:
    """The services' metrics: request durations and counts per route, database call durations,
    messages sent and consumed, orders by outcome, and the items in open carts (a gauge).

    Metrics can only be recorded now (the SDK stamps them itself), so only live traffic has them.
    """

    def __init__(self, resources, exporter_for, the_shop, interval_seconds=10):
        self.providers = {
            service: MeterProvider(resource=resource, shutdown_on_exit=False, metric_readers=[
                PeriodicExportingMetricReader(exporter_for(), export_interval_millis=interval_seconds * 1000)])
            for service, resource in resources.items()}
        self._instruments = {}
        self.meter("cart").create_observable_gauge(
            "shop.cart.items", callbacks=[lambda options: [Observation(the_shop.cart_items)]], unit="{item}",
            description="Items in open carts")

    def meter(self, service):
        return self.providers[service].get_meter(f"shop.{service}", shop.VERSIONS[service])

    def _instrument(self, service, name, make):
        key = (service, name)
        if key not in self._instruments:
            self._instruments[key] = make(self.meter(service))
        return self._instruments[key]

    def record(self, root):
        for span in root.walk():
            attributes, seconds = span.attributes, (span.end - span.start) / 1000
            if span.kind == shop.SERVER:
                self._request(span.service, attributes, seconds)
            elif "db.system.name" in attributes:
                self._histogram(span.service, "db.client.operation.duration", DB_BUCKETS, "Database calls").record(
                    seconds, {key: attributes[key] for key in ("db.system.name", "db.operation.name", "server.address")})
            elif span.kind in (shop.PRODUCER, shop.CONSUMER):
                self._messages(span)
        self._order_outcome(root)

    def _histogram(self, service, name, buckets, description):
        return self._instrument(service, name, lambda meter: meter.create_histogram(
            name, unit="s", description=description, explicit_bucket_boundaries_advisory=buckets))

    def _counter(self, service, name, unit, description):
        return self._instrument(service, name, lambda meter: meter.create_counter(
            name, unit=unit, description=description))

    def _request(self, service, attributes, seconds):
        labels = {"http.request.method": attributes["http.request.method"], "http.route": attributes["http.route"],
                  "http.response.status_code": attributes["http.response.status_code"],
                  "url.scheme": attributes["url.scheme"]}
        self._histogram(service, "http.server.request.duration", HTTP_BUCKETS, "HTTP requests served").record(
            seconds, labels)
        self._counter(service, "http.server.requests", "{request}", "HTTP requests served").add(1, labels)

    def _messages(self, span):
        labels = {"messaging.system": span.attributes["messaging.system"],
                  "messaging.destination.name": span.attributes["messaging.destination.name"]}
        if span.kind == shop.PRODUCER:
            self._counter(span.service, "messaging.client.sent.messages", "{message}", "Messages sent").add(1, labels)
        else:
            self._counter(span.service, "messaging.client.consumed.messages", "{message}",
                          "Messages consumed").add(1, labels)

    def _order_outcome(self, root):
        if root.name != "POST /checkout":
            return
        status = root.attributes["http.response.status_code"]
        outcome = {303: "placed", 402: "declined"}.get(status, "failed")
        self._counter("checkout", "shop.orders", "{order}", "Orders by outcome").add(1, {"outcome": outcome})

    def shutdown(self):
        for provider in self.providers.values():
            provider.shutdown()


def live_processor(endpoint, headers):
    """A service's span processor for live traffic: batches of up to a second, as an SDK would send."""
    return BatchSpanProcessor(span_exporter(endpoint, headers), schedule_delay_millis=1000)

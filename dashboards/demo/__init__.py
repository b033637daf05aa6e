"""`manage.py demo`: a small online shop that sends realistic telemetry to a running Sightline.

- shop: the seven services and what one request does in each of them, planned as a tree
  of spans with simulated latencies, errors and faults (no SDK, no network).
- telemetry: the OpenTelemetry SDK side: one TracerProvider and MeterProvider per
  service, replaying planned traces as real SDK spans with context propagated between
  services, and OTLP/gRPC exporters.
- traffic: when requests happen (live, or back-dated history loaded in batches).
- slos: the sample SLOs the demo creates.
"""

"""End to end: a live `serve` (ingest, worker, beat), an SLO of 99 % availability evaluated
every 2 s, traffic with 20 % errors through the OpenTelemetry SDK, and a webhook receiver on
loopback: the firing Alertmanager alert arrives within two evaluation intervals of the
traffic being correlated; healthy traffic follows, and the resolved notification arrives.
A second SLO notifies a receiver that is down at first: its alert is retried by the worker
until the receiver answers, and it never delays the first."""

import json
import os
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from dashboards.models import SLO, Channel, Delivery
from tests.conftest import database_url, free_port, sightline_env
from tests.processes import Proc, grpc_serving, http_ok, manage, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
EVAL_SECONDS = 2


class Receiver(BaseHTTPRequestHandler):
    received = None  # a queue.Queue, set per server

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.put((time.monotonic(), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def send(endpoint, service, total, failing):
    provider = TracerProvider(resource=SdkResource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True),
                                                   schedule_delay_millis=200, max_export_batch_size=512))
    tracer = provider.get_tracer("e2e")
    for index in range(total):
        with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER) as span:
            if index < failing:
                span.set_status(Status(StatusCode.ERROR, "payment declined"))
    provider.shutdown()


def next_alert(received, status, severity, deadline):
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {status} {severity} alert arrived in time")
        try:
            at, payload = received.get(timeout=remaining)
        except queue.Empty:
            continue
        if payload["status"] == status and payload["alerts"][0]["labels"]["severity"] == severity:
            return at, payload


def receiver(port=0):
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    server.received = queue.Queue()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_burning_slo_pages_the_webhook_and_resolves(tmp_path, ports):
    server = receiver()
    service = f"e2e-{uuid.uuid4().hex[:6]}"
    channel = Channel.objects.create(name=f"{service}-hook", type="webhook",
                                     url=f"http://127.0.0.1:{server.server_address[1]}/alerts")
    slo = SLO.objects.create(name=f"{service}-availability", service=service, objective=0.99)
    slo.channels.add(channel)
    down_port = free_port()  # nothing listens here until later
    late_channel = Channel.objects.create(name=f"{service}-late", type="webhook",
                                          url=f"http://127.0.0.1:{down_port}/alerts")
    other = SLO.objects.create(name=f"{service}-other", service=service, objective=0.99)
    other.channels.add(late_channel)
    late_server = None
    env = sightline_env(ports, tmp_path / "data", DATABASE_URL=database_url(), REDIS_URL=os.environ["REDIS_URL"],
                        SIGHTLINE_SETTLE_SECONDS="1", SIGHTLINE_SETTLE_TICK_SECONDS="1",
                        SIGHTLINE_SLO_EVAL_SECONDS=str(EVAL_SECONDS), SIGHTLINE_ALERT_RESOLVE_HOLD_SECONDS="2")
    proc = Proc(manage("serve"), env=env)
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{ports['web']}/healthz"), 90, "web /healthz", proc)
        wait_until(lambda: grpc_serving(ports["grpc"]), 30, "gRPC health SERVING", proc)
        send(f"127.0.0.1:{ports['grpc']}", service, 100, failing=20)

        def correlated(requests):
            slo.refresh_from_db()
            return slo.sli is not None and slo.evaluated_at is not None and _requests(service) >= requests

        wait_until(lambda: _requests(service) >= 100, 60, "100 requests correlated", proc)
        seen = time.monotonic()
        at, firing = next_alert(server.received, "firing", "page", seen + 2 * EVAL_SECONDS + 5)
        assert at - seen <= 2 * EVAL_SECONDS + 1, "more than two evaluation intervals"
        assert firing["version"] == "4" and firing["receiver"] == channel.name
        alert = firing["alerts"][0]
        assert alert["status"] == "firing" and alert["labels"]["slo"] == slo.name
        assert alert["labels"]["service"] == service and alert["endsAt"].startswith("0001-01-01")
        assert "burn rate" in alert["annotations"]["summary"] and alert["generatorURL"].endswith(f"/slos/{slo.name}/")
        assert "startsAt" in alert

        def late_delivery():
            return Delivery.objects.filter(alert__slo=other, alert__severity="page", kind="firing").first()

        wait_until(lambda: late_delivery() is not None and late_delivery().attempts >= 1, 30,
                   "a failed attempt at the receiver that is down", proc)
        assert late_delivery().status == "pending" and late_delivery().last_error
        late_server = receiver(down_port)  # the second receiver comes up: the retried alert arrives
        _, late = next_alert(late_server.received, "firing", "page", time.monotonic() + 30)
        assert late["alerts"][0]["labels"]["slo"] == other.name
        wait_until(lambda: late_delivery().status == "sent", 10, "the retried delivery recorded as sent", proc)
        assert late_delivery().attempts >= 2

        send(f"127.0.0.1:{ports['grpc']}", service, 400, failing=0)  # 20 of 500 bad: 4 %, under the page rates
        wait_until(lambda: correlated(500), 90, "500 requests correlated and evaluated", proc)
        _, resolved = next_alert(server.received, "resolved", "page", time.monotonic() + 30)
        assert resolved["alerts"][0]["status"] == "resolved"
        assert not resolved["alerts"][0]["endsAt"].startswith("0001-01-01")
        slo.refresh_from_db()
        assert slo.alerts.filter(severity="page", state="resolved").count() == 1
    finally:
        proc.stop()
        server.shutdown()
        if late_server is not None:
            late_server.shutdown()


def _requests(service):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(count), 0) FROM sightline_red_rollup WHERE service = %s AND entry",
                       [service])
        return int(cursor.fetchone()[0])

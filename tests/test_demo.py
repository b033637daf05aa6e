"""`manage.py demo` end to end: a live `serve` (ingest, worker, beat, web), the demo sending
12 minutes of back-dated history and then 15 s of live traffic with the payment-slow fault
through the real OpenTelemetry SDK exporters; what the demo promises is then read back
over the HTTP API: the seven services, the edges and the virtual nodes of the service map,
payment's charge as checkout's top latency hotspot, the sample SLOs (the latency one
burning), the back-dated traces and the metrics. Bad options are refused before anything
is sent."""

import datetime as dt
import json
import os
import time
import urllib.parse
import urllib.request

import pytest
from django.core.management import CommandError, call_command

from dashboards.models import SLO
from tests.conftest import database_url, free_port, sightline_env
from tests.processes import Proc, grpc_serving, http_ok, manage, wait_until

SERVICES = {"frontend", "cart", "checkout", "payment", "inventory", "shipping", "email"}
SERVICE_EDGES = {("frontend", "cart"), ("frontend", "checkout"), ("checkout", "payment"), ("checkout", "inventory"),
                 ("checkout", "shipping"), ("checkout", "email")}  # checkout -> email: through the rabbitmq queue
VIRTUAL_NODES = {("checkout", "postgresql shop", "database"), ("inventory", "postgresql shop", "database"),
                 ("cart", "redis", "database"), ("frontend", "redis", "database"),
                 ("checkout", "kafka order-events", "messaging"), ("payment", "api.payments.example", "external"),
                 ("email", "smtp.mail.example", "external")}


def get(ports, path, **query):
    url = f"http://127.0.0.1:{ports['web']}/api/v1/{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["data"]


def rfc3339(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_demo_fills_sightline_with_a_shop_whose_payment_is_slow(tmp_path, ports):
    env = sightline_env(ports, tmp_path / "data", DATABASE_URL=database_url(), REDIS_URL=os.environ["REDIS_URL"],
                        SIGHTLINE_SETTLE_SECONDS="1", SIGHTLINE_SETTLE_TICK_SECONDS="1",
                        SIGHTLINE_SLO_EVAL_SECONDS="2", SIGHTLINE_PUBLIC_READ="true")
    serve = Proc(manage("serve"), env=env)
    demo = None
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{ports['web']}/healthz"), 90, "web /healthz", serve)
        wait_until(lambda: grpc_serving(ports["grpc"]), 30, "gRPC health SERVING", serve)
        started = dt.datetime.now(dt.timezone.utc)
        # no --endpoint: the demo finds ingest from the same settings serve reads
        demo = Proc(manage("demo", "--history", "0.2", "--duration", "15", "--rate", "10",
                           "--fault", "payment-slow", "--seed", "7"), env=env)
        assert demo.proc.wait(90) == 0, demo.output[-5000:]
        out = demo.output
        assert "Traceback" not in out, out[-5000:]
        assert f"to http://127.0.0.1:{ports['grpc']}" in out and "Fault: payment-slow" in out
        assert "SLO checkout-availability: created" in out and "SLO checkout-latency: created" in out
        assert "100%" in out and "spans/s" in out  # the history's progress bar ran to the end
        assert "Flushing the exporters" in out and ", 0 live." not in out

        def services():
            return {row["service"] for row in get(ports, "services", lookback="1h", environment="demo")}

        wait_until(lambda: services() == SERVICES, 60, "the seven services correlated", serve)

        def edges():
            return {(e["parent"], e["child"], e["child_type"]) for e in get(ports, "dependencies", lookback="1h")}

        wanted = {(parent, child, "service") for parent, child in SERVICE_EDGES} | VIRTUAL_NODES
        wait_until(lambda: wanted <= edges(), 30, "the shop's edges and virtual nodes", serve)

        hotspots = get(ports, "hotspots", lookback="1h", service="checkout", limit=5)
        top = hotspots[0]
        assert (top["service"], top["operation"]) == ("payment", "charge"), hotspots
        assert top["slow_critical_path_share"] > 0.4 and top["self_time_p95_ms"] > 500, top

        latency = SLO.objects.get(name="checkout-latency")
        assert (latency.service, latency.operation, latency.sli_type) == ("frontend", "POST /checkout", "latency")
        assert (latency.threshold_ms, latency.objective) == (1000, 0.95)
        availability = SLO.objects.get(name="checkout-availability")
        assert (availability.service, availability.sli_type, availability.objective) == ("checkout", "availability",
                                                                                          0.995)

        def burning():
            latency.refresh_from_db()
            return (latency.burn_rates or {}).get("5m") is not None and latency.evaluated_at > started

        wait_until(burning, 30, "the latency SLO evaluated", serve)
        assert latency.burn_rates["5m"] > 5 and latency.state == "page", latency.burn_rates

        past = get(ports, "traces", start=rfc3339(started - dt.timedelta(minutes=12)),
                   end=rfc3339(started - dt.timedelta(minutes=5)), service="frontend", operation="POST /checkout",
                   limit=5)
        assert past and all(row["environment"] == "demo" for row in past)
        assert any(SERVICES <= set(row["services"]) for row in past), past  # one trace across all seven

        metrics = {m["name"]: set(m["services"]) for m in get(ports, "metrics", lookback="15m")}
        assert metrics["http.server.request.duration"] == SERVICES - {"email"}
        assert metrics["shop.cart.items"] == {"cart"}
        assert metrics["messaging.client.consumed.messages"] == {"email"}
    finally:
        if demo is not None:
            demo.stop()
        serve.stop()


@pytest.mark.parametrize("argv, message", [
    (["--fault", "payment-slo"], "unknown fault 'payment-slo'; the faults are: payment-slow ("),
    (["--rate", "0"], "--rate must be more than 0"),
    (["--rate", "5000"], "at most 1000"),
    (["--history", "-1"], "--history must be between 0 and 168 hours"),
    (["--duration", "-5"], "--duration must be 0 or more seconds"),
    (["--endpoint", "127.0.0.1:4317"], "--endpoint must look like http://host:4317"),
])
def test_bad_options_are_refused_before_anything_is_sent(argv, message):
    with pytest.raises(CommandError) as raised:
        call_command("demo", *argv)
    assert message in str(raised.value)


def test_a_sightline_that_is_not_there_is_named():
    endpoint = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(CommandError) as raised:
        call_command("demo", "--endpoint", endpoint, "--no-slo")
    assert f"nothing answers OTLP/gRPC at {endpoint}" in str(raised.value)
    assert "./sightline run" in str(raised.value)
    assert time.monotonic() - started < 10

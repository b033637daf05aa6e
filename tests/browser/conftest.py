"""A live Sightline with known telemetry in it, and a headless Chromium logged in to it.

`live` (one for all the browser tests: package scope, so its Celery worker is gone before
other tests put traces into the same Redis): `manage.py serve` on free ports over the test database, a
superuser and an API token made by the management commands, traces and metrics sent by
the real OpenTelemetry SDK exporters (a healthy shop, an always failing service, a service
whose names and attributes carry HTML/script payloads), waited for until correlated.

`browser` (one for all of them too): Debian's Chromium through its ChromeDriver and selenium,
logged in through the login form. Without chromium, chromedriver or selenium these tests
are skipped saying why, except under CI=true, where they fail.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.conftest import ROOT, database_url, free_ports, sightline_env
from tests.processes import Proc, grpc_serving, http_ok, manage, wait_until
from tests.test_correlation_celery import FAST, send_traces

CHROMIUM = os.environ.get("SIGHTLINE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SIGHTLINE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
USER, PASSWORD = "browser-ops", "pw-browser-ops-1"
SHOP_TRACES = 8
FAILING_TRACES = 4
XSS = ('<script>window.__xss=1</script>', '<img src=x onerror="window.__xss=1">', '"><svg onload=window.__xss=1>')


def in_ci():
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def need(condition, reason):
    """Skip without the browser; under CI a missing browser is a failure."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{reason}. CI is set, so this is a failure, not a skip.", pytrace=False)
    pytest.skip(reason)


def api(base, path, token):
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


def send_failing(endpoint, service, count):
    """count traces of one SERVER span that always fails."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.trace import SpanKind, Status, StatusCode

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True),
                                                   schedule_delay_millis=200))
    tracer = provider.get_tracer("browser-tests")
    for _ in range(count):
        with tracer.start_as_current_span("POST /pay", kind=SpanKind.SERVER) as span:
            span.set_status(Status(StatusCode.ERROR, "card declined"))
    provider.shutdown()


def send_payloads(endpoint, service, peer):
    """One trace whose service name, span names and attribute values carry the XSS payloads,
    with a CLIENT call to an uninstrumented peer whose name carries one too."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.trace import SpanKind

    provider = TracerProvider(resource=Resource.create({"service.name": service, "payload": XSS[0]}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True),
                                                   schedule_delay_millis=200))
    tracer = provider.get_tracer("browser-tests")
    with tracer.start_as_current_span(f"GET {XSS[0]}", kind=SpanKind.SERVER,
                                      attributes={"http.route": XSS[1], "user.note": XSS[2]}):
        with tracer.start_as_current_span(f"call {XSS[1]}", kind=SpanKind.CLIENT,
                                          attributes={"peer.service": peer, "note": XSS[0]}):
            pass
        with tracer.start_as_current_span(XSS[2], kind=SpanKind.INTERNAL, attributes={"x": XSS[1]}):
            pass
    provider.shutdown()


def send_metrics(endpoint, service, prefix):
    """A counter, a histogram and a gauge through the SDK's OTLP metrics exporter, exported
    twice so that the cumulative ones have an increase."""
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint, insecure=True),
                                           export_interval_millis=60_000)
    provider = MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader])
    meter = provider.get_meter("browser-tests")
    requests = meter.create_counter(f"{prefix}.requests", unit="{request}")
    latency = meter.create_histogram(f"{prefix}.latency", unit="ms")
    depth = meter.create_gauge(f"{prefix}.queue.depth", unit="1")
    for round_ in range(2):
        for route, ms in (("/buy", 12.0), ("/buy", 30.0), ("/pay", 250.0), ("/pay", 90.0)):
            requests.add(1, {"route": route})
            latency.record(ms * (round_ + 1), {"route": route})
        depth.set(3 + round_, {"queue": "orders"})
        provider.force_flush()
        time.sleep(1.2)
    provider.shutdown()
    return {"counter": f"{prefix}.requests", "histogram": f"{prefix}.latency", "gauge": f"{prefix}.queue.depth"}


@pytest.fixture(scope="package")
def live(django_db_setup, tmp_path_factory):
    """A running Sightline with the telemetry above, correlated: URLs, names and a token."""
    from django.conf import settings

    ports = free_ports()
    env = sightline_env(ports, tmp_path_factory.mktemp("browser-serve"), DATABASE_URL=database_url(),
                        REDIS_URL=settings.SIGHTLINE_REDIS_URL, DJANGO_SUPERUSER_USERNAME=USER,
                        DJANGO_SUPERUSER_PASSWORD=PASSWORD, DJANGO_SUPERUSER_EMAIL="ops@example.com", **FAST)
    subprocess.run(manage("createsuperuser", "--noinput"), env=env, check=True, capture_output=True)
    token = subprocess.run(manage("create_api_token", USER), env=env, check=True, capture_output=True,
                           text=True).stdout.strip()
    proc = Proc(manage("serve"), env=env)
    base = f"http://127.0.0.1:{ports['web']}"
    try:
        wait_until(lambda: http_ok(f"{base}/healthz"), 90, "web /healthz", proc)
        wait_until(lambda: grpc_serving(ports["grpc"]), 30, "gRPC health SERVING", proc)
        endpoint = f"127.0.0.1:{ports['grpc']}"
        prefix = f"br-{uuid.uuid4().hex[:6]}"
        names = {"frontend": f"{prefix}-frontend", "checkout": f"{prefix}-checkout", "payment": f"{prefix}-payment",
                 "xss": f"{prefix}-xss {''.join(XSS)}", "peer": f"{prefix}-peer {XSS[2]}"}
        send_traces(endpoint, prefix, SHOP_TRACES)
        send_failing(endpoint, names["payment"], FAILING_TRACES)
        send_payloads(endpoint, names["xss"], names["peer"])
        metrics = send_metrics(endpoint, names["checkout"], prefix)

        def correlated():
            status, body = api(base, "/api/v1/services?lookback=15m", token)
            rows = {row["service"]: row for row in body.get("data", [])} if status == 200 else {}
            return (rows.get(names["frontend"], {}).get("requests") == SHOP_TRACES
                    and rows.get(names["payment"], {}).get("requests") == FAILING_TRACES
                    and rows.get(names["xss"], {}).get("requests") == 1)

        wait_until(correlated, 90, "the traces correlated", proc)
        yield {"base": base, "token": token, "names": names, "metrics": metrics, "prefix": prefix, "proc": proc}
    finally:
        proc.stop()


@pytest.fixture(scope="package")
def browser(request, tmp_path_factory):
    """Headless Chromium, logged in as the superuser, with the browser console recorded."""
    need(shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER),
         f"{CHROMIUM} and {CHROMEDRIVER} are needed (Debian: apt-get install chromium chromium-driver)")
    need(importlib.util.find_spec("selenium") is not None, "the selenium package is not installed (requirements-dev.txt)")

    live = request.getfixturevalue("live")  # only once the browser is known to be there

    driver = logged_in_chromium(live["base"], tmp_path_factory.mktemp("chromium-profile"), ("--window-size=1400,1000",))
    try:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        yield driver
    finally:
        driver.quit()


def logged_in_chromium(base, profile_dir, flags=(), user=USER, password=PASSWORD):
    """Headless Chromium (Debian's, through its ChromeDriver) logged in at base as user
    (the test superuser by default), with the console recorded and the login page's messages dropped. The flags
    keep it off the network: this machine's closed network refuses Chromium's own calls."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile_dir}", *flags):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        driver.get(base + "/login/")
        driver.find_element(By.NAME, "username").send_keys(user)
        driver.find_element(By.NAME, "password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        deadline = time.monotonic() + 15
        while "/login/" in driver.current_url and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "/login/" not in driver.current_url, "the login form did not log in"
        driver.get_log("browser")  # the login page's messages are not a page's under test
    except BaseException:
        driver.quit()
        raise
    return driver

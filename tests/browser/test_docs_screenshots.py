"""The documentation's screenshots, taken from a live Sightline filled by `manage.py demo`.

A `serve` of its own, an hour of back-dated demo traffic whose last minutes (and a few
live seconds) have the payment-slow fault, then headless Chromium at 1280 px: the service
map, the services, the checkout service page and its latency hotspots, a slow checkout
trace and the latency SLO. Each page is checked for what the docs say it shows before it
is captured into test-artifacts/screenshots/docs/; with SIGHTLINE_UPDATE_DOC_SCREENSHOTS=1
the images also replace docs/images/. Every image the docs refer to must exist.

Pages are read with env=demo: other browser tests may have put their own services into
the same test database.
"""

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from tests.browser.conftest import CHROMEDRIVER, CHROMIUM, logged_in_chromium, need
from tests.browser.test_browser import CHARTS_DRAWN, severe, wait_for
from tests.conftest import ROOT, database_url, free_ports, sightline_env
from tests.processes import Proc, grpc_serving, http_ok, manage, wait_until

OUT = ROOT / "test-artifacts" / "screenshots" / "docs"
DOC_IMAGES = ROOT / "docs" / "images"
WIDTH = 1280
USER, PASSWORD = "demo", "pw-docs-demo-1"
SHOP = {"frontend", "cart", "checkout", "payment", "inventory", "shipping", "email"}


def api(base, path, **query):
    with urllib.request.urlopen(f"{base}/api/v1/{path}?{urllib.parse.urlencode(query)}", timeout=10) as response:
        return json.load(response)["data"]


@pytest.fixture(scope="module")
def demo_site(django_db_setup, tmp_path_factory):
    """serve with an hour of demo history and the payment-slow fault, correlated and evaluated."""
    from django.conf import settings

    need(shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER),
         f"{CHROMIUM} and {CHROMEDRIVER} are needed (Debian: apt-get install chromium chromium-driver)")
    need(importlib.util.find_spec("selenium"), "the selenium package is not installed (requirements-dev.txt)")
    ports = free_ports()
    env = sightline_env(ports, tmp_path_factory.mktemp("docs-serve"), DATABASE_URL=database_url(),
                        REDIS_URL=settings.SIGHTLINE_REDIS_URL, SIGHTLINE_SETTLE_SECONDS="1",
                        SIGHTLINE_SETTLE_TICK_SECONDS="1", SIGHTLINE_SLO_EVAL_SECONDS="2",
                        SIGHTLINE_PUBLIC_READ="true", DJANGO_SUPERUSER_USERNAME=USER,
                        DJANGO_SUPERUSER_PASSWORD=PASSWORD, DJANGO_SUPERUSER_EMAIL="demo@example.com")
    # the user may be left from an earlier run over the same database: then it is there already
    subprocess.run(manage("createsuperuser", "--noinput"), env=env, capture_output=True)
    serve = Proc(manage("serve"), env=env)
    base = f"http://127.0.0.1:{ports['web']}"
    try:
        wait_until(lambda: http_ok(f"{base}/healthz"), 90, "web /healthz", serve)
        wait_until(lambda: grpc_serving(ports["grpc"]), 30, "gRPC health SERVING", serve)
        demo = Proc(manage("demo", "--history", "1", "--rate", "3", "--fault", "payment-slow", "--duration", "10",
                           "--seed", "42"), env=env)
        try:
            assert demo.proc.wait(90) == 0, demo.output[-5000:]
        finally:
            demo.stop()

        def ready():
            services = {row["service"] for row in api(base, "services", lookback="1h", environment="demo")}
            hotspots = api(base, "hotspots", lookback="1h", service="checkout", environment="demo", limit=1)
            slos = {slo["name"]: slo for slo in api(base, "slos")}
            latency = slos.get("checkout-latency", {})
            return (services == SHOP and hotspots and hotspots[0]["operation"] == "charge"
                    and (latency.get("burn_rates") or {}).get("5m") is not None)

        wait_until(ready, 60, "the demo traffic correlated and the SLOs evaluated", serve)
        yield {"base": base}
    finally:
        serve.stop()


@pytest.fixture(scope="module")
def chromium(demo_site, tmp_path_factory):
    driver = logged_in_chromium(demo_site["base"], tmp_path_factory.mktemp("docs-chromium"),
                                ("--hide-scrollbars", "--force-device-scale-factor=1", f"--window-size={WIDTH},1000"),
                                user=USER, password=PASSWORD)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, site, path):
    driver.get(site["base"] + path)
    wait_for(driver, CHARTS_DRAWN, 20, "every chart drawn")
    time.sleep(0.5)  # plotly's transitions
    errors = severe(driver.get_log("browser"))
    assert not errors, f"console errors on {path}:\n" + "\n".join(e["message"] for e in errors)
    return driver


def bottom_of(driver, selector, margin=16):
    return driver.execute_script(
        "const box = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return box.bottom + window.scrollY + arguments[1];", selector, margin)


def top_of_heading(driver, heading, margin=12):
    return driver.execute_script(
        "const wanted = arguments[0];"
        "const h = Array.prototype.find.call(document.querySelectorAll('h2'),"
        " function (h) { return h.textContent.trim() === wanted; });"
        "return Math.max(0, h.getBoundingClientRect().top + window.scrollY - arguments[1]);", heading, margin)


def capture(driver, name, top=0, bottom=None):
    """A PNG of the page between two heights (CSS px, whole width), beyond the window if need be."""
    driver.execute_script("document.querySelectorAll('.modebar-container').forEach("
                          "function (bar) { bar.style.display = 'none'; });")  # plotly's toolbar
    if bottom is None:
        bottom = driver.execute_script("return document.documentElement.scrollHeight")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": top, "width": WIDTH, "height": bottom - top, "scale": 1}})
    OUT.mkdir(parents=True, exist_ok=True)
    data = base64.b64decode(shot["data"])
    (OUT / f"{name}.png").write_bytes(data)
    if os.environ.get("SIGHTLINE_UPDATE_DOC_SCREENSHOTS", "").strip() == "1":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        (DOC_IMAGES / f"{name}.png").write_bytes(data)


def text(driver, selector="main"):
    return driver.find_element("css selector", selector).text


@pytest.mark.slow
@pytest.mark.django_db
def test_the_docs_screenshots_show_the_demo_shop(demo_site, chromium):
    site, driver = demo_site, chromium

    open_page(driver, site, "/map/?env=demo")
    nodes = int(driver.find_element("id", "service-map").get_attribute("data-node-count"))
    assert nodes >= 9, nodes  # 7 services, postgresql, redis, the kafka topic, the two external peers
    for peer in ("postgresql shop", "redis", "kafka order-events", "api.payments.example"):
        assert peer in text(driver), peer
    capture(driver, "service-map", bottom=bottom_of(driver, "#service-map"))

    open_page(driver, site, "/?env=demo")
    rows = driver.find_elements("css selector", "tr[data-service]")
    assert {row.get_attribute("data-service") for row in rows} == SHOP
    capture(driver, "services", bottom=bottom_of(driver, "main"))

    open_page(driver, site, "/services/checkout/?env=demo")
    assert "checkout" in text(driver, "h1")
    capture(driver, "service", bottom=bottom_of(driver, "#chart-latency"))
    first = driver.find_elements("css selector", "#hotspots-table tbody tr")[0]
    cells = [cell.text for cell in first.find_elements("css selector", "td")]
    assert cells[:2] == ["payment", "charge"], cells
    capture(driver, "hotspots", top=top_of_heading(driver, "Latency hotspots"),
            bottom=bottom_of(driver, "#hotspots-table tbody tr:nth-child(10)", margin=1))

    slow = [row for row in api(site["base"], "traces", lookback="15m", service="frontend", operation="POST /checkout",
                               min_duration="1000ms", status="ok", limit=20)
            if SHOP <= set(row["services"])]
    assert slow, "no slow checkout trace through all seven services"
    open_page(driver, site, f"/traces/{slow[0]['trace_id']}/")
    charge = [row for row in driver.find_elements("css selector", "[role=row].span")
              if re.search(r"\bpayment\s+charge\b", row.text)]
    assert charge and "crit" in charge[0].get_attribute("class").split(), "payment charge is not on the critical path"
    capture(driver, "trace")

    open_page(driver, site, "/slos/checkout-latency/")
    assert "checkout-latency" in text(driver, "h1")
    state = driver.find_element("css selector", "h1 .badge").text
    assert state in ("ticket", "page"), state  # the fault burns the budget
    assert re.search(r"5m \d+(\.\d+)?×", text(driver)), "no 5m burn rate shown"
    capture(driver, "slo", bottom=bottom_of(driver, ".grid"))


def test_every_image_the_docs_show_exists():
    referenced = set()
    for page in sorted((ROOT / "docs").glob("*.md")):
        referenced |= set(re.findall(r"\]\((images/[^)\s]+\.png)\)", page.read_text(encoding="utf-8")))
    assert {"images/service-map.png", "images/hotspots.png", "images/trace.png", "images/slo.png"} <= referenced, \
        "docs/concepts.md no longer shows the screenshots this file takes"
    missing = sorted(path for path in referenced if not (ROOT / "docs" / path).is_file())
    assert not missing, f"docs/*.md show images that do not exist: {missing}"

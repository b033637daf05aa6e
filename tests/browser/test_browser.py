"""Every dashboard page in a real headless Chromium against a live Sightline: the charts
draw, the map and the trace scatter navigate on a real click, nothing logs a SEVERE
console error, and telemetry carrying script payloads never runs. A screenshot of every
page visited lands in test-artifacts/screenshots/."""

import re
import time
from urllib.parse import quote, urlsplit

import pytest

from tests.browser.conftest import SCREENSHOTS, api

# The test database must exist (django_db); not transactional, so no test flushes what the
# live server stored, and pytest-django runs these before the transactional tests.
pytestmark = [pytest.mark.slow, pytest.mark.django_db]

# Messages that are not the page's fault: the browser's own request for a favicon.
EXPECTED_CONSOLE = (re.compile(r"/favicon\.ico"),)


def severe(entries):
    return [entry for entry in entries if entry.get("level") == "SEVERE"
            and not any(pattern.search(entry.get("message", "")) for pattern in EXPECTED_CONSOLE)]


def wait_for(driver, script, timeout=15, what="condition", *args):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(script, *args):
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} on {driver.current_url}")


CHARTS_DRAWN = """
    const charts = document.querySelectorAll('[data-figure]');
    return document.readyState === 'complete' && Array.prototype.every.call(charts, function (chart) {
        return chart.classList.contains('rendered') && chart.querySelector('.main-svg') !== null;
    });
"""


def settle(driver, name):
    """After a navigation: wait for the charts, screenshot, fail on SEVERE console messages."""
    wait_for(driver, CHARTS_DRAWN, what="every chart drawn")
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    errors = severe(driver.get_log("browser"))
    assert not errors, f"console errors on {driver.current_url}:\n" + "\n".join(e["message"] for e in errors)


def visit(browser, live, path, name):
    """Open a page (a 404 is a failure), wait for its charts, screenshot it."""
    browser.get(live["base"] + path)
    assert not (browser.title.startswith("404") or "Not Found" in browser.title), f"{path} answers 404"
    settle(browser, name)
    return browser


def charts(browser):
    return browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('[data-figure]'), function (c) {"
        " return c.id + ':' + c.classList.contains('rendered') + ':' + (c.querySelector('.main-svg') !== null); });")


def service_path(name):
    return "/services/" + quote(name, safe="") + "/"


def click_point(browser, container, url_prefix):
    """Really click (mouse move, then click) the plotly marker whose customdata starts with
    url_prefix, found through the figure JSON the page draws from."""
    from selenium.webdriver.common.action_chains import ActionChains

    where = browser.execute_script("""
        const chart = document.getElementById(arguments[0]);
        const figure = JSON.parse(document.getElementById(chart.dataset.figure).textContent);
        for (let t = 0; t < figure.data.length; t++) {
            const custom = figure.data[t].customdata || [];
            for (let p = 0; p < custom.length; p++) {
                const value = Array.isArray(custom[p]) ? custom[p][0] : custom[p];
                if (typeof value === 'string' && value.indexOf(arguments[1]) === 0) { return [t, p, value]; }
            }
        }
        return null;""", container, url_prefix)
    assert where, f"no point in #{container} links to {url_prefix}"
    trace, index, target = where
    point = browser.execute_script(
        "const traces = document.getElementById(arguments[0]).querySelectorAll('g.scatterlayer > g.trace');"
        "return traces[arguments[1]].querySelectorAll('path.point')[arguments[2]];", container, trace, index)
    assert point is not None, f"point {index} of trace {trace} is not drawn in #{container}"
    ActionChains(browser).move_to_element(point).pause(0.3).click().perform()
    return target


def wait_for_path(browser, prefix, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if urlsplit(browser.current_url).path.startswith(prefix):
            return
        time.sleep(0.1)
    raise AssertionError(f"the click did not navigate to {prefix}: still on {browser.current_url}")


def trace_id(live, service):
    status, body = api(live["base"], f"/api/v1/traces?lookback=1h&limit=1&service={quote(service, safe='')}",
                       live["token"])
    assert status == 200 and body["data"], body
    row = body["data"][0]
    return row.get("trace_id") or row.get("traceID") or row.get("id")


def test_the_services_overview_lists_the_services(browser, live):
    visit(browser, live, "/", "services")
    text = browser.find_element("css selector", "main").text
    for key in ("frontend", "checkout", "payment"):
        assert live["names"][key] in text
    state = browser.execute_script(
        "return document.querySelector('tr[data-service=\"' + arguments[0] + '\"] .badge').textContent;",
        live["names"]["payment"])
    assert state == "failing"


def test_the_service_map_draws_every_node_and_a_click_opens_the_service(browser, live):
    visit(browser, live, "/map/", "service-map")
    chart = browser.find_element("id", "service-map")
    # frontend, checkout, payment, the payload service: services; postgresql: a database; the payload peer
    assert chart.get_attribute("data-node-count") == "6"
    assert "rendered" in chart.get_attribute("class")
    target = click_point(browser, "service-map", service_path(live["names"]["checkout"]))
    wait_for_path(browser, service_path(live["names"]["checkout"]))
    settle(browser, "service-map-clicked")
    assert target.startswith(service_path(live["names"]["checkout"]))
    assert live["names"]["checkout"] in browser.find_element("css selector", "main").text


def test_the_service_page_draws_its_charts(browser, live):
    visit(browser, live, service_path(live["names"]["frontend"]), "service")
    assert live["names"]["frontend"] in browser.find_element("tag name", "h1").text
    drawn = charts(browser)
    assert drawn and all(item.endswith(":true:true") for item in drawn), drawn


def test_trace_search_draws_the_scatter_and_a_click_opens_the_trace(browser, live):
    visit(browser, live, "/traces/?service=" + quote(live["names"]["frontend"], safe=""), "trace-search")
    chart = browser.find_element("id", "trace-scatter")
    assert int(chart.get_attribute("data-point-count")) == 8
    assert "rendered" in chart.get_attribute("class")
    target = click_point(browser, "trace-scatter", "/traces/")
    wait_for_path(browser, target.split("?")[0])
    settle(browser, "trace-search-clicked")


def test_the_trace_view_marks_the_critical_path(browser, live):
    visit(browser, live, f"/traces/{trace_id(live, live['names']['frontend'])}/", "trace")
    rows = browser.find_elements("css selector", "[role=row].span")
    assert len(rows) == 4  # GET /buy, POST checkout, POST /checkout, SELECT orders
    assert browser.find_elements("css selector", "[role=row].span.crit")
    assert live["names"]["checkout"] in browser.find_element("css selector", "main").text


def test_the_metrics_explorer_charts_a_metric_sent_by_the_sdk(browser, live):
    name = live["metrics"]["histogram"]
    visit(browser, live, f"/explore/metrics/?metric={quote(name)}&group=route", "metrics")
    chart = browser.find_element("id", "metric-chart")
    assert "rendered" in chart.get_attribute("class")
    legend = [item.text for item in browser.find_elements("css selector", "#metric-chart g.legend g.traces")]
    assert legend == ["route=/buy p50", "route=/buy p95", "route=/buy p99",
                      "route=/pay p50", "route=/pay p95", "route=/pay p99"]
    browser.get(live["base"] + f"/explore/metrics/?metric={quote(live['metrics']['counter'])}")
    settle(browser, "metrics-counter")
    assert "rate per second" in browser.find_element("id", "metric-chart").text


@pytest.mark.parametrize("page", ["services", "map", "service", "trace-search", "trace", "metrics"])
def test_telemetry_carrying_scripts_never_runs(browser, live, page):
    xss = live["names"]["xss"]
    paths = {
        "services": "/",
        "map": "/map/",
        "service": service_path(xss),
        "trace-search": "/traces/?service=" + quote(xss, safe=""),
        "trace": None,
        "metrics": "/explore/metrics/",
    }
    path = paths[page] or f"/traces/{trace_id(live, xss)}/"
    visit(browser, live, path, f"xss-{page}")
    assert browser.execute_script("return typeof window.__xss") == "undefined"
    assert not browser.find_elements("css selector", "main script:not([type='application/json']), main img[src=x], "
                                                     "main svg[onload]")
    if page in ("services", "service", "trace-search", "trace"):  # shown as text, in HTML
        assert "<script>window.__xss=1</script>" in browser.find_element("css selector", "main").text

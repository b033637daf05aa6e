"""The service map and the service page over stored, correlated traces (real PostgreSQL)."""

import json
import os
import re
import time
from html import unescape

import pytest
from django.urls import NoReverseMatch, reverse

from dashboards.service_pages import layout
from ingest import convert, writer
from tests.otlp_builders import spans_request
from tests.shop import checkout_trace
from traces.correlate import correlate_traces

pytestmark = pytest.mark.django_db(transaction=True)

MS = 1_000_000
MINUTE = 60_000_000_000
SERVER, CLIENT, PRODUCER = 2, 3, 4
EVIL = "<script>alert(1)</script>\nx"
EVIL_OPERATION = "<img src=x onerror=alert(2)>"


def store(traces):
    ids = []
    for trace_id, spans in traces:
        writer.write_spans(convert.convert_traces(spans_request(spans)))
        ids.append(trace_id)
    correlate_traces(ids)
    return [trace_id.hex() for trace_id in ids]


def span(service, name, kind, trace_id, start_ns, length_ms, parent=None, **extra):
    span_id = os.urandom(8)
    return dict(service=service, name=name, kind=kind, trace_id=trace_id, span_id=span_id, parent=parent,
                start_ns=start_ns, end_ns=start_ns + length_ms * MS, **extra)


def shop_trace(prefix, index, start_ns, error):
    """checkout_trace (frontend -> payment -> postgresql) plus payment publishing to kafka
    "orders" and frontend calling an external API, and a call into a service with a hostile name."""
    trace_id, spans = checkout_trace(prefix, index, start_ns, error=error)
    root, pay_server = spans[0]["span_id"], spans[2]["span_id"]
    spans.append(span(f"{prefix}-payment", "orders publish", PRODUCER, trace_id, start_ns + 50 * MS, 2, pay_server,
                      attributes={"messaging.system": "kafka", "messaging.destination.name": "orders"}))
    spans.append(span(f"{prefix}-frontend", "GET rates", CLIENT, trace_id, start_ns + 5 * MS, 3, root,
                      attributes={"server.address": f"{prefix}.rates.example"}))
    call = span(f"{prefix}-frontend", "GET /audit", CLIENT, trace_id, start_ns + 2 * MS, 3, root)
    spans.append(call)
    spans.append(span(f"{prefix}-{EVIL}", EVIL_OPERATION, SERVER, trace_id, start_ns + 3 * MS, 1, call["span_id"]))
    return trace_id, spans


@pytest.fixture
def shop():
    prefix = f"map-{os.urandom(3).hex()}"
    now = time.time_ns()
    ids = store(shop_trace(prefix, index, now - (10 - index) * MINUTE, error=index in (2, 5, 6)) for index in range(8))
    return {"prefix": prefix, "front": f"{prefix}-frontend", "pay": f"{prefix}-payment", "evil": f"{prefix}-{EVIL}",
            "ids": ids, "failing": [ids[i] for i in (2, 5, 6)]}


@pytest.fixture
def ring():
    """alpha -> beta -> alpha: a cycle of services."""
    prefix = f"ring-{os.urandom(3).hex()}"
    alpha, beta = f"{prefix}-alpha", f"{prefix}-beta"
    traces = []
    for index in range(3):
        trace_id, start = os.urandom(16), time.time_ns() - (5 - index) * MINUTE
        a1 = span(alpha, "GET /a", SERVER, trace_id, start, 50)
        a2 = span(alpha, "GET /b", CLIENT, trace_id, start + MS, 40, a1["span_id"])
        b1 = span(beta, "GET /b", SERVER, trace_id, start + 2 * MS, 38, a2["span_id"])
        b2 = span(beta, "GET /back", CLIENT, trace_id, start + 3 * MS, 30, b1["span_id"])
        a3 = span(alpha, "GET /back", SERVER, trace_id, start + 4 * MS, 28, b2["span_id"])
        traces.append((trace_id, [a1, a2, b1, b2, a3]))
    store(traces)
    return {"alpha": alpha, "beta": beta}


def figure_json(response, block_id):
    """The figure of a json_script block, as the browser would read it."""
    html = response.content.decode()
    found = re.search(rf'<script id="{block_id}" type="application/json">(.*?)</script>', html, re.S)
    assert found, f"no {block_id} block"
    return json.loads(found.group(1))


def map_nodes(figure):
    """{name (as shown, unescaped): (type, colour, x, customdata)} of the node traces."""
    nodes = {}
    for trace in figure["data"]:
        if "meta" not in trace:
            continue
        for i, name in enumerate(trace["meta"]["names"]):
            nodes[unescape(name)] = (trace["meta"]["types"][i], trace["marker"]["color"], trace["x"][i],
                                     trace["customdata"][i])
    return nodes


def route(name, **kwargs):
    try:
        return reverse(name, kwargs=kwargs)
    except NoReverseMatch:
        return None


def test_the_map_draws_services_and_what_they_call(logged_in, shop):
    response = logged_in.get("/map/", {"range": "1h"})
    assert response.status_code == 200
    figure = figure_json(response, "service-map-data")
    nodes = map_nodes(figure)
    front, pay, evil = shop["front"], shop["pay"], shop["evil"]
    rates = f"{shop['prefix']}.rates.example"
    assert {name: value[0] for name, value in nodes.items()} == {
        front: "service", pay: "service", evil: "service", "postgresql": "database", "kafka orders": "messaging",
        rates: "external"}
    assert 'data-node-count="6"' in response.content.decode() and 'id="service-map"' in response.content.decode()
    # colours follow error rates: payment fails 3 of 8 requests, the others never
    colours = {name: value[1] for name, value in nodes.items()}
    assert colours[pay] == "#cf222e" and colours[front] == colours["postgresql"] == "#2da44e"
    assert colours[front] != colours[pay]
    # layers, left to right: a caller left of its callee
    x = {name: value[2] for name, value in nodes.items()}
    assert x[front] < x[pay] < x["postgresql"] and x[pay] < x["kafka orders"] and x[front] < x[rates]
    # clicking a service opens its page, keeping the window; virtual nodes go nowhere
    assert nodes[pay][3] == f"/services/{pay}/"
    assert nodes["postgresql"][3] == ""
    # edges: an arrow per edge and a label with calls/s, error rate and p95
    edge_labels = next(trace for trace in figure["data"] if trace.get("name") == "calls")
    assert len(edge_labels["text"]) == 5 and len(figure["layout"]["annotations"]) == 5
    assert all(a["arrowhead"] and a["showarrow"] for a in figure["layout"]["annotations"])
    pay_to_db = next(text for text, hover in zip(edge_labels["text"], edge_labels["hovertext"])
                     if hover.startswith(f"{pay} → postgresql"))
    assert re.fullmatch(r"[\d.]+/min · 0\.00 % · p95 [\d.]+ ms", pay_to_db)
    front_to_pay = next(hover for hover in edge_labels["hovertext"] if hover.startswith(f"{front} → {pay}"))
    assert "8 calls" in front_to_pay and "errors 3 (37.50 %)" in front_to_pay
    # the accessible table holds every edge
    rows = response.context["edges"]
    assert {(row["parent"], row["child"], row["child_type"]) for row in rows} == {
        (front, pay, "service"), (front, evil, "service"), (front, rates, "external"),
        (pay, "postgresql", "database"), (pay, "kafka orders", "messaging")}
    assert 'id="edges-table"' in response.content.decode()


    # links keep the window
    response = logged_in.get("/map/", {"range": "6h"})
    assert map_nodes(figure_json(response, "service-map-data"))[pay][3] == f"/services/{pay}/?range=6h"
    assert f'href="/services/{pay}/?range=6h"' in response.content.decode()


def test_a_cycle_of_services_is_laid_out(logged_in, ring):
    response = logged_in.get("/map/")
    nodes = map_nodes(figure_json(response, "service-map-data"))
    assert set(nodes) == {ring["alpha"], ring["beta"]}
    assert nodes[ring["alpha"]][2] != nodes[ring["beta"]][2]  # two layers, not one on top of the other
    assert len(response.context["edges"]) == 2


def test_the_layout_layers_orders_and_survives_cycles():
    # a -> b -> c, a -> c (spans two layers), c -> a (closes a cycle), d alone
    positions, paths = layout(["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("a", "c"), ("c", "a"), ("b", "b")])
    assert positions["a"][0] == 0 and positions["b"][0] == 1 and positions["c"][0] == 2 and positions["d"][0] == 0
    assert len(paths[("a", "c")]) == 3  # through a point in the middle layer, not through b
    assert paths[("a", "c")][1] != positions["b"]
    assert paths[("c", "a")][0] == positions["c"] and paths[("c", "a")][-1] == positions["a"]
    assert ("b", "b") not in paths
    # crossings removed: x1 -> y2, x2 -> y1 is drawn uncrossed
    positions, _ = layout(["x1", "x2", "y1", "y2"], [("x1", "y2"), ("x2", "y1")])
    assert (positions["x1"][1] > positions["x2"][1]) == (positions["y2"][1] > positions["y1"][1])


def test_fifty_nodes_are_laid_out_quickly():
    nodes = [f"s{i}" for i in range(50)]
    edges = [(f"s{i}", f"s{j}") for i in range(50) for j in (i * 2 + 1, i * 2 + 2, (i * 7) % 50) if j < 50 and j != i]
    started = time.perf_counter()
    positions, paths = layout(nodes, edges)
    assert time.perf_counter() - started < 1.0
    assert len(positions) == 50 and len(set(positions.values())) == 50


def test_telemetry_strings_are_escaped_everywhere(logged_in, shop):
    first = logged_in.get("/map/")
    evil_url = map_nodes(figure_json(first, "service-map-data"))[shop["evil"]][3]  # what a click opens
    assert evil_url == "/services/" + shop["prefix"] + "-%3Cscript%3Ealert(1)%3C/script%3E%0Ax/"
    pages = [first, logged_in.get(evil_url), logged_in.get(f"/services/{shop['front']}/")]
    for response in pages:
        assert response.status_code == 200
        html = response.content.decode()
        assert "<script>alert" not in html and "<img src=x" not in html
        for tag in re.findall(r"<script[^>]*>", html):
            assert 'type="application/json"' in tag or " src=" in tag
    html = pages[0].content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the table, escaped by the template
    shown = map_nodes(figure_json(pages[0], "service-map-data"))
    assert shop["evil"] in shown  # escaped for plotly: unescaping gives the name back
    names = [name for trace in figure_json(pages[0], "service-map-data")["data"] if "meta" in trace
             for name in trace["meta"]["names"]]
    assert not any("<" in name for name in names)
    # the hostile service's own page: its name, operation and figures are all escaped
    evil = pages[1]
    assert evil.context["service"] == shop["evil"]
    assert "&lt;img src=x onerror=alert(2)&gt;" in evil.content.decode()


def test_the_service_page_shows_what_the_service_does(logged_in, shop):
    response = logged_in.get(f"/services/{shop['pay']}/", {"range": "1h"})
    assert response.status_code == 200
    html = response.content.decode()
    context = response.context
    assert context["summary"]["requests"] == 8 and context["summary_error_pct"] == "37.50 %"
    # RED charts: 8 requests over the buckets, 3 of them failing
    rate = figure_json(response, "rate-data")["data"][0]
    seconds = context["window"].step.total_seconds()
    assert sum(rate["y"]) * seconds == pytest.approx(8, abs=0.01)
    errors = figure_json(response, "errors-data")["data"][0]
    assert sum(errors["y"]) * seconds == pytest.approx(3, abs=0.01)
    latency = figure_json(response, "latency-data")["data"]
    assert [trace["name"] for trace in latency] == ["p50", "p95", "p99"]
    assert any(value and 60 < value < 90 for value in latency[1]["y"])  # payment's server span: 70 + index ms
    # operations, sortable
    operations = {(row["operation"], row["span_kind"]) for row in context["operations"]}
    assert operations == {("POST /pay", "server"), ("SELECT", "client"), ("orders publish", "producer")}
    assert 'class="sortable" id="operations-table"' in html
    # heatmap: counts per time bucket and latency band add up to the requests
    heatmap = figure_json(response, "heatmap-data")["data"][0]
    assert heatmap["type"] == "heatmap" and len(heatmap["x"]) == len(rate["x"])
    assert sum(count or 0 for row in heatmap["z"] for count in row) == 8
    assert 1 <= len(heatmap["y"]) <= 30 and all(name.endswith(" ms") for name in heatmap["y"])
    # hotspots over the traces through payment, with exemplar traces
    hotspots = {(row["service"], row["operation"]): row for row in context["hotspots"]}
    assert (shop["pay"], "POST /pay") in hotspots and (shop["front"], "GET /checkout") in hotspots
    exemplars = hotspots[(shop["pay"], "POST /pay")]["exemplars"]
    assert exemplars and all(trace_id in shop["ids"] for trace_id, _ in exemplars)
    for trace_id, url in exemplars:
        expected = route("trace", trace_id=trace_id)
        assert url == (expected or "")
        assert (f'href="{expected}"' if expected else trace_id[:8]) in html
    # upstream: frontend, linked; downstream: the database and the queue, not linked
    assert [(edge["peer"], edge["peer_url"]) for edge in context["upstream"]] == [
        (shop["front"], f"/services/{shop['front']}/")]
    assert {(edge["peer"], edge["peer_type"], edge["peer_url"]) for edge in context["downstream"]} == {
        ("postgresql", "database", ""), ("kafka orders", "queue", "")}
    assert f'href="/services/{shop["front"]}/"' in html
    # recent errors: the three failing traces, newest first, linked
    assert [row["trace_id"] for row in context["errors"]] == shop["failing"][::-1]
    for trace_id in shop["failing"]:
        assert trace_id in html
        expected = route("trace", trace_id=trace_id)
        if expected:
            assert f'href="{expected}"' in html


def test_a_service_name_with_a_slash_has_its_page(logged_in):
    # a name with "/" and ".." still round-trips: the link encodes what a browser would fold
    from dashboards.service_pages import service_url
    from dashboards.window import Window

    window = Window(None, None, "1h", None)
    assert service_url("a/../b", window) == "/services/a%2F..%2Fb/"
    response = logged_in.get("/services/a%2F..%2Fb/")
    assert response.status_code == 200 and response.context["service"] == "a/../b"
    assert logged_in.get("/services/team/api/").context["service"] == "team/api"


def test_a_quiet_service_shows_an_empty_state(logged_in, ring):
    response = logged_in.get("/services/nobody-here/", {"range": "15m"})
    assert response.status_code == 200 and response.context["empty"]
    assert 'id="service-empty"' in response.content.decode()
    quiet_map = logged_in.get("/map/", {"env": "nowhere"})
    assert quiet_map.status_code == 200 and 'data-node-count="0"' in quiet_map.content.decode()
    assert quiet_map.context["map"] is None


def test_a_bad_window_parameter_is_a_400(logged_in):
    for url in ("/map/", "/services/checkout/"):
        response = logged_in.get(url, {"range": "3y"})
        assert response.status_code == 400 and "range:" in response.content.decode()


def test_the_pages_need_a_login(client):
    for url in ("/map/", "/services/x/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")

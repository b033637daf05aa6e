"""The trace search and trace view pages, over stored traces (real PostgreSQL)."""

import json
import os
import re
import time

import pytest

from ingest import convert, writer
from tests.otlp_builders import any_value, spans_request
from tests.shop import checkout_trace, store_checkouts
from traces.correlate import correlate_traces

pytestmark = pytest.mark.django_db(transaction=True)

MS = 1_000_000
SERVER, CLIENT, INTERNAL = 2, 3, 1
SCRIPT, IMG = "<script>alert(1)</script>", "<img src=x onerror=alert(1)>"


def store(spans, correlate=True, edit=None):
    request = spans_request(spans)
    if edit:
        edit(request)
    writer.write_spans(convert.convert_traces(request))
    if correlate:
        correlate_traces([spans[0]["trace_id"]])


@pytest.fixture
def shop():
    """Eight checkout traces a minute apart (root 100 + index ms), failing at payment in 2, 5, 6."""
    prefix = f"tp-{os.urandom(3).hex()}"
    ids = [trace_id.hex() for trace_id in store_checkouts(prefix)]
    return {"front": f"{prefix}-frontend", "pay": f"{prefix}-payment", "ids": ids}


def search(client, expect=200, **query):
    response = client.get("/traces/", {"range": "1h", **query})
    assert response.status_code == expect, response.content[:800]
    return response


def found(response):
    return [row["trace_id"] for row in response.context["rows"]]


def details_of(html):
    block = re.search(r'<script id="trace-details" type="application/json">(.*?)</script>', html, re.S)
    details = json.loads(block.group(1))
    return [{**span, "resource": details["resources"][span["resource"]]} for span in details["spans"]]


def waterfall(html):
    """(span id, depth, classes) of every waterfall row, in page order."""
    return [(span_id, int(depth), classes.split()) for classes, depth, span_id in
            re.findall(r'<div class="([^"]*)" role="row" data-i="\d+" data-depth="(\d+)" id="span-([0-9a-f]+)"', html)]


# --- Trace search ----------------------------------------------------------------------------


def test_search_lists_the_traces_of_a_service_newest_first_with_links(logged_in, shop):
    response = search(logged_in, service=shop["front"])
    assert found(response) == shop["ids"][::-1]
    html = response.content.decode()
    for trace_id in shop["ids"]:
        assert f'href="/traces/{trace_id}/"' in html  # the default window keeps no parameter
    assert 'id="trace-table"' in html and 'class="sortable"' in html
    row = response.context["rows"][0]
    assert (row["root_service"], row["root_operation"], row["span_count"], row["duration_ms"]) == \
        (shop["front"], "GET /checkout", 4, 107.0)


def test_the_scatter_has_a_point_per_trace_linking_to_it_errors_apart(logged_in, shop):
    response = search(logged_in, service=shop["front"], range="6h")
    html = response.content.decode()
    assert 'id="trace-scatter"' in html and 'data-point-count="8"' in html
    assert '<input type="hidden" name="range" value="6h">' in html  # the filter form keeps the window
    traces = {trace["name"]: trace for trace in response.context["figure"]["data"]}
    assert sorted(traces) == ["ok", "with errors"]
    assert len(traces["ok"]["x"]) == 5 and len(traces["with errors"]["customdata"]) == 3
    assert traces["with errors"]["marker"]["symbol"] != traces["ok"]["marker"]["symbol"]
    urls = traces["ok"]["customdata"] + traces["with errors"]["customdata"]
    assert sorted(urls) == sorted(f"/traces/{trace_id}/?range=6h" for trace_id in shop["ids"])
    assert sorted(traces["with errors"]["y"]) == [102.0, 105.0, 106.0]
    assert "GET /checkout" in traces["ok"]["text"][0] and "4 spans" in traces["ok"]["text"][0]
    # the figure travels in a JSON block that app.js draws
    figure = json.loads(re.search(r'<script id="trace-scatter-data" type="application/json">(.*?)</script>',
                                  html, re.S).group(1))
    assert sum(len(trace["x"]) for trace in figure["data"]) == 8


def test_search_filters_by_operation_attribute_duration_and_errors(logged_in, shop):
    ids = shop["ids"]
    pay = shop["pay"]
    assert set(found(search(logged_in, service=pay, operation="POST /pay"))) == set(ids)
    assert found(search(logged_in, service=pay, operation="GET /checkout")) == []
    # attributes: key=value lines in the form, or attr.KEY=VALUE in a link; a number matches its text
    assert set(found(search(logged_in, service=pay, attributes="tenant=t-1\n"))) == {ids[i] for i in (1, 3, 5, 7)}
    assert set(found(search(logged_in, service=pay, attributes="tenant = t-1\nhttp.response.status_code=500"))) \
        == {ids[5]}
    assert set(found(search(logged_in, **{"service": pay, "attr.http.response.status_code": "500"}))) \
        == {ids[i] for i in (2, 5, 6)}
    assert set(found(search(logged_in, service=pay, min_duration="105ms"))) == {ids[i] for i in (5, 6, 7)}
    assert set(found(search(logged_in, service=pay, max_duration="102"))) == {ids[i] for i in (0, 1, 2)}
    assert set(found(search(logged_in, service=pay, min_duration="101ms", max_duration="0.103s"))) == \
        {ids[i] for i in (1, 2, 3)}
    response = search(logged_in, service=pay, errors="1")
    assert set(found(response)) == {ids[i] for i in (2, 5, 6)}
    html = response.content.decode()
    assert 'name="errors" value="1" checked' in html and f'value="{pay}"' in html  # the form keeps the search


def test_load_more_continues_with_older_traces_keeping_the_search(logged_in, shop):
    first = search(logged_in, service=shop["front"], limit="3", range="6h")
    assert found(first) == shop["ids"][::-1][:3]
    more = first.context["more"]
    assert more and "range=6h" in more and "limit=3" in more and "before=" in more
    assert f'href="/traces/?{more.replace("&", "&amp;")}"' in first.content.decode()
    second = logged_in.get("/traces/?" + more)
    assert found(second) == shop["ids"][::-1][3:6]
    third = logged_in.get("/traces/?" + second.context["more"])
    assert found(third) == shop["ids"][::-1][6:] and third.context["more"] is None


def test_a_bad_filter_is_a_400_naming_it(logged_in):
    for query, name in (({"min_duration": "soon"}, "min_duration"), ({"limit": "0"}, "limit"),
                        ({"min_duration": "2s", "max_duration": "1s"}, "min_duration"),
                        ({"attributes": "no equals sign"}, "attributes"), ({"before": "nonsense"}, "cursor"),
                        ({"errors": "maybe"}, "errors"), ({"attr.": "x"}, "attr.")):
        response = search(logged_in, expect=400, **query)
        assert f"{name}:" in response.content.decode()


def test_search_needs_a_login(client):
    response = client.get("/traces/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


# --- Trace view ------------------------------------------------------------------------------


def test_the_waterfall_shows_the_spans_in_tree_order_with_self_times_and_the_critical_path(logged_in, shop):
    trace_id = shop["ids"][0]  # root 100 ms: self times 20 / 10 / 50 / 20 ms, one chain: all critical
    response = logged_in.get(f"/traces/{trace_id}/", {"range": "6h"})
    assert response.status_code == 200
    html = response.content.decode()
    rows = waterfall(html)
    assert [depth for _, depth, _ in rows] == [0, 1, 2, 3]
    assert all("crit" in classes for _, _, classes in rows) and html.count('title="on the critical path">CP<') == 4
    details = details_of(html)
    assert [(d["service"], d["name"], d["self_time_ms"]) for d in details] == [
        (shop["front"], "GET /checkout", 20.0), (shop["front"], "POST /pay", 10.0),
        (shop["pay"], "POST /pay", 50.0), (shop["pay"], "SELECT", 20.0)]
    assert [span_id for span_id, _, _ in rows] == [d["span_id"] for d in details]
    for value in ("20.00", "10.00", "50.00"):
        assert f'<div class="num self" role="gridcell">{value}</div>' in html
    # bars: placed by offset and duration relative to the 100 ms trace
    assert 'style="left:0.000%;width:100.000%"' in html and 'style="left:20.000%;width:20.000%"' in html
    assert html.count('class="toggle" aria-expanded="true"') == 3  # every span with children
    assert "Correlated" in html and 'id="not-correlated"' not in html
    assert "100.00 ms" in html and "range=6h" in html  # the window is kept in the links
    assert "sightline/trace.js" in html and "onclick" not in html


def test_errors_are_marked_in_the_waterfall_and_the_summary(logged_in, shop):
    html = logged_in.get(f"/traces/{shop['ids'][2]}/").content.decode()
    rows = waterfall(html)
    assert ["err" in classes for _, _, classes in rows] == [False, False, True, False]
    assert html.count('title="error">ERR<') == 1
    error = details_of(html)[2]
    assert error["error"] and error["status"] == {"code": "error", "message": "card declined"}
    assert error["attributes"]["http.response.status_code"] == 500


def odd_trace(prefix):
    """web's root (with a hostile name), api's server span 50 ms behind by its clock (shifted),
    a web step in parallel with it (off the critical path), and a span whose parent never arrived."""
    trace_id, t0 = os.urandom(16), time.time_ns() - 120 * 1_000_000_000
    ids = {name: os.urandom(8) for name in "RSAO"}
    web, api = f"{prefix}-web", f"{prefix}-api"
    spans = [
        dict(service=web, name=SCRIPT, kind=CLIENT, trace_id=trace_id, span_id=ids["R"], start_ns=t0,
             end_ns=t0 + 100 * MS, attributes={"note": IMG, SCRIPT: "key"}),
        dict(service=api, name="S", kind=SERVER, trace_id=trace_id, span_id=ids["S"], parent=ids["R"],
             start_ns=t0 - 30 * MS, end_ns=t0 + 30 * MS, status=2, message=IMG),
        dict(service=web, name="A", kind=INTERNAL, trace_id=trace_id, span_id=ids["A"], parent=ids["R"],
             start_ns=t0 + 30 * MS, end_ns=t0 + 60 * MS),
        dict(service=web, name="O", kind=INTERNAL, trace_id=trace_id, span_id=ids["O"], parent=os.urandom(8),
             start_ns=t0 + 40 * MS, end_ns=t0 + 50 * MS),
    ]

    def add_events_and_links(request):
        for resource_spans in request.resource_spans:
            for span in resource_spans.scope_spans[0].spans:
                if span.name == "S":
                    event = span.events.add(name="exception", time_unix_nano=t0 - 20 * MS)
                    event.attributes.add(key="exception.message", value=any_value(SCRIPT))
                    link = span.links.add(trace_id=os.urandom(16), span_id=os.urandom(8))
                    link.attributes.add(key="why", value=any_value("retry of"))

    return trace_id, ids, spans, add_events_and_links


def test_the_trace_view_notes_skew_orphans_and_shows_events_links_and_resources(logged_in):
    trace_id, ids, spans, edit = odd_trace(f"odd-{os.urandom(3).hex()}")
    store(spans, edit=edit)
    html = logged_in.get(f"/traces/{trace_id.hex()}/").content.decode()
    rows = waterfall(html)
    # the root, its children in start order (S starts at -30 ms by api's clock), then the orphan's tree
    assert [(span_id, depth) for span_id, depth, _ in rows] == [
        (ids["R"].hex(), 0), (ids["S"].hex(), 1), (ids["A"].hex(), 1), (ids["O"].hex(), 0)]
    details = {d["span_id"]: d for d in details_of(html)}
    s = details[ids["S"].hex()]
    assert s["skew_ms"] == 50.0 and s["offset_ms"] == 20.0  # centred in the root
    assert 'id="skew-note"' in html and 'id="orphans"' in html and details[ids["O"].hex()]["orphan"]
    assert [e["name"] for e in s["events"]] == ["exception"] and s["events"][0]["attributes"] == \
        {"exception.message": SCRIPT}
    assert s["links"][0]["attributes"] == {"why": "retry of"} and len(s["links"][0]["trace_id"]) == 32
    assert s["resource"]["service.name"].endswith("-api") and s["scope"] == {"name": "tests", "version": "1.0"}
    critical = {span_id for span_id, _, classes in rows if "crit" in classes}
    assert ids["R"].hex() in critical and ids["S"].hex() in critical and ids["A"].hex() not in critical
    assert {d["span_id"] for d in details.values() if d["on_critical_path"]} == critical


def test_telemetry_text_is_escaped_everywhere(logged_in):
    prefix = f"xss-{os.urandom(3).hex()}"
    trace_id, _, spans, edit = odd_trace(prefix)
    store(spans, edit=edit)
    trace = logged_in.get(f"/traces/{trace_id.hex()}/").content.decode()
    results = search(logged_in, service=f"{prefix}-web", attributes=f"note={IMG}")
    assert found(results) == [trace_id.hex()]
    for html in (trace, results.content.decode()):
        assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in trace  # the row and the title show it as text
    assert details_of(trace)[0]["name"] == SCRIPT and details_of(trace)[0]["attributes"]["note"] == IMG
    hover = results.context["figure"]["data"][0]["text"][0]
    assert "&lt;script&gt;" in hover and "<script" not in hover


def test_a_trace_not_correlated_yet_is_analysed_live(logged_in):
    prefix = f"late-{os.urandom(3).hex()}"
    trace_id, spans = checkout_trace(prefix, 3, time.time_ns() - 60_000_000_000)
    store(spans[1:], correlate=False)  # the root has not arrived
    html = logged_in.get(f"/traces/{trace_id.hex()}/").content.decode()
    assert 'id="not-correlated"' in html and "root span missing" in html
    assert [depth for _, depth, _ in waterfall(html)] == [0, 1, 2]


def test_an_unknown_trace_is_a_404_and_a_bad_id_a_400(logged_in):
    missing = logged_in.get(f"/traces/{os.urandom(16).hex()}/")
    assert missing.status_code == 404 and "Trace not found" in missing.content.decode()
    for bad in ("not-hex", "0" * 32, "a" * 33):
        response = logged_in.get(f"/traces/{bad}/")
        assert response.status_code == 400 and "trace_id:" in response.content.decode()


def test_a_trace_of_5000_spans_renders_quickly(logged_in):
    """A 4-ary tree of 4,990 spans under a 10-span chain; the rows are plain server-made HTML."""
    trace_id, t0, prefix = os.urandom(16), time.time_ns() - 300 * 1_000_000_000, f"big-{os.urandom(3).hex()}"
    span_ids = [os.urandom(8) for _ in range(5000)]
    spans = []
    for i, span_id in enumerate(span_ids):
        parent = None if i == 0 else span_ids[i - 1] if i < 10 else span_ids[9 + (i - 10) // 4]
        spans.append(dict(service=f"{prefix}-{i % 7}", name=f"op {i % 50}", kind=INTERNAL, trace_id=trace_id,
                          span_id=span_id, parent=parent, start_ns=t0 + i * 1000, end_ns=t0 + 10_000 * MS - i * 1000,
                          status=2 if i % 997 == 0 else 0, attributes={"i": i}))
    store(spans)
    timings, cpu = [], []
    for _ in range(2):
        began, began_cpu = time.perf_counter(), time.process_time()
        response = logged_in.get(f"/traces/{trace_id.hex()}/")  # the server runs in this process
        timings.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
        assert response.status_code == 200
    html = response.content.decode()
    rows = waterfall(html)
    assert len(rows) == 5000 and len(details_of(html)) == 5000
    # tree order: every span's parent comes before it, one level up
    position = {span_id: (index, depth) for index, (span_id, depth, _) in enumerate(rows)}
    for span in spans[1:]:
        index, depth = position[span["span_id"].hex()]
        parent_index, parent_depth = position[span["parent"].hex()]
        assert parent_index < index and depth == parent_depth + 1
    print(f"\n5,000-span trace page: best {min(timings) * 1000:.0f} ms ({min(cpu) * 1000:.0f} ms of CPU in Django), "
          f"{len(html) / 1e6:.1f} MB of HTML")
    assert min(cpu) < 1.0 and min(timings) < 2.0  # wall time is generous: test machines are shared

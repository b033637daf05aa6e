"""The metrics explorer page over metrics stored through the real ingest path: the
catalogue in the picker, the stat each type is charted with, groups, filters, empty
states, a bad parameter, and telemetry text escaped."""

import datetime as dt
import html
import json
import re

import pytest

from tests.test_api_metrics import (CUMULATIVE, DELTA, MINUTE, S, T0, Export, histogram_points, number_points,
                                    unique)

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/explore/metrics/"
STEP = 10  # seconds: the default step of the five-minute window below
WINDOW = {"start": dt.datetime.fromtimestamp(T0 / S, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M"),
          "end": dt.datetime.fromtimestamp((T0 + 5 * MINUTE) / S, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M")}
XSS = "<script>alert(1)</script>"


def step_of(at_ns):
    return (at_ns - T0) // (STEP * S)


def page(client, **query):
    response = client.get(URL, {**WINDOW, **query})
    assert response.status_code == 200, response.content.decode()[:2000]
    return response


def lines(response):
    """{trace name: {step index: y}} of the figure, with the name as the page's JSON has it."""
    figure = response.context["figure"]
    assert figure is not None, "no chart on the page"
    result = {}
    for trace in figure["data"]:
        result[trace["name"]] = {(at * 1_000_000 - T0) // (STEP * S): y for at, y in zip(trace["x"], trace["y"])
                                 if y is not None}
    return result


def store_shop_metrics(service):
    names = {"gauge": unique("queue.depth"), "counter": unique("http.requests"), "hist": unique("http.latency"),
             "updown": unique("inflight"), "delta": unique("bytes.sent")}
    export = Export()
    gauge = export.metric(service, names["gauge"], unit="1", description="queue depth")
    number_points(gauge.gauge, [(T0 + 12 * S, 10.0, {"host": "a"}), (T0 + 15 * S, 20.0, {"host": "a"}),
                                (T0 + 15 * S, 40.0, {"host": "b"}), (T0 + 45 * S, 7.0, {"host": "b"})])
    counter = export.metric(service, names["counter"], unit="{request}")
    counter.sum.aggregation_temporality, counter.sum.is_monotonic = CUMULATIVE, True
    start = T0 - MINUTE
    number_points(counter.sum, [(T0 + 5 * S, 100, {"route": "/a"}, start), (T0 + 15 * S, 160, {"route": "/a"}, start),
                                (T0 + 5 * S, 10, {"route": "/b"}, start), (T0 + 15 * S, 30, {"route": "/b"}, start)])
    hist = export.metric(service, names["hist"], unit="ms")
    hist.histogram.aggregation_temporality = DELTA
    histogram_points(hist.histogram, [(T0 + 22 * S, 0, [1.0, 5.0, 10.0], [10, 20, 60, 10], {}, None)])
    updown = export.metric(service, names["updown"])
    updown.sum.aggregation_temporality, updown.sum.is_monotonic = CUMULATIVE, False
    number_points(updown.sum, [(T0 + 31 * S, 5, {}), (T0 + 35 * S, 3, {})])
    delta = export.metric(service, names["delta"], unit="By")
    delta.sum.aggregation_temporality, delta.sum.is_monotonic = DELTA, True
    number_points(delta.sum, [(T0 + 41 * S, 30, {}), (T0 + 42 * S, 50, {})])
    export.store()
    return names


def test_the_page_needs_a_login(client):
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_picker_lists_the_catalogue_with_type_and_unit(logged_in):
    names = store_shop_metrics(unique("svc"))
    response = page(logged_in)
    body = response.content.decode()
    assert 'id="metrics-empty"' in body and "Choose a metric" in body
    assert response.context["figure"] is None
    assert f'<option value="{names["gauge"]}">{names["gauge"]} — gauge, 1</option>' in body
    assert f'<option value="{names["counter"]}">{names["counter"]} — counter, {{request}}</option>' in body
    assert f'<option value="{names["hist"]}">{names["hist"]} — histogram, ms</option>' in body
    assert f'<option value="{names["updown"]}">{names["updown"]} — up-down counter</option>' in body
    assert f'<option value="{names["delta"]}">{names["delta"]} — delta sum, By</option>' in body


def test_a_gauge_is_charted_as_its_average_value_with_a_line_per_group(logged_in):
    names = store_shop_metrics(unique("svc"))
    response = page(logged_in, metric=names["gauge"])
    assert response.context["stats"] == ["value"]
    assert lines(response) == {"all": {1: (10 + 20 + 40) / 3, 4: 7.0}}

    response = page(logged_in, metric=names["gauge"], group="host")
    assert lines(response) == {"host=a": {1: 15.0}, "host=b": {1: 40.0, 4: 7.0}}
    body = response.content.decode()
    assert 'data-figure="metric-figure"' in body and 'id="metric-figure" type="application/json"' in body
    assert '<input type="checkbox" name="group" value="host" checked>' in body
    assert [row["labels"] for row in response.context["rows"]] == [{"host": "a"}, {"host": "b"}]


def test_counters_and_delta_sums_are_charted_as_rates_up_down_counters_as_values(logged_in):
    names = store_shop_metrics(unique("svc"))
    response = page(logged_in, metric=names["counter"], group="route")
    assert response.context["stats"] == ["rate"]
    assert lines(response) == {"route=/a": {1: 60 / STEP}, "route=/b": {1: 20 / STEP}}
    assert response.context["figure"]["layout"]["yaxis"]["title"]["text"] == "rate per second ({request}/s)"

    response = page(logged_in, metric=names["delta"])
    assert response.context["stats"] == ["rate"] and lines(response) == {"all": {4: 80 / STEP}}

    response = page(logged_in, metric=names["updown"])
    assert response.context["stats"] == ["value"] and lines(response) == {"all": {3: 3}}


def test_a_histogram_is_charted_as_p50_p95_p99(logged_in):
    names = store_shop_metrics(unique("svc"))
    response = page(logged_in, metric=names["hist"])
    assert response.context["stats"] == ["p50", "p95", "p99"]
    # [10, 20, 60, 10] over bounds 1, 5, 10: rank 50 in (5, 10] after 30; 95 and 99 in +Inf -> 10
    assert lines(response) == {"all p50": {2: 5 + 5 * 20 / 60}, "all p95": {2: 10.0}, "all p99": {2: 10.0}}
    dashes = [trace["line"]["dash"] for trace in response.context["figure"]["data"]]
    assert dashes == ["solid", "dash", "dot"]


def test_attribute_filters_narrow_the_series_and_the_add_row_becomes_a_filter(logged_in):
    service = unique("svc")
    names = store_shop_metrics(service)
    response = page(logged_in, metric=names["gauge"], **{"attr.host": "b"})
    assert lines(response) == {"all": {1: 40.0, 4: 7.0}}
    assert 'name="attr.host" value="b"' in response.content.decode()

    response = logged_in.get(URL, {**WINDOW, "metric": names["gauge"], "add_key": "host", "add_value": "a",
                                   "attr.gone": ""})
    assert response.status_code == 302
    assert "attr.host=a" in response["Location"] and "add_key" not in response["Location"]
    assert "attr.gone" not in response["Location"]
    response = logged_in.get(response["Location"])
    assert lines(response) == {"all": {1: 15.0}}

    response = page(logged_in, metric=names["gauge"], service=service, group="service.name")
    assert lines(response) == {f"service.name={service}": {1: (10 + 20 + 40) / 3, 4: 7.0}}


def test_empty_states_name_what_is_missing(logged_in):
    names = store_shop_metrics(unique("svc"))
    body = page(logged_in, metric=names["gauge"], **{"attr.host": "nowhere"}).content.decode()
    assert f"No data for {names['gauge']} in this range with these filters." in body
    body = page(logged_in, metric=unique("never-sent")).content.decode()
    assert "No metric named" in body and 'id="metric-chart"' not in body
    old = {"start": "2001-01-01T00:00", "end": "2001-01-01T01:00"}
    body = page(logged_in, **old).content.decode()
    assert "No metrics in this range yet." in body


def test_a_bad_parameter_is_a_400_naming_it(logged_in):
    names = store_shop_metrics(unique("svc"))
    for query, parameter in (({"group": ["a", "b", "c", "d", "e", "f"]}, "group"), ({"attr.": "x"}, "attr."),
                             ({"range": "3y", "start": "", "end": ""}, "range"),
                             ({"metric": "bad\x00name"}, "metric"), ({"attr.k": "x" * 2000}, "attr.k")):
        response = logged_in.get(URL, {**WINDOW, "metric": names["gauge"], **query})
        assert response.status_code == 400, query
        assert f"{parameter}:" in response.content.decode(), query


def test_telemetry_text_is_escaped_in_the_page_and_the_figure(logged_in):
    service, name = unique("svc"), unique("xss.metric")
    export = Export()
    metric = export.metric(service, name, unit="<b>u</b>")
    number_points(metric.gauge, [(T0 + 12 * S, 1.0, {"payload": XSS}), (T0 + 12 * S, 2.0, {"payload": "plain"})])
    export.store()

    response = page(logged_in, metric=name, group="payload")
    body = response.content.decode()
    assert XSS not in body and "<b>u</b>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body  # the table of groups
    source = re.search(r'<script id="metric-figure" type="application/json">(.*?)</script>', body, re.S).group(1)
    assert "<" not in source  # json_script escapes every < in the JSON
    figure = json.loads(source)
    names = {trace["name"] for trace in figure["data"]}
    assert names == {html.escape(f"payload={XSS}"), "payload=plain"}
    assert figure["layout"]["yaxis"]["title"]["text"] == html.escape("value (<b>u</b>)")

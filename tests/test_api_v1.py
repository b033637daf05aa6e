"""/api/v1 over stored, correlated traces with known answers (real PostgreSQL)."""

import datetime as dt
import math
import os
import time

import pytest

from dashboards import queries
from ingest import convert, writer
from tests.otlp_builders import spans_request
from tests.shop import checkout_trace
from traces.correlate import correlate_traces

pytestmark = pytest.mark.django_db(transaction=True)



def exact_quantile(values, q):
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@pytest.fixture
def shop():
    """Ten checkout traces, two of them failing at payment, correlated."""
    prefix = f"v1-{os.urandom(3).hex()}"
    now = time.time_ns()
    traces = {}
    for index in range(10):
        trace_id, spans = checkout_trace(prefix, index, now - (20 - index) * 60_000_000_000, error=index in (3, 7))
        writer.write_spans(convert.convert_traces(spans_request(spans)))
        traces[trace_id.hex()] = spans
    correlate_traces([bytes.fromhex(trace_id) for trace_id in traces])
    return {"prefix": prefix, "traces": traces, "front": f"{prefix}-frontend", "pay": f"{prefix}-payment"}


@pytest.fixture
def api(client, settings):
    settings.PUBLIC_READ = True

    def get(path, expect=200, **query):
        response = client.get(path, query)
        assert response.status_code == expect, response.content[:500]
        return response.json()

    return get


def by(rows, *keys):
    return {tuple(row[key] for key in keys) if len(keys) > 1 else row[keys[0]]: row for row in rows}


def test_services_have_their_requests_errors_and_latency(shop, api):
    rows = by(api("/api/v1/services", lookback="1h")["data"], "service")
    front, pay = rows[shop["front"]], rows[shop["pay"]]
    # requests are the spans where a request entered the service: the root, and payment's server span
    assert (front["requests"], front["errors"], front["error_rate"]) == (10, 0, 0.0)
    assert (pay["requests"], pay["errors"], pay["error_rate"]) == (10, 2, 0.2)
    assert front["rate"] == pytest.approx(10 / 3600)
    roots = [(100 + i) for i in range(10)]
    for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        assert front[name] == pytest.approx(exact_quantile(roots, q), rel=0.04)
        assert pay[name] == pytest.approx(exact_quantile([r - 30 for r in roots], q), rel=0.04)
    assert set(front) == {"service", "requests", "rate", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms"}


def test_the_environment_narrows_every_read(shop, api):
    assert shop["front"] in by(api("/api/v1/services", environment="prod")["data"], "service")
    assert shop["front"] not in by(api("/api/v1/services", environment="staging")["data"], "service")
    traces = api("/api/v1/traces", service=shop["front"], environment="staging")["data"]
    assert traces == []


def test_operations_per_operation_and_kind(shop, api):
    rows = by(api(f"/api/v1/services/{shop['pay']}/operations")["data"], "operation", "span_kind")
    assert set(rows) == {("POST /pay", "server"), ("SELECT", "client")}
    assert (rows[("POST /pay", "server")]["requests"], rows[("POST /pay", "server")]["errors"]) == (10, 2)
    assert rows[("SELECT", "client")]["p50_ms"] == pytest.approx(20, rel=0.04)
    only_clients = api(f"/api/v1/services/{shop['pay']}/operations", span_kind="client")["data"]
    assert [row["operation"] for row in only_clients] == ["SELECT"]


def test_dependencies_are_the_service_graph_edges(shop, api):
    rows = by(api("/api/v1/dependencies")["data"], "parent", "child")
    front_pay = rows[(shop["front"], shop["pay"])]
    assert (front_pay["child_type"], front_pay["calls"], front_pay["errors"], front_pay["error_rate"]) == \
        ("service", 10, 2, 0.2)
    assert front_pay["p95_ms"] == pytest.approx(exact_quantile([80 + i for i in range(10)], 0.95), rel=0.04)
    database = rows[(shop["pay"], "postgresql")]
    assert (database["child_type"], database["calls"], database["errors"]) == ("database", 10, 0)
    touching = api("/api/v1/dependencies", service=shop["pay"])["data"]
    assert {(row["parent"], row["child"]) for row in touching} == {(shop["front"], shop["pay"]),
                                                                   (shop["pay"], "postgresql")}


def test_hotspots_rank_operations_by_critical_path_share(shop, api):
    rows = api("/api/v1/hotspots", service=shop["pay"])["data"]
    shares = {(row["service"], row["operation"]): row for row in rows}
    # per trace: root self 20 ms, client 10 ms, payment server 50 + i ms, SELECT 20 ms of 100 + i ms
    total = sum(100 + i for i in range(10))
    assert shares[(shop["pay"], "POST /pay")]["critical_path_share"] == pytest.approx(
        sum(50 + i for i in range(10)) / total)
    assert shares[(shop["pay"], "SELECT")]["critical_path_share"] == pytest.approx(200 / total)
    assert sum(row["critical_path_share"] for row in rows) == pytest.approx(1.0)
    assert rows[0]["service"] == shop["pay"] and rows[0]["operation"] == "POST /pay"
    assert shares[(shop["pay"], "SELECT")]["self_time_p95_ms"] == pytest.approx(20)
    for row in rows:
        assert row["exemplar_trace_ids"] and set(row["exemplar_trace_ids"]) <= set(shop["traces"])


def test_trace_search_filters(shop, api):
    def ids(**query):
        return {row["trace_id"] for row in api("/api/v1/traces", limit="100", **query)["data"]}

    everything = set(shop["traces"])
    assert ids(service=shop["pay"]) == everything
    assert ids(service=shop["pay"], status="error") == {t for i, t in enumerate(shop["traces"]) if i in (3, 7)}
    assert len(ids(service=shop["pay"], status="ok")) == 8
    assert ids(service=shop["pay"], operation="SELECT") == everything
    assert ids(service=shop["front"], operation="SELECT") == set()  # SELECT is payment's
    assert len(ids(service=shop["pay"], **{"attr.tenant": "t-1"})) == 5
    # text given, number stored: still a match
    assert len(ids(service=shop["pay"], **{"attr.http.response.status_code": "500"})) == 2
    assert len(ids(service=shop["front"], **{"attr.deployment.environment.name": "prod"})) == 10  # resource
    assert len(ids(service=shop["front"], min_duration="105ms")) == 5
    assert len(ids(service=shop["front"], min_duration="102ms", max_duration="0.104s")) == 3
    first = api("/api/v1/traces", service=shop["front"], limit="1")["data"][0]
    newest = max(shop["traces"], key=lambda t: shop["traces"][t][0]["start_ns"])
    assert first["trace_id"] == newest
    assert (first["root_service"], first["root_operation"], first["span_count"]) == (shop["front"], "GET /checkout", 4)
    assert first["duration_ms"] == pytest.approx(109) and first["services"] == sorted([shop["front"], shop["pay"]])


def test_trace_search_pages_with_a_cursor(shop, api):
    seen, cursor, pages = [], None, 0
    while True:
        query = {"service": shop["front"], "limit": "3", **({"cursor": cursor} if cursor else {})}
        page = api("/api/v1/traces", **query)
        seen += [row["trace_id"] for row in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4 and len(seen) == len(set(seen)) == 10 and set(seen) == set(shop["traces"])
    starts = [row["start_ns"] for row in (shop["traces"][t][0] for t in seen)]
    assert starts == sorted(starts, reverse=True)


def test_a_trace_with_critical_path_and_self_times(shop, api):
    trace_id = next(iter(shop["traces"]))  # index 0: the root lasts 100 ms
    data = api(f"/api/v1/traces/{trace_id}")["data"]
    assert (data["trace_id"], data["correlated"], data["span_count"], data["duration_ms"]) == (trace_id, True, 4, 100)
    spans = {span["name"] + "@" + span["service"]: span for span in data["spans"]}
    root = spans[f"GET /checkout@{shop['front']}"]
    server = spans[f"POST /pay@{shop['pay']}"]
    select = spans[f"SELECT@{shop['pay']}"]
    assert root["parent_span_id"] is None and server["kind"] == "server" and select["kind"] == "client"
    assert [spans[name]["self_time_ms"] for name in spans] == [20, 10, 50, 20]
    assert all(span["on_critical_path"] for span in data["spans"])
    assert sum(span["critical_path_ms"] for span in data["spans"]) == pytest.approx(100)
    assert (server["offset_ms"], server["duration_ms"]) == (15, 70)
    assert select["attributes"] == {"db.system": "postgresql"}
    assert root["resource"]["deployment.environment.name"] == "prod"
    assert root["scope"] == {"name": "tests", "version": "1.0"}
    assert root["start_unix_nano"] == str(shop["traces"][trace_id][0]["start_ns"])
    failing = api(f"/api/v1/traces/{list(shop['traces'])[3]}")["data"]
    bad = [span for span in failing["spans"] if span["error"]]
    assert [(span["name"], span["status"]) for span in bad] == [("POST /pay", {"code": "error", "message": "card declined"})]


def test_a_trace_not_correlated_yet_is_analysed_on_the_spot(api):
    trace_id, spans = checkout_trace(f"fresh-{os.urandom(3).hex()}", 0, time.time_ns())
    writer.write_spans(convert.convert_traces(spans_request(spans)))
    data = api(f"/api/v1/traces/{trace_id.hex()}")["data"]
    assert data["correlated"] is False
    assert [span["self_time_ms"] for span in data["spans"]] == [20, 10, 50, 20]
    assert sum(span["critical_path_ms"] for span in data["spans"]) == pytest.approx(100)


def test_a_missing_trace_is_404_and_a_bad_id_400(api):
    assert api(f"/api/v1/traces/{os.urandom(16).hex()}", 404)["error"]["status"] == 404
    error = api("/api/v1/traces/not-hex", 400)["error"]
    assert error["parameter"] == "trace_id"


@pytest.mark.parametrize("path, query, parameter", [
    ("/api/v1/services", {"lookback": "forever"}, "lookback"),
    ("/api/v1/services", {"lookback": "0h"}, "lookback"),
    ("/api/v1/services", {"start": "yesterday"}, "start"),
    ("/api/v1/services", {"end": "2026-11-21T10:00:00"}, "end"),  # no time zone
    ("/api/v1/services", {"start": "2026-11-21T10:00:00Z", "end": "2026-11-21T09:00:00Z"}, "start"),
    ("/api/v1/services", {"start": "99999999999999999999"}, "start"),
    ("/api/v1/services/x/operations", {"span_kind": "sideways"}, "span_kind"),
    ("/api/v1/hotspots", {"limit": "many"}, "limit"),
    ("/api/v1/traces", {"limit": "0"}, "limit"),
    ("/api/v1/traces", {"limit": "1001"}, "limit"),
    ("/api/v1/traces", {"min_duration": "fast"}, "min_duration"),
    ("/api/v1/traces", {"min_duration": "2s", "max_duration": "1s"}, "min_duration"),
    ("/api/v1/traces", {"status": "broken"}, "status"),
    ("/api/v1/traces", {"cursor": "!!!"}, "cursor"),
    ("/api/v1/traces", {"attr.": "x"}, "attr."),
    ("/api/v1/traces", {"service": "x" * 2000}, "service"),
])
def test_a_bad_parameter_is_a_400_naming_it(api, path, query, parameter):
    error = api(path, 400, **query)["error"]
    assert error["parameter"] == parameter and error["message"].startswith(parameter)


def test_long_ranges_read_whole_hours_from_the_hourly_rollups(api):
    prefix = f"hours-{os.urandom(3).hex()}"
    now = time.time_ns()
    starts = [now - 150 * 60_000_000_000, now - 90 * 60_000_000_000, now - 5 * 60_000_000_000]
    ids = []
    for index, start in enumerate(starts):
        trace_id, spans = checkout_trace(prefix, index, start)
        writer.write_spans(convert.convert_traces(spans_request(spans)))
        ids.append(trace_id)
    correlate_traces(ids)
    rows = by(api("/api/v1/services", lookback="3h")["data"], "service")
    assert rows[f"{prefix}-frontend"]["requests"] == 3
    assert by(api("/api/v1/services", lookback="1h")["data"], "service")[f"{prefix}-frontend"]["requests"] == 1
    start = dt.datetime.fromtimestamp(now / 1e9, dt.timezone.utc) - dt.timedelta(hours=3)
    minutes, hours = queries.split_range(start, start + dt.timedelta(hours=3))
    assert hours is not None and hours[1] - hours[0] >= dt.timedelta(hours=2)
    assert all(b - a < dt.timedelta(hours=1) for a, b in minutes)


def test_unknown_api_paths_are_json_404s_and_any_service_name_routes(api):
    assert api("/api/v1/nothing-here", 404)["error"]["status"] == 404
    assert api("/api/v1/services/line\nbreak/with/slashes/operations")["data"] == []


def test_json_answers_carry_no_nan_or_infinity():
    from dashboards.api.http import json_response

    assert json_response({"a": float("nan"), "b": [float("inf"), 1.5]}).content == b'{"a": null, "b": [null, 1.5]}'
    assert json_response({"a": 2.5}).content == b'{"a": 2.5}'

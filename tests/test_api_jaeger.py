"""The Jaeger HTTP query API (/api/services, /api/traces, ...) over one known, stored and
correlated trace: Jaeger's exact JSON, its parameters and its error envelope."""

import base64
import os
import time

import pytest
from django.contrib.auth.models import User
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dashboards.models import ApiToken
from ingest import convert, writer
from tests.otlp_builders import any_value
from traces.correlate import correlate_traces

pytestmark = pytest.mark.django_db(transaction=True)

MS = 1_000_000
INTERNAL, SERVER, CLIENT = 1, 2, 3


def add_attributes(target, attributes):
    for key, item in attributes.items():
        target.add(key=key, value=any_value(item))


def add_resource_spans(request, service, resource=None, scope=("", "")):
    resource_spans = request.resource_spans.add()
    add_attributes(resource_spans.resource.attributes, {"service.name": service, **(resource or {})})
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name, scope_spans.scope.version = scope
    return scope_spans.spans


def store(request, trace_ids):
    writer.write_spans(convert.convert_traces(request))
    correlate_traces(trace_ids)


@pytest.fixture
def auth(db):
    user = User.objects.create_user(f"jaeger-{os.urandom(4).hex()}")
    _, token = ApiToken.objects.issue(user)
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture
def shop():
    """frontend GET /cart (CLIENT, every attribute type, an event, sampled, trace state)
    -> backend GET /cart (SERVER, failed with a message, a link); plus two plain frontend traces."""
    suffix = os.urandom(4).hex()
    front, back = f"jfront-{suffix}", f"jback-{suffix}"
    trace_id, client_id, server_id = os.urandom(16), os.urandom(8), os.urandom(8)
    linked_trace, linked_span = os.urandom(16), os.urandom(8)
    start = (time.time_ns() - 10 * 60 * 1_000_000_000) // 1000 * 1000 + 789  # 10 min ago, 789 ns past a µs
    request = ExportTraceServiceRequest()
    spans = add_resource_spans(request, front, {"host.name": "web-1", "k8s.pod.count": 7},
                               scope=("shop.http", "1.2.3"))
    client = spans.add(trace_id=trace_id, span_id=client_id, name="GET /cart", kind=CLIENT, flags=0x101,
                       trace_state="vendor=abc", start_time_unix_nano=start, end_time_unix_nano=start + 50 * MS)
    client.status.code = 1
    add_attributes(client.attributes, {
        "http.method": "GET", "retry": True, "http.status_code": 200, "ratio": 2.5, "whole": 3.0,
        "tags": ["a", "b"], "blob": b"\x00\x01hi", "config": {"x": 1, "y": "<z>"}, "big": 2 ** 60})
    event = client.events.add(time_unix_nano=start + 2 * MS + 500, name="retry")
    add_attributes(event.attributes, {"reason": "timeout", "attempt": 2})
    spans = add_resource_spans(request, back, scope=("shop.server", ""))
    server = spans.add(trace_id=trace_id, span_id=server_id, parent_span_id=client_id, name="GET /cart",
                       kind=SERVER, start_time_unix_nano=start + 5 * MS, end_time_unix_nano=start + 45 * MS)
    server.status.code, server.status.message = 2, "boom"
    link = server.links.add(trace_id=linked_trace, span_id=linked_span)
    add_attributes(link.attributes, {"why": "batch"})
    # Two plain frontend traces, 9 and 8 minutes ago (newer than the one above).
    plain = []
    for minutes in (9, 8):
        plain_id = os.urandom(16)
        plain.append(plain_id)
        begin = time.time_ns() - minutes * 60 * 1_000_000_000
        spans = add_resource_spans(request, front, {"host.name": "web-1", "k8s.pod.count": 7},
                                   scope=("shop.http", "1.2.3"))
        spans.add(trace_id=plain_id, span_id=os.urandom(8), name="GET /home", kind=INTERNAL,
                  start_time_unix_nano=begin, end_time_unix_nano=begin + 5 * MS)
    store(request, [trace_id, *plain])
    return {"front": front, "back": back, "trace_id": trace_id.hex(), "client": client_id.hex(),
            "server": server_id.hex(), "linked_trace": linked_trace.hex(), "linked_span": linked_span.hex(),
            "start": start, "plain": [p.hex() for p in plain]}


def expected_trace(shop):
    start_us = shop["start"] // 1000
    trace_id = shop["trace_id"]
    return {
        "traceID": trace_id,
        "spans": [
            {
                "traceID": trace_id, "spanID": shop["client"], "flags": 1, "operationName": "GET /cart",
                "references": [], "startTime": start_us, "duration": 50_000,
                "tags": [
                    {"key": "otel.scope.name", "type": "string", "value": "shop.http"},
                    {"key": "otel.scope.version", "type": "string", "value": "1.2.3"},
                    {"key": "big", "type": "int64", "value": str(2 ** 60)},
                    {"key": "blob", "type": "binary", "value": base64.b64encode(b"\x00\x01hi").decode()},
                    {"key": "config", "type": "string", "value": '{"x":1,"y":"\\u003cz\\u003e"}'},
                    {"key": "http.method", "type": "string", "value": "GET"},
                    {"key": "http.status_code", "type": "int64", "value": 200},
                    {"key": "ratio", "type": "float64", "value": 2.5},
                    {"key": "retry", "type": "bool", "value": True},
                    {"key": "tags", "type": "string", "value": '["a","b"]'},
                    {"key": "whole", "type": "float64", "value": 3.0},
                    {"key": "span.kind", "type": "string", "value": "client"},
                    {"key": "otel.status_code", "type": "string", "value": "OK"},
                    {"key": "w3c.tracestate", "type": "string", "value": "vendor=abc"},
                ],
                "logs": [{"timestamp": (shop["start"] + 2 * MS + 500) // 1000, "fields": [
                    {"key": "event", "type": "string", "value": "retry"},
                    {"key": "attempt", "type": "int64", "value": 2},
                    {"key": "reason", "type": "string", "value": "timeout"},
                ]}],
                "processID": "p1", "warnings": None,
            },
            {
                "traceID": trace_id, "spanID": shop["server"], "operationName": "GET /cart",
                "references": [
                    {"refType": "CHILD_OF", "traceID": trace_id, "spanID": shop["client"]},
                    {"refType": "FOLLOWS_FROM", "traceID": shop["linked_trace"], "spanID": shop["linked_span"]},
                ],
                "startTime": start_us + 5_000, "duration": 40_000,
                "tags": [
                    {"key": "otel.scope.name", "type": "string", "value": "shop.server"},
                    {"key": "span.kind", "type": "string", "value": "server"},
                    {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                    {"key": "error", "type": "bool", "value": True},
                    {"key": "otel.status_description", "type": "string", "value": "boom"},
                ],
                "logs": [], "processID": "p2", "warnings": None,
            },
        ],
        "processes": {
            "p1": {"serviceName": shop["front"], "tags": [
                {"key": "host.name", "type": "string", "value": "web-1"},
                {"key": "k8s.pod.count", "type": "int64", "value": 7},
            ]},
            "p2": {"serviceName": shop["back"], "tags": []},
        },
        "warnings": None,
    }


def get(client, auth, path, **query):
    return client.get(path, query, **auth)


def ids(response):
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["total"], body["limit"], body["offset"], body["errors"]) == (0, 0, 0, None)
    return [trace["traceID"] for trace in body["data"]]


def test_a_trace_is_jaegers_json_exactly(client, auth, shop):
    response = get(client, auth, f"/api/traces/{shop['trace_id']}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body == {"data": [expected_trace(shop)], "total": 0, "limit": 0, "offset": 0, "errors": None}
    # key by key, so a difference is easy to read
    got, want = body["data"][0], expected_trace(shop)
    assert list(got) == list(want)
    for got_span, want_span in zip(got["spans"], want["spans"]):
        assert list(got_span) == list(want_span)
        for key in want_span:
            assert got_span[key] == want_span[key], key
    assert got["processes"] == want["processes"]
    # an upper-case, or leading-zero-less, id names the same trace
    assert ids(get(client, auth, f"/api/traces/{shop['trace_id'].upper()}")) == [shop["trace_id"]]


def test_a_missing_trace_is_jaegers_404_and_a_bad_id_a_400(client, auth):
    response = get(client, auth, f"/api/traces/{os.urandom(16).hex()}")
    assert response.status_code == 404
    assert response.json() == {"data": None, "total": 0, "limit": 0, "offset": 0,
                               "errors": [{"code": 404, "msg": "trace not found"}]}
    response = get(client, auth, "/api/traces/not-hex")
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == 400 and "traceID" in response.json()["errors"][0]["msg"]


def test_services_and_operations(client, auth, shop):
    response = get(client, auth, "/api/services")
    body = response.json()
    assert response.status_code == 200
    assert {shop["front"], shop["back"]} <= set(body["data"])
    assert body["data"] == sorted(body["data"]) and body["total"] == len(body["data"])
    assert (body["limit"], body["offset"], body["errors"]) == (0, 0, None)

    body = get(client, auth, f"/api/services/{shop['front']}/operations").json()
    assert body == {"data": ["GET /cart", "GET /home"], "total": 2, "limit": 0, "offset": 0, "errors": None}

    body = get(client, auth, "/api/operations", service=shop["front"]).json()
    assert body["data"] == [{"name": "GET /cart", "spanKind": "client"}, {"name": "GET /home", "spanKind": "internal"}]
    assert body["total"] == 2
    body = get(client, auth, "/api/operations", service=shop["front"], spanKind="internal").json()
    assert body["data"] == [{"name": "GET /home", "spanKind": "internal"}]
    assert get(client, auth, "/api/operations", service=shop["back"], spanKind="server").json()["data"] == [
        {"name": "GET /cart", "spanKind": "server"}]
    assert get(client, auth, "/api/operations", service=shop["back"], spanKind="client").json()["data"] == []

    response = get(client, auth, "/api/operations")
    assert response.status_code == 400
    assert response.json()["errors"] == [{"code": 400, "msg": "service: parameter 'service' is required"}]


def test_search_by_service_operation_tags_duration_limit_and_time(client, auth, shop):
    front, back, wanted = shop["front"], shop["back"], shop["trace_id"]
    newest_first = [*reversed(shop["plain"]), wanted]
    assert ids(get(client, auth, "/api/traces", service=front)) == newest_first
    body = get(client, auth, "/api/traces", service=back).json()
    assert body["data"] == [expected_trace(shop)]  # search results are full traces
    assert ids(get(client, auth, "/api/traces", service=front, limit="2")) == newest_first[:2]
    assert ids(get(client, auth, "/api/traces", service=front, operation="GET /cart")) == [wanted]
    assert ids(get(client, auth, "/api/traces", service=back, operation="GET /home")) == []

    def search(**query):
        return ids(get(client, auth, "/api/traces", service=query.pop("service", front), **query))

    # tags: span fields the translator turns into tags, and attributes
    assert search(service=back, tags='{"error":"true"}') == [wanted]
    # as in Jaeger, tags are matched on one span of the service searched: the error is the backend's
    assert search(tags='{"error":"true"}') == []
    assert search(service=back, tags='{"otel.status_code":"ERROR"}') == [wanted]
    assert search(tags='{"otel.status_code":"OK"}') == [wanted]
    assert search(service=back, tags='{"otel.status_code":"OK"}') == []
    assert search(service=back, tags='{"span.kind":"server"}') == [wanted]
    assert search(tags='{"span.kind":"server"}') == []  # the frontend's spans are client and internal
    assert search(tags='{"span.kind":"internal"}') == list(reversed(shop["plain"]))
    assert search(service=back, tags='{"otel.status_description":"boom"}') == [wanted]
    assert search(tags='{"otel.scope.name":"shop.http","otel.scope.version":"1.2.3"}') == newest_first
    assert search(tags='{"http.status_code":"200","http.method":"GET"}') == [wanted]
    assert search(tags='{"http.method":"POST"}') == []
    assert search(tags='{"host.name":"web-1"}') == newest_first  # a resource attribute
    assert search(tag="http.method:GET") == [wanted]  # Jaeger's older form
    assert search(tag="http.method:POST") == []
    assert search(tags='{"span.kind":"client"}', tag="retry:true", operation="GET /cart") == [wanted]

    # durations (Go syntax)
    assert search(minDuration="40ms") == [wanted]
    assert search(minDuration="49.9ms", maxDuration="1s") == [wanted]
    assert search(minDuration="60ms") == []
    assert search(maxDuration="10ms") == list(reversed(shop["plain"]))
    # as in Jaeger, the duration is the matching span's: the backend's lasts 40 ms of the trace's 50
    assert search(service=back, minDuration="39ms") == [wanted]
    assert search(service=back, minDuration="41ms") == []

    # time: start/end in microseconds; lookback, or "custom" with start/end
    now_us = time.time_ns() // 1000
    start_us = shop["start"] // 1000
    assert search(lookback="1h") == newest_first
    assert search(lookback="5m") == []
    assert search(start=str(start_us - 1), end=str(start_us + 1)) == [wanted]
    assert search(start=str(start_us - 1), end=str(start_us + 1), lookback="custom") == [wanted]
    assert search(start=str(now_us - 3_600_000_000), end=str(start_us - 1)) == []


def test_search_by_trace_ids(client, auth, shop):
    missing = os.urandom(16).hex()
    response = get(client, auth, "/api/traces", traceID=[shop["trace_id"], missing, shop["plain"][0]])
    assert response.status_code == 200
    body = response.json()
    assert [trace["traceID"] for trace in body["data"]] == [shop["trace_id"], shop["plain"][0]]
    assert body["data"][0] == expected_trace(shop)
    assert body["errors"] == [{"msg": "trace not found", "traceID": missing}]


def test_dependencies(client, auth, shop):
    now_ms = time.time_ns() // 1_000_000
    body = get(client, auth, "/api/dependencies", endTs=str(now_ms), lookback=str(3_600_000)).json()
    assert (body["total"], body["limit"], body["offset"], body["errors"]) == (0, 0, 0, None)
    mine = [link for link in body["data"] if shop["front"] in (link["parent"], link["child"])]
    assert mine == [{"parent": shop["front"], "child": shop["back"], "callCount": 1}]
    # the defaults: now, 24 hours back
    assert {"parent": shop["front"], "child": shop["back"], "callCount": 1} in \
        get(client, auth, "/api/dependencies").json()["data"]
    # a window ending before the trace has none of it
    body = get(client, auth, "/api/dependencies", endTs=str(now_ms - 3_600_000), lookback="60000").json()
    assert all(shop["front"] not in (link["parent"], link["child"]) for link in body["data"])
    assert get(client, auth, "/api/dependencies", service=shop["back"]).json()["data"] == [
        {"parent": shop["front"], "child": shop["back"], "callCount": 1}]


@pytest.mark.parametrize(("path", "query", "parameter"), [
    ("/api/traces", {}, "service"),
    ("/api/traces", {"service": "x", "limit": "ten"}, "limit"),
    ("/api/traces", {"service": "x", "start": "yesterday"}, "start"),
    ("/api/traces", {"service": "x", "end": "12:00"}, "end"),
    ("/api/traces", {"service": "x", "lookback": "forever"}, "lookback"),
    ("/api/traces", {"service": "x", "tags": "{not json"}, "tags"),
    ("/api/traces", {"service": "x", "tags": "[1, 2]"}, "tags"),
    ("/api/traces", {"service": "x", "tags": '{"a": {"b": 1}}'}, "tags"),
    ("/api/traces", {"service": "x", "tag": "no-colon"}, "tag"),
    ("/api/traces", {"service": "x", "minDuration": "5 parsecs"}, "minDuration"),
    ("/api/traces", {"service": "x", "maxDuration": "1x"}, "maxDuration"),
    ("/api/traces", {"service": "x", "minDuration": "2s", "maxDuration": "1s"}, "maxDuration"),
    ("/api/traces", {"traceID": "xyz"}, "traceID"),
    ("/api/traces/abc", {"start": "soon"}, "start"),
    ("/api/dependencies", {"endTs": "now"}, "endTs"),
    ("/api/dependencies", {"lookback": "1h"}, "lookback"),
])
def test_bad_parameters_are_400_in_jaegers_envelope(client, auth, path, query, parameter):
    response = get(client, auth, path, **query)
    assert response.status_code == 400, response.content
    body = response.json()
    assert (body["data"], body["total"], body["limit"], body["offset"]) == (None, 0, 0, 0)
    [error] = body["errors"]
    assert error["code"] == 400 and parameter in error["msg"]


def test_authentication_and_public_read(client, settings, shop):
    response = client.get("/api/services")
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == 401 and response.json()["data"] is None
    response = client.get("/api/services", HTTP_AUTHORIZATION="Bearer not-a-token")
    assert response.status_code == 401
    settings.PUBLIC_READ = True
    assert ids(client.get(f"/api/traces/{shop['trace_id']}")) == [shop["trace_id"]]
    response = client.post("/api/services")
    assert response.status_code == 405 and response.json()["errors"][0]["code"] == 405

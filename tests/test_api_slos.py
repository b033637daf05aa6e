"""The SLO REST API: channels, SLOs and alerts, with known answers, 400s naming the field,
and who may read or write."""

import datetime as dt
import json

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from dashboards.models import SLO, Alert, ApiToken, Channel

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token():
    user = User.objects.create_user("slo-writer")
    return ApiToken.objects.issue(user)[1]


@pytest.fixture
def api(token):
    """A client that sends the bearer token and JSON bodies."""
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    class Api:
        def get(self, path, **query):
            return client.get(path, query, **headers)

        def post(self, path, body):
            return client.post(path, json.dumps(body), content_type="application/json", **headers)

        def put(self, path, body):
            return client.put(path, json.dumps(body), content_type="application/json", **headers)

        def delete(self, path):
            return client.delete(path, **headers)

    return Api()


WEBHOOK = {"name": "ops-webhook", "type": "webhook", "url": "https://alerts.example.com/hook"}
AVAILABILITY = {"name": "checkout-availability", "service": "checkout", "operation": None, "edge": None,
                "sli": {"type": "availability"}, "objective": 0.999, "window": "30d", "channels": ["ops-webhook"]}
LATENCY = {"name": "payments-latency", "description": "checkout -> payments under 300 ms", "service": "checkout",
           "edge": {"parent": "checkout", "child": "payments"}, "sli": {"type": "latency", "threshold_ms": 300},
           "objective": 0.99, "window": "7d",
           "conditions": [{"severity": "page", "long": "2h", "short": "10m", "burn_rate": 10}]}


def error_parameter(response, status=400):
    assert response.status_code == status, response.content
    return response.json()["error"]["parameter"]


# ---------------------------------------------------------------- channels


def test_channels_are_created_listed_and_deleted(api):
    response = api.post("/api/v1/channels", WEBHOOK)
    assert response.status_code == 201
    body = response.json()
    assert {k: body[k] for k in ("name", "type", "url", "to")} == {**WEBHOOK, "to": []}
    assert api.post("/api/v1/channels", {"name": "mail", "type": "email", "to": ["oncall@example.com"]}
                    ).status_code == 201
    assert api.post("/api/v1/channels", {"name": "slack", "type": "slack",
                                         "url": "https://hooks.slack.com/services/T/B/x"}).status_code == 201
    listed = api.get("/api/v1/channels").json()["data"]
    assert [(c["name"], c["type"], c["url"], c["to"]) for c in listed] == [
        ("mail", "email", None, ["oncall@example.com"]), ("ops-webhook", "webhook", WEBHOOK["url"], []),
        ("slack", "slack", "https://hooks.slack.com/services/T/B/x", [])]
    assert api.get("/api/v1/channels/mail").json()["to"] == ["oncall@example.com"]
    assert api.delete("/api/v1/channels/mail").status_code == 204
    assert [c["name"] for c in api.get("/api/v1/channels").json()["data"]] == ["ops-webhook", "slack"]
    assert api.delete("/api/v1/channels/mail").status_code == 404


@pytest.mark.parametrize("body, field", [
    ({**WEBHOOK, "name": ""}, "name"),
    ({**WEBHOOK, "name": "x" * 101}, "name"),
    ({**WEBHOOK, "name": "a/b"}, "name"),
    ({**WEBHOOK, "type": "pager"}, "type"),
    ({**WEBHOOK, "url": "ftp://example.com/x"}, "url"),
    ({**WEBHOOK, "url": "javascript:alert(1)"}, "url"),
    ({"name": "s", "type": "slack"}, "url"),
    ({"name": "m", "type": "email"}, "to"),
    ({"name": "m", "type": "email", "to": "a@example.com"}, "to"),
    ({"name": "m", "type": "email", "to": ["a@example.com", "not an address"]}, "to[1]"),
    ({"name": "m", "type": "email", "to": ["a@example.com"], "url": "https://x.example"}, "url"),
    ({**WEBHOOK, "colour": "red"}, "colour"),
    ([], "body"),
])
def test_a_bad_channel_is_a_400_naming_the_field(api, body, field):
    assert error_parameter(api.post("/api/v1/channels", body)) == field
    assert not Channel.objects.exists()


def test_a_duplicate_channel_name_is_a_409(api):
    assert api.post("/api/v1/channels", WEBHOOK).status_code == 201
    assert error_parameter(api.post("/api/v1/channels", WEBHOOK), 409) == "name"


# ---------------------------------------------------------------- SLOs


def test_slos_are_created_read_replaced_and_deleted(api):
    api.post("/api/v1/channels", WEBHOOK)
    response = api.post("/api/v1/slos", AVAILABILITY)
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["name"] == "checkout-availability" and created["service"] == "checkout"
    assert created["sli"] == {"type": "availability", "threshold_ms": None, "value": None}
    assert created["objective"] == 0.999 and created["window"] == "30d" and created["channels"] == ["ops-webhook"]
    assert created["conditions"] == [] and created["edge"] is None and created["operation"] is None
    assert [c["burn_rate"] for c in created["effective_conditions"]] == [14.4, 6.0, 1.0]
    assert created["state"] == "ok" and created["evaluated_at"] is None and created["budget_remaining"] is None

    response = api.post("/api/v1/slos", LATENCY)
    assert response.status_code == 201, response.content
    latency = response.json()
    assert latency["edge"] == {"parent": "checkout", "child": "payments"}
    assert latency["sli"] == {"type": "latency", "threshold_ms": 300.0, "value": None}
    assert latency["conditions"] == [{"severity": "page", "long": "2h", "short": "10m", "burn_rate": 10.0}]
    row = SLO.objects.get(name="payments-latency")
    assert (row.edge_parent, row.edge_child, row.window_days, row.threshold_ms) == ("checkout", "payments", 7, 300)

    # the evaluation's figures show up in reads
    SLO.objects.filter(name="checkout-availability").update(
        sli=0.9995, budget_remaining=0.5, burn_rates={"1h": 2.0, "5m": None}, state="ticket",
        evaluated_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
    listed = api.get("/api/v1/slos").json()["data"]
    assert [s["name"] for s in listed] == ["checkout-availability", "payments-latency"]
    first = listed[0]
    assert first["sli"]["value"] == 0.9995 and first["budget_remaining"] == 0.5
    assert first["burn_rates"] == {"1h": 2.0, "5m": None} and first["state"] == "ticket"
    assert first["evaluated_at"] == "2026-01-02T03:04:05Z"
    assert api.get("/api/v1/slos/checkout-availability").json() == first

    # PUT replaces the definition; what GET returned can be sent back
    changed = {**first, "objective": 0.995, "window": "28d", "channels": [], "description": "relaxed"}
    response = api.put("/api/v1/slos/checkout-availability", changed)
    assert response.status_code == 200, response.content
    assert response.json()["objective"] == 0.995 and response.json()["window"] == "28d"
    row = SLO.objects.get(name="checkout-availability")
    assert row.window_days == 28 and row.description == "relaxed" and not row.channels.exists()
    assert row.sli == 0.9995  # the evaluation is kept until the next one

    response = api.put("/api/v1/slos/payments-latency", {**LATENCY, "sli": {"type": "availability"}, "edge": None,
                                                          "operation": "POST /pay", "conditions": []})
    assert response.status_code == 200, response.content
    row = SLO.objects.get(name="payments-latency")
    assert (row.sli_type, row.threshold_ms, row.edge_parent, row.operation, row.conditions) == (
        "availability", None, None, "POST /pay", [])

    assert api.delete("/api/v1/slos/payments-latency").status_code == 204
    assert api.get("/api/v1/slos/payments-latency").status_code == 404
    assert api.put("/api/v1/slos/payments-latency", LATENCY).status_code == 404
    assert [s["name"] for s in api.get("/api/v1/slos").json()["data"]] == ["checkout-availability"]


def test_a_duplicate_slo_is_a_409_and_put_can_rename(api):
    body = {**AVAILABILITY, "channels": []}
    assert api.post("/api/v1/slos", body).status_code == 201
    assert error_parameter(api.post("/api/v1/slos", body), 409) == "name"
    assert api.post("/api/v1/slos", {**body, "name": "other"}).status_code == 201
    assert error_parameter(api.put("/api/v1/slos/other", body), 409) == "name"
    assert api.put("/api/v1/slos/other", {**body, "name": "renamed"}).status_code == 200
    assert sorted(SLO.objects.values_list("name", flat=True)) == ["checkout-availability", "renamed"]


@pytest.mark.parametrize("change, field", [
    ({"name": None}, "name"),
    ({"service": ""}, "service"),
    ({"objective": 1}, "objective"),
    ({"objective": 0}, "objective"),
    ({"objective": 1.5}, "objective"),
    ({"objective": "0.999"}, "objective"),
    ({"objective": True}, "objective"),
    ({"window": "30"}, "window"),
    ({"window": "12h"}, "window"),
    ({"window": "400d"}, "window"),
    ({"sli": {"type": "latency"}}, "sli.threshold_ms"),
    ({"sli": {"type": "latency", "threshold_ms": 0}}, "sli.threshold_ms"),
    ({"sli": {"type": "latency", "threshold_ms": -5}}, "sli.threshold_ms"),
    ({"sli": {"type": "availability", "threshold_ms": 300}}, "sli.threshold_ms"),
    ({"sli": {"type": "throughput"}}, "sli.type"),
    ({"sli": None}, "sli"),
    ({"channels": ["nope"]}, "channels"),
    ({"channels": "ops-webhook"}, "channels"),
    ({"edge": {"parent": "checkout"}}, "edge.child"),
    ({"edge": {"parent": "", "child": "payments"}}, "edge.parent"),
    ({"edge": "checkout->payments"}, "edge"),
    ({"edge": {"parent": "a", "child": "b"}, "operation": "GET /"}, "operation"),
    ({"conditions": [{"severity": "urgent", "long": "1h", "short": "5m", "burn_rate": 2}]}, "conditions"),
    ({"conditions": [{"severity": "page", "long": "5m", "short": "1h", "burn_rate": 2}]}, "conditions"),
    ({"conditions": [{"severity": "page", "long": "1h", "short": "5m", "burn_rate": -1}]}, "conditions"),
    ({"conditions": "fast"}, "conditions"),
    ({"description": 5}, "description"),
    ({"owner": "me"}, "owner"),
])
def test_a_bad_slo_is_a_400_naming_the_field(api, change, field):
    api.post("/api/v1/channels", WEBHOOK)
    assert error_parameter(api.post("/api/v1/slos", {**AVAILABILITY, **change})) == field
    assert not SLO.objects.exists()


def test_a_body_that_is_not_json_names_the_body(token):
    response = Client().post("/api/v1/slos", "{nope", content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {token}")
    assert error_parameter(response) == "body"


def test_a_bad_put_changes_nothing(api):
    api.post("/api/v1/slos", {**AVAILABILITY, "channels": []})
    assert error_parameter(api.put("/api/v1/slos/checkout-availability", {**AVAILABILITY, "objective": 2})
                           ) == "objective"
    assert SLO.objects.get().objective == 0.999


# ---------------------------------------------------------------- alerts


def test_alerts_are_listed_newest_first_and_filtered(api):
    api.post("/api/v1/slos", {**AVAILABILITY, "channels": []})
    api.post("/api/v1/slos", {**LATENCY})
    availability, latency = SLO.objects.get(name="checkout-availability"), SLO.objects.get(name="payments-latency")
    base = timezone.now().replace(microsecond=0) - dt.timedelta(hours=5)
    old = Alert.objects.create(slo=availability, severity="ticket", state="resolved", started_at=base,
                               resolved_at=base + dt.timedelta(hours=1), burn_rates={"3d": 1.5, "6h": 2.0},
                               budget_remaining=0.8, summary="ticket: burning", details={"top": []})
    page = Alert.objects.create(slo=availability, severity="page", state="firing",
                                started_at=base + dt.timedelta(hours=3), burn_rates={"1h": 20.0, "5m": 30.0},
                                budget_remaining=0.4, summary="page: burning fast", details={"exemplars": ["ab"]})
    slow = Alert.objects.create(slo=latency, severity="page", state="firing", started_at=base + dt.timedelta(hours=4),
                                burn_rates={}, budget_remaining=None, summary="slow")

    data = api.get("/api/v1/alerts").json()["data"]
    assert [row["id"] for row in data] == [slow.pk, page.pk, old.pk]
    assert data[1] == {"id": page.pk, "slo": "checkout-availability", "severity": "page", "state": "firing",
                       "started_at": (base + dt.timedelta(hours=3)).astimezone(dt.timezone.utc).strftime(
                           "%Y-%m-%dT%H:%M:%SZ"), "resolved_at": None, "burn_rates": {"1h": 20.0, "5m": 30.0},
                       "budget_remaining": 0.4, "summary": "page: burning fast", "details": {"exemplars": ["ab"]}}
    assert data[2]["resolved_at"] is not None and data[2]["state"] == "resolved"
    assert [row["id"] for row in api.get("/api/v1/alerts", state="firing").json()["data"]] == [slow.pk, page.pk]
    assert [row["id"] for row in api.get("/api/v1/alerts", state="resolved").json()["data"]] == [old.pk]
    assert [row["id"] for row in api.get("/api/v1/alerts", slo="checkout-availability").json()["data"]
            ] == [page.pk, old.pk]
    assert [row["id"] for row in api.get("/api/v1/alerts", slo="checkout-availability", state="firing"
                                         ).json()["data"]] == [page.pk]
    assert api.get("/api/v1/alerts", slo="nothing").json()["data"] == []
    assert [row["id"] for row in api.get("/api/v1/alerts", limit="1").json()["data"]] == [slow.pk]
    assert error_parameter(api.get("/api/v1/alerts", limit="0")) == "limit"
    assert error_parameter(api.get("/api/v1/alerts", limit="1001")) == "limit"
    assert error_parameter(api.get("/api/v1/alerts", state="open")) == "state"


# ---------------------------------------------------------------- who may


WRITES = [("post", "/api/v1/channels", WEBHOOK), ("post", "/api/v1/slos", AVAILABILITY),
          ("put", "/api/v1/slos/checkout-availability", AVAILABILITY),
          ("delete", "/api/v1/slos/checkout-availability", None), ("delete", "/api/v1/channels/ops-webhook", None)]
READS = ["/api/v1/channels", "/api/v1/slos", "/api/v1/slos/checkout-availability", "/api/v1/alerts"]


def _write(client, method, path, body, **headers):
    if body is None:
        return getattr(client, method)(path, **headers)
    return getattr(client, method)(path, json.dumps(body), content_type="application/json", **headers)


@pytest.fixture
def stored(api):
    assert api.post("/api/v1/channels", WEBHOOK).status_code == 201
    assert api.post("/api/v1/slos", AVAILABILITY).status_code == 201


@pytest.mark.parametrize("path", READS)
def test_anonymous_reads_are_401_unless_public(client, settings, stored, path):
    settings.PUBLIC_READ = False
    response = client.get(path)
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    settings.PUBLIC_READ = True
    assert client.get(path).status_code == 200


@pytest.mark.parametrize("method, path, body", WRITES)
def test_anonymous_writes_are_401_even_when_reads_are_public(client, settings, stored, method, path, body):
    for public in (False, True):
        settings.PUBLIC_READ = public
        assert _write(client, method, path, body).status_code == 401
    assert SLO.objects.count() == 1 and Channel.objects.count() == 1


def test_public_reads_hide_channel_secrets(client, settings, stored):
    api_slack = {"name": "slack", "type": "slack", "url": "https://hooks.slack.com/services/T0/B0/secret"}
    Channel.objects.create(**api_slack)
    Channel.objects.create(name="mail", type="email", to=["oncall@example.com"])
    settings.PUBLIC_READ = True
    listed = {c["name"]: c for c in client.get("/api/v1/channels").json()["data"]}
    assert "secret" not in listed["slack"]["url"] and listed["slack"]["url"].startswith("https://hooks.slack.com/")
    assert listed["mail"]["to"] == []


def test_a_session_writes_with_a_csrf_token(stored):
    User.objects.create_user("web", password="pw-web-1")
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="web", password="pw-web-1")
    body = {**AVAILABILITY, "name": "by-session"}
    assert _write(client, "post", "/api/v1/slos", body).status_code == 403  # no CSRF token
    client.get("/login/")  # any page sets the csrftoken cookie
    csrf = client.cookies.get("csrftoken")
    if csrf is None:
        from django.middleware.csrf import _get_new_csrf_string

        csrf_value = _get_new_csrf_string()
        client.cookies["csrftoken"] = csrf_value
    else:
        csrf_value = csrf.value
    response = _write(client, "post", "/api/v1/slos", body, HTTP_X_CSRFTOKEN=csrf_value)
    assert response.status_code == 201, response.content
    assert client.get("/api/v1/slos/by-session").status_code == 200


def test_a_token_writes_and_a_bad_token_does_not(client, token):
    ok = _write(client, "post", "/api/v1/channels", WEBHOOK, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert ok.status_code == 201
    bad = _write(client, "post", "/api/v1/slos", AVAILABILITY, HTTP_AUTHORIZATION="Bearer sl_wrong")
    assert bad.status_code == 401 and not SLO.objects.exists()


def test_a_wrong_method_is_405(api):
    assert api.put("/api/v1/alerts", {}).status_code == 405
    assert api.put("/api/v1/channels", {}).status_code == 405


# ---------------------------------------------------------------- the OpenAPI document, every method


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/v1/channels"), ("POST", "/api/v1/channels"), ("GET", "/api/v1/channels/{name}"),
    ("DELETE", "/api/v1/channels/{name}"), ("GET", "/api/v1/slos"), ("POST", "/api/v1/slos"),
    ("GET", "/api/v1/slos/{name}"), ("PUT", "/api/v1/slos/{name}"), ("DELETE", "/api/v1/slos/{name}"),
    ("GET", "/api/v1/alerts")])
def test_generated_requests_get_documented_answers(api, token, method, path):
    """schemathesis against every SLO operation, reads and writes, with SLOs, channels and
    alerts stored (tests/test_api_schema.py drives only the first method of each path)."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    from tests.test_api_schema import api_schema

    assert api.post("/api/v1/channels", WEBHOOK).status_code == 201
    assert api.post("/api/v1/channels", {"name": "mail", "type": "email", "to": ["a@example.com"]}).status_code == 201
    assert api.post("/api/v1/slos", AVAILABILITY).status_code == 201
    assert api.post("/api/v1/slos", LATENCY).status_code == 201
    slo = SLO.objects.get(name="checkout-availability")
    SLO.objects.filter(pk=slo.pk).update(sli=0.99, budget_remaining=-0.5, burn_rates={"1h": None, "5m": 3.5},
                                         state="page", evaluated_at=timezone.now())
    Alert.objects.create(slo=slo, severity="page", started_at=timezone.now(), burn_rates={"1h": 20.0},
                         budget_remaining=0.1, summary="burning", details={"top": [{"operation": "x"}]})
    operation = next(result.ok() for result in api_schema().get_all_operations()
                     if result.ok().path == path and result.ok().method.upper() == method)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

    @given(case=operation.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=checks)

    run()

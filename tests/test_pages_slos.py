"""The SLO pages, the alert history, the channels with their delivery log, and the admin."""

import datetime as dt
import json
import os

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from dashboards.models import SLO, Alert, Channel, Delivery
from dashboards.slos import evaluate
from tests.shop import store_checkouts

pytestmark = pytest.mark.django_db(transaction=True)
XSS = "<script>alert(1)</script>"


@pytest.fixture
def shop():
    """8 checkouts over the last 10 minutes; payment fails 3 of them."""
    prefix = f"slo-{os.urandom(3).hex()}"
    ids = store_checkouts(prefix)
    return {"front": f"{prefix}-frontend", "pay": f"{prefix}-payment", "ids": [i.hex() for i in ids]}


def figure(html, element_id):
    start = html.index(f'<script id="{element_id}" type="application/json">') + len(
        f'<script id="{element_id}" type="application/json">')
    return json.loads(html[start:html.index("</script>", start)])


def make_alert(slo, severity, state, minutes_ago, **extra):
    started = timezone.now() - dt.timedelta(minutes=minutes_ago)
    return Alert.objects.create(slo=slo, severity=severity, state=state, started_at=started,
                                resolved_at=started + dt.timedelta(minutes=5) if state == Alert.RESOLVED else None,
                                burn_rates={"1h": 20.0, "5m": 30.0}, budget_remaining=0.5,
                                summary=extra.pop("summary", f"{slo.name} {severity} {state}"), **extra)


# --- Login --------------------------------------------------------------------------------


def test_every_slo_page_needs_a_login(client):
    slo = SLO.objects.create(name="checkout-availability", service="checkout", objective=0.99)
    channel = Channel.objects.create(name="ops", type=Channel.WEBHOOK, url="https://hooks.example/x")
    for path in ("/slos/", f"/slos/{slo.name}/", "/slos/new/", f"/slos/{slo.name}/edit/", f"/slos/{slo.name}/delete/",
                 "/alerts/", "/channels/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), path
    for path in (f"/slos/{slo.name}/delete/", f"/channels/{channel.pk}/test/", "/slos/new/", "/channels/"):
        response = client.post(path, {"name": "x"})
        assert response.status_code == 302 and response["Location"].startswith("/login/"), path
    assert SLO.objects.filter(pk=slo.pk).exists() and Channel.objects.count() == 1
    assert not Delivery.objects.exists()


# --- The list -----------------------------------------------------------------------------


def test_the_list_shows_each_slo_with_its_state_budget_and_firing_alerts_on_top(logged_in, shop):
    paying = SLO.objects.create(name="payment-availability", service=shop["pay"], objective=0.99)
    fast = SLO.objects.create(name="frontend-latency", service=shop["front"], sli_type=SLO.LATENCY,
                              threshold_ms=500, objective=0.95)
    SLO.objects.create(name="idle-edge", service="a", edge_parent="a", edge_child="b", objective=0.999)
    evaluate.evaluate(paying)
    evaluate.evaluate(fast)
    paying.refresh_from_db()
    fast.refresh_from_db()
    assert paying.state == "page" and fast.state == "ok"

    response = logged_in.get("/slos/")
    assert response.status_code == 200
    html = response.content.decode()
    rows = {r["slo"].name: r for r in response.context["rows"]}
    assert list(rows) == ["payment-availability", "frontend-latency", "idle-edge"]  # paging first
    assert rows["payment-availability"]["sli"] == "62.500 %"
    assert rows["payment-availability"]["budget"] == "−3650.0 %"  # 37.5 % bad against 1 % allowed
    assert rows["payment-availability"]["budget_meter"] == 0.0
    assert rows["frontend-latency"]["budget"] == "100.0 %" and rows["frontend-latency"]["badge"] == "ok"
    assert rows["idle-edge"]["target"] == "calls a → b" and rows["idle-edge"]["budget"] == "–"
    # state badges, budget bars, links, the "New SLO" link
    assert '<span class="badge failing">page</span>' in html and '<span class="badge ok">ok</span>' in html
    assert html.count('<meter class="budget"') == 2
    assert 'href="/slos/payment-availability/"' in html and 'href="/slos/new/"' in html
    assert "1h " in html and "×" in html  # burn rates
    # the firing alert (made by the evaluation) above the table
    assert html.index('id="firing-alerts"') < html.index('id="slo-table"')
    assert Alert.objects.get(slo=paying, severity="page").summary.split(":")[0] in html
    assert 'href="/slos/"' in html  # in the header navigation


def test_an_empty_list_invites_to_define_one(logged_in):
    html = logged_in.get("/slos/").content.decode()
    assert 'id="no-slos"' in html and "/slos/new/" in html


# --- One SLO ------------------------------------------------------------------------------


def test_the_slo_page_has_its_three_charts_definition_conditions_and_alerts(logged_in, shop):
    channel = Channel.objects.create(name="ops-hook", type=Channel.WEBHOOK, url="https://hooks.example/x")
    slo = SLO.objects.create(name="payment-availability", service=shop["pay"], objective=0.99,
                             description="Payments go through.")
    slo.channels.add(channel)
    evaluate.evaluate(slo)
    old = make_alert(slo, "ticket", Alert.RESOLVED, 600, details={"exemplar_trace_ids": [shop["ids"][2]]})

    response = logged_in.get(f"/slos/{slo.name}/", {"range": "1h"})
    assert response.status_code == 200
    html = response.content.decode()

    sli = figure(html, "sli-data")
    assert [t["meta"] for t in sli["data"]] == ["sli", "objective"]
    assert sli["data"][1]["y"] == [99.0, 99.0]
    values = [v for v in sli["data"][0]["y"] if v is not None]
    assert len(sli["data"][0]["x"]) <= 61 and 0 in values and 100 in values  # a failed minute, a good one

    burn = figure(html, "burn-data")
    thresholds = [t for t in burn["data"] if t["meta"] == "threshold"]
    assert [(t["name"].split()[0], t["y"][0]) for t in thresholds] == [("page", 14.4), ("page", 6.0), ("ticket", 1.0)]
    lines = [t for t in burn["data"] if t["meta"] == "window"]
    assert [t["name"] for t in lines] == ["burn rate over 5m", "burn rate over 30m", "burn rate over 1h",
                                          "burn rate over 6h", "burn rate over 3d"]
    # at the end of the range the 1 h burn rate is the evaluation's: 3 bad of 8 against 1 %
    assert lines[2]["y"][-1] == pytest.approx(37.5, rel=1e-3)
    slo.refresh_from_db()
    assert slo.burn_rates["1h"] == pytest.approx(37.5, rel=1e-3)

    burndown = figure(html, "burndown-data")
    assert [t["meta"] for t in burndown["data"]] == ["budget", "even"]
    budget = burndown["data"][0]["y"]
    assert len(budget) <= 61 and budget[0] == 100 and budget[-1] == pytest.approx(-3650, rel=1e-3)
    assert response.context["budget"]["requests"] == 8

    # definition, effective conditions shown as the defaults, channels, alert history
    assert "Payments go through." in html and f"{shop['pay']} (requests entering it)" in html
    assert "(the defaults for a 30-day window)" in html
    assert [c["long"] for c in response.context["conditions"]] == ["1h", "6h", "3d"]
    assert "ops-hook" in html
    alerts = response.context["alerts"]
    assert [(a["alert"].severity, a["alert"].state) for a in alerts][-1] == ("ticket", "resolved")
    assert {a["alert"].severity for a in alerts[:-1]} == {"page", "ticket"} and alerts[-1]["alert"] == old
    assert all(a["alert"].state == "firing" for a in alerts[:-1])
    assert f'href="/traces/{shop["ids"][2]}/"' in html


def test_own_conditions_are_shown_and_drawn(logged_in, shop):
    slo = SLO.objects.create(name="front-latency", service=shop["front"], operation="GET /checkout",
                             sli_type=SLO.LATENCY, threshold_ms=104.5, objective=0.9, window_days=7,
                             conditions=[{"severity": "page", "long": "10m", "short": "2m", "burn_rate": 5}])
    response = logged_in.get(f"/slos/{slo.name}/", {"range": "15m"})
    html = response.content.decode()
    assert "(the defaults" not in html
    burn = figure(html, "burn-data")
    assert [t["name"] for t in burn["data"]] == ["burn rate over 2m", "burn rate over 10m",
                                                 "page threshold 5× (10m and 2m)"]
    # roots last 100..107 ms: 3 of 8 slower than 104.5 ms (the histogram splits the bucket)
    ten = burn["data"][1]["y"][-1]
    assert ten == pytest.approx((3 / 8) / 0.1, rel=0.35)
    assert figure(html, "sli-data")["data"][1]["y"][0] == 90.0


def test_an_unknown_slo_is_404(logged_in):
    assert logged_in.get("/slos/nothing-here/").status_code == 404
    assert logged_in.get("/slos/nothing-here/edit/").status_code == 404


# --- The form -----------------------------------------------------------------------------


def test_the_form_creates_an_slo(logged_in):
    channel = Channel.objects.create(name="ops", type=Channel.SLACK, url="https://hooks.slack.example/T/B/secret")
    page = logged_in.get("/slos/new/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="csrfmiddlewaretoken"' in html and "page 1h 5m 14.4" in html  # the defaults explained
    response = logged_in.post("/slos/new/", {
        "name": "checkout-latency", "service": "checkout", "operation": "GET /cart", "sli_type": "latency",
        "threshold_ms": "300", "objective_text": "99.5 %", "window": "4w",
        "conditions_text": "page 2h 10m 10\n\nticket 1d 2h 1.5\n", "channels": [channel.pk]})
    assert response.status_code == 302 and response["Location"] == "/slos/checkout-latency/"
    slo = SLO.objects.get(name="checkout-latency")
    assert slo.objective == pytest.approx(0.995) and slo.window_days == 28 and slo.threshold_ms == 300
    assert slo.operation == "GET /cart" and slo.edge_parent is None
    assert slo.conditions == [{"severity": "page", "long": "2h", "short": "10m", "burn_rate": 10.0},
                              {"severity": "ticket", "long": "1d", "short": "2h", "burn_rate": 1.5}]
    assert list(slo.channels.all()) == [channel]
    assert "created" in logged_in.get(response["Location"]).content.decode()
    # a ratio works too, and no conditions means the defaults
    logged_in.post("/slos/new/", {"name": "edge", "edge_parent": "front", "edge_child": "pay",
                                  "sli_type": "availability", "objective_text": "0.999", "window": "30d"})
    edge = SLO.objects.get(name="edge")
    assert edge.objective == pytest.approx(0.999) and edge.conditions == [] and edge.service == "front"


@pytest.mark.parametrize("field, value, words", [
    ("objective_text", "100", "below 100 %"),
    ("objective_text", "lots", "percentage"),
    ("objective_text", "1", "ambiguous"),
    ("window", "12h", "whole days"),
    ("conditions_text", "page 5m 1h 14.4", "short window"),
    ("conditions_text", "warn 1h 5m 2", "Line 1"),
    ("threshold_ms", "", "threshold"),
    ("name", "a/b", "may not contain /"),
])
def test_the_form_rejects_bad_values_naming_the_field(logged_in, field, value, words):
    data = {"name": "x", "service": "checkout", "sli_type": "latency", "threshold_ms": "200",
            "objective_text": "99.9", "window": "30d", "conditions_text": ""}
    data[field] = value
    response = logged_in.post("/slos/new/", data)
    assert response.status_code == 200 and not SLO.objects.exists()
    assert field in response.context["form"].errors
    html = response.content.decode()
    error = html[html.index(f'id="error-{field}"'):]
    assert words in error[:300]
    assert html.index(f'id="field-{field}"') < html.index(f'id="error-{field}"')  # next to its field


def test_edit_and_delete(logged_in):
    slo = SLO.objects.create(name="pay", service="payment", objective=0.99, window_days=7,
                             conditions=[{"severity": "page", "long": "1h", "short": "5m", "burn_rate": 14.4}])
    make_alert(slo, "page", Alert.FIRING, 3)
    html = logged_in.get("/slos/pay/edit/").content.decode()
    assert 'value="99"' in html and 'value="7d"' in html and "page 1h 5m 14.4" in html
    response = logged_in.post("/slos/pay/edit/", {"name": "pay-2", "service": "payment", "sli_type": "availability",
                                                  "objective_text": "99.95%", "window": "7d", "conditions_text": ""})
    assert response.status_code == 302 and response["Location"] == "/slos/pay-2/"
    slo.refresh_from_db()
    assert slo.name == "pay-2" and slo.objective == pytest.approx(0.9995) and slo.conditions == []
    # a bad edit changes nothing
    response = logged_in.post("/slos/pay-2/edit/", {"name": "pay-2", "service": "payment", "sli_type": "availability",
                                                    "objective_text": "0", "window": "7d"})
    assert response.status_code == 200 and "objective_text" in response.context["form"].errors
    slo.refresh_from_db()
    assert slo.objective == pytest.approx(0.9995)
    # delete: GET asks, POST deletes (with its alerts)
    confirm = logged_in.get("/slos/pay-2/delete/")
    assert confirm.status_code == 200 and 'id="delete-form"' in confirm.content.decode()
    assert SLO.objects.filter(pk=slo.pk).exists()
    response = logged_in.post("/slos/pay-2/delete/")
    assert response.status_code == 302 and response["Location"] == "/slos/"
    assert not SLO.objects.exists() and not Alert.objects.exists()


def test_forms_need_the_csrf_token(client):
    User.objects.create_user("viewer", password="pw-viewer-1")
    client.handler.enforce_csrf_checks = True
    assert client.login(username="viewer", password="pw-viewer-1")
    response = client.post("/slos/new/", {"name": "x", "service": "s", "sli_type": "availability",
                                          "objective_text": "99", "window": "30d"})
    assert response.status_code == 403 and not SLO.objects.exists()


# --- Alerts -------------------------------------------------------------------------------


def test_alerts_list_firing_before_resolved_newest_first(logged_in):
    slo = SLO.objects.create(name="pay", service="payment", objective=0.99)
    old_resolved = make_alert(slo, "page", Alert.RESOLVED, 300)
    new_resolved = make_alert(slo, "ticket", Alert.RESOLVED, 60)
    old_firing = make_alert(slo, "ticket", Alert.FIRING, 400, details={"exemplar_trace_ids": ["ab" * 16]})
    new_firing = make_alert(slo, "page", Alert.FIRING, 2)
    response = logged_in.get("/alerts/")
    assert response.status_code == 200
    assert [a["alert"] for a in response.context["alerts"]] == [new_firing, old_firing, new_resolved, old_resolved]
    html = response.content.decode()
    assert html.index(f'data-alert="{old_firing.pk}"') < html.index(f'data-alert="{new_resolved.pk}"')
    assert f'href="/traces/{"ab" * 16}/"' in html and "1h 20.00×" in html and 'href="/slos/pay/"' in html


# --- Channels -----------------------------------------------------------------------------


def test_channels_show_breaker_and_delivery_log(logged_in):
    slo = SLO.objects.create(name="pay", service="payment", objective=0.99)
    alert = make_alert(slo, "page", Alert.FIRING, 1)
    hook = Channel.objects.create(name="hook", type=Channel.WEBHOOK, url="https://alerts.example/hook/s3cret",
                                  consecutive_failures=5, open_until=timezone.now() + dt.timedelta(minutes=5))
    mail = Channel.objects.create(name="mail", type=Channel.EMAIL, to=["ops@example.com"])
    Delivery.objects.create(channel=hook, alert=alert, kind="firing", status="failed", attempts=5,
                            last_error="connection refused", response_status=None)
    Delivery.objects.create(channel=mail, kind="test", status="sent", attempts=1, response_status=250,
                            sent_at=timezone.now())
    for _ in range(120):
        Delivery.objects.create(channel=mail, kind="test", status="pending")
    response = logged_in.get("/channels/")
    html = response.content.decode()
    assert response.status_code == 200
    assert len(response.context["deliveries"]) == 100  # the latest 100
    assert html.count("<tr data-delivery=") == 100
    rows = {c["channel"].name: c for c in response.context["channels"]}
    assert rows["hook"]["breaker"] == "open" and "5 failures" in rows["hook"]["breaker_detail"]
    assert rows["mail"]["breaker"] == "closed" and rows["mail"]["destination"] == "ops@example.com"
    assert "s3cret" not in html  # webhook paths may hold secrets
    assert html.count("Send a test") == 2 and f'action="/channels/{hook.pk}/test/"' in html
    # the oldest ones (the failed and the sent) are past the latest 100: a short log shows them
    Delivery.objects.filter(status="pending").delete()
    html = logged_in.get("/channels/").content.decode()
    assert "connection refused" in html and "250" in html and "pay page" in html


def test_the_test_button_calls_notify_send_test(logged_in, monkeypatch):
    from dashboards.slos import notify

    channel = Channel.objects.create(name="hook", type=Channel.WEBHOOK, url="https://alerts.example/hook")
    sent = []

    def fake_send_test(target):
        sent.append(target.pk)
        return Delivery.objects.create(channel=target, kind="test", status="sent", attempts=1, response_status=200,
                                       sent_at=timezone.now())

    monkeypatch.setattr(notify, "send_test", fake_send_test)
    response = logged_in.post(f"/channels/{channel.pk}/test/", follow=True)
    assert sent == [channel.pk]
    assert "Test sent to hook." in response.content.decode()
    assert logged_in.get(f"/channels/{channel.pk}/test/").status_code == 405


def test_the_test_button_sends_a_real_test(logged_in):
    """Through dashboards.slos.notify itself: to a local receiver (sent) and to a closed port (failed)."""
    import http.server
    import threading

    from tests.conftest import free_port

    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        up = Channel.objects.create(name="up", type=Channel.WEBHOOK, url=f"http://127.0.0.1:{server.server_port}/hook")
        down = Channel.objects.create(name="down", type=Channel.WEBHOOK, url=f"http://127.0.0.1:{free_port()}/")
        html = logged_in.post(f"/channels/{up.pk}/test/", follow=True).content.decode()
        assert "Test sent to up." in html and len(received) == 1
        html = logged_in.post(f"/channels/{down.pk}/test/", follow=True).content.decode()
        assert "The test to down failed" in html
    finally:
        server.shutdown()
        server.server_close()
    log = {d.channel.name: d for d in Delivery.objects.filter(kind="test")}
    assert log["up"].status == "sent" and log["up"].response_status == 200
    assert log["down"].status == "failed" and log["down"].last_error
    assert html.count("<tr data-delivery=") == 2  # both in the delivery log


def test_the_test_button_says_so_when_notify_is_missing(logged_in, monkeypatch):
    import sys

    channel = Channel.objects.create(name="hook", type=Channel.WEBHOOK, url="https://alerts.example/hook")
    monkeypatch.setitem(sys.modules, "dashboards.slos.notify", None)  # import fails
    import dashboards.slos as package

    monkeypatch.delattr(package, "notify", raising=False)
    response = logged_in.post(f"/channels/{channel.pk}/test/", follow=True)
    assert response.status_code == 200 and "not available yet" in response.content.decode()
    assert not Delivery.objects.exists()


def test_a_channel_is_added_with_the_form(logged_in):
    response = logged_in.post("/channels/", {"new-name": "mail", "new-type": "email",
                                             "new-to_text": "a@example.com, b@example.com"})
    assert response.status_code == 302
    assert Channel.objects.get(name="mail").to == ["a@example.com", "b@example.com"]
    response = logged_in.post("/channels/", {"new-name": "hook", "new-type": "webhook", "new-url": ""})
    assert response.status_code == 200 and "url" in response.context["form"].errors
    assert 'id="error-url"' in response.content.decode()
    response = logged_in.post("/channels/", {"new-name": "m2", "new-type": "email", "new-to_text": "nope"})
    assert "to_text" in response.context["form"].errors and not Channel.objects.filter(name="m2").exists()


# --- Escaping -----------------------------------------------------------------------------


def test_telemetry_strings_are_escaped_everywhere(logged_in):
    slo = SLO.objects.create(name="xss", service=XSS, operation=XSS, objective=0.99, description=XSS,
                             burn_rates={"1h": 2.0}, budget_remaining=0.4, sli=0.99)
    channel = Channel.objects.create(name=XSS, type=Channel.EMAIL, to=["a@example.com"])
    slo.channels.add(channel)
    alert = make_alert(slo, "page", Alert.FIRING, 1, summary=XSS, details={"exemplar_trace_ids": [XSS]})
    Delivery.objects.create(channel=channel, alert=alert, kind="firing", status="failed", last_error=XSS)
    for path in ("/slos/", "/slos/xss/", "/slos/xss/edit/", "/alerts/", "/channels/"):
        response = logged_in.get(path)
        assert response.status_code == 200, path
        html = response.content.decode()
        assert XSS not in html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path


# --- Admin --------------------------------------------------------------------------------


def test_the_admin_lists_and_guards_slos_alerts_and_deliveries(client):
    User.objects.create_superuser("admin", password="pw-admin-1")
    assert client.login(username="admin", password="pw-admin-1")
    slo = SLO.objects.create(name="pay", service="payment", objective=0.99, state="ticket")
    channel = Channel.objects.create(name="hook", type=Channel.WEBHOOK, url="https://alerts.example/hook")
    alert = make_alert(slo, "ticket", Alert.FIRING, 1)
    delivery = Delivery.objects.create(channel=channel, alert=alert, kind="firing", status="sent")
    listing = client.get("/admin/dashboards/slo/", {"q": "payment"}).content.decode()
    assert "pay" in listing and "ticket" in listing
    assert client.get("/admin/dashboards/slo/", {"state": "ticket"}).status_code == 200
    for path in ("/admin/dashboards/channel/", "/admin/dashboards/alert/", "/admin/dashboards/delivery/",
                 f"/admin/dashboards/slo/{slo.pk}/change/", f"/admin/dashboards/alert/{alert.pk}/change/",
                 f"/admin/dashboards/delivery/{delivery.pk}/change/"):
        assert client.get(path).status_code == 200, path
    assert client.get("/admin/dashboards/delivery/add/").status_code == 403
    assert client.get("/admin/dashboards/alert/add/").status_code == 403
    # the SLO admin validates the objective and the conditions
    response = client.post("/admin/dashboards/slo/add/", {
        "name": "bad", "service": "s", "sli_type": "availability", "objective": "99.9", "window_days": "30",
        "conditions": '[{"severity": "warn", "long": "1h", "short": "5m", "burn_rate": 2}]'})
    assert response.status_code == 200 and not SLO.objects.filter(name="bad").exists()
    errors = response.context["adminform"].form.errors
    assert "objective" in errors and "conditions" in errors

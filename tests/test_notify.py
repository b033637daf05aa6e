"""Notification delivery (dashboards.slos.notify) against real HTTP receivers on 127.0.0.1:
Alertmanager webhook and Slack payloads, e-mail, retries with backoff, timeouts, the
per-channel circuit breaker, no double sends, and channels not holding each other up."""

import datetime as dt
import http.server
import json
import threading
import time

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from dashboards.models import SLO, Alert, Channel, Delivery
from dashboards.slos import notify
from tests.conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC = "https://sightline.example.com"


class Receiver:
    """An HTTP server in a thread recording every POST; answers from `statuses` in turn
    (the last one repeats), sleeping `delays` (in turn, last repeats) before answering."""

    def __init__(self, port=0, statuses=(200,), delays=(0,)):
        self.requests, self.statuses, self.delays = [], list(statuses), list(delays)
        self.started = []  # monotonic time each request arrived
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                index = len(receiver.started)
                receiver.started.append(time.monotonic())
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(receiver.delays[min(index, len(receiver.delays) - 1)])
                status = receiver.statuses[min(index, len(receiver.statuses) - 1)]
                receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "json": json.loads(body or b"null")})
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    self.wfile.write(b"ok" if status < 300 else b"receiver broke")
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receivers():
    started = []

    def start(**kwargs):
        receiver = Receiver(**kwargs)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()


@pytest.fixture(autouse=True)
def fast(settings, monkeypatch):
    settings.PUBLIC_URL = PUBLIC + "/"
    settings.NOTIFY_TIMEOUT_SECONDS = 2
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "sightline@example.com"
    monkeypatch.setattr(notify, "BACKOFF_BASE_SECONDS", 0.05)
    monkeypatch.setattr(notify, "BACKOFF_CAP_SECONDS", 0.2)
    monkeypatch.setattr(notify, "BREAKER_OPEN_SECONDS", 1.0)


STARTED = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
RESOLVED = dt.datetime(2024, 5, 1, 12, 47, 30, 250000, tzinfo=dt.timezone.utc)


def make_alert(name="checkout availability", summary=None, **slo_fields):
    slo = SLO.objects.create(name=name, service="checkout", operation="POST /pay", objective=0.999,
                             **slo_fields)
    details = {"top": [{"operation": "POST /pay", "span_kind": "server", "requests": 1200, "errors": 96,
                        "p95_ms": 310.5}],
               "exemplar_trace_ids": ["4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7a3ce929d0e0e4736"],
               "conditions": [{"severity": "page", "long": "1h", "short": "5m", "burn_rate": 14.4}]}
    return Alert.objects.create(
        slo=slo, severity="page", started_at=STARTED, burn_rates={"1h": 80.0, "5m": 96.0, "6h": None},
        budget_remaining=0.875, details=details,
        summary=summary or "[page] SLO checkout availability is burning its error budget: burn rate 1h 80.0x.")


def channel(url="", type=Channel.WEBHOOK, name="ops", **fields):
    return Channel.objects.create(name=name, type=type, url=url, **fields)


def run_until_done(delivery_id, limit=40, max_sleep=0.3):
    """Call notify.deliver as the Celery task would, sleeping what it asks (capped)."""
    waits = []
    for _ in range(limit):
        wait = notify.deliver(delivery_id)
        if wait is None:
            return waits
        waits.append(wait)
        time.sleep(min(wait, max_sleep))
    raise AssertionError(f"delivery {delivery_id} not done after {limit} tries: {waits}")


def refresh(obj):
    obj.refresh_from_db()
    return obj


# --- Payloads ------------------------------------------------------------------------------

def test_webhook_gets_alertmanager_payloads_for_firing_and_resolved(receivers):
    receiver = receivers()
    alert = make_alert(edge_parent=None)
    hook = channel(receiver.url, name="pager")
    firing = Delivery.objects.create(channel=hook, alert=alert, kind="firing")

    assert notify.deliver(firing.id) is None
    firing = refresh(firing)
    assert (firing.status, firing.attempts, firing.response_status, firing.last_error) == ("sent", 1, 200, "")
    assert firing.sent_at is not None and firing.next_attempt_at is None
    [request] = receiver.requests
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["json"]
    labels = {"alertname": "SLOBurnRate", "slo": "checkout availability", "service": "checkout",
              "severity": "page", "operation": "POST /pay", "sli_type": "availability"}
    assert set(body) == {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
                         "commonLabels", "commonAnnotations", "externalURL", "alerts"}
    assert body["version"] == "4"
    assert body["truncatedAlerts"] == 0
    assert body["status"] == "firing"
    assert body["receiver"] == "pager"
    assert body["groupLabels"] == {"alertname": "SLOBurnRate", "slo": "checkout availability", "severity": "page"}
    assert body["groupKey"] == '{}:{alertname="SLOBurnRate", slo="checkout availability", severity="page"}'
    assert body["commonLabels"] == labels
    assert body["externalURL"] == PUBLIC
    [item] = body["alerts"]
    assert set(item) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert item["status"] == "firing"
    assert item["labels"] == labels
    assert item["startsAt"] == "2024-05-01T12:00:00Z"
    assert item["endsAt"] == "0001-01-01T00:00:00Z"
    assert item["generatorURL"] == PUBLIC + "/slos/checkout%20availability/"
    assert len(item["fingerprint"]) == 16 and int(item["fingerprint"], 16) >= 0
    assert set(item["annotations"]) == {"summary", "description"}
    assert item["annotations"]["summary"] == alert.summary
    assert body["commonAnnotations"] == item["annotations"]
    description = item["annotations"]["description"]
    assert "Burn rate: 5m 96.0x, 1h 80.0x, 6h no traffic" in description
    assert "Error budget left: 87.5%" in description
    assert "operation POST /pay, span_kind server, requests 1200, errors 96, p95_ms 310.5" in description
    assert PUBLIC + "/traces/4bf92f3577b34da6a3ce929d0e0e4736/" in description
    assert PUBLIC + "/traces/00f067aa0ba902b7a3ce929d0e0e4736/" in description

    Alert.objects.filter(pk=alert.pk).update(state=Alert.RESOLVED, resolved_at=RESOLVED,
                                             burn_rates={"1h": 0.4, "5m": 0.0})
    resolved = Delivery.objects.create(channel=hook, alert=alert, kind="resolved")
    assert notify.deliver(resolved.id) is None
    assert refresh(resolved).status == "sent"
    body = receiver.requests[1]["json"]
    [again] = body["alerts"]
    assert body["status"] == again["status"] == "resolved"
    assert again["labels"] == labels
    assert again["fingerprint"] == item["fingerprint"]  # the same alert, by its labels
    assert again["startsAt"] == "2024-05-01T12:00:00Z"
    assert again["endsAt"] == "2024-05-01T12:47:30.250000Z"
    assert "Burn rate: 5m 0.0x, 1h 0.4x" in again["annotations"]["description"]
    assert body["groupKey"] == '{}:{alertname="SLOBurnRate", slo="checkout availability", severity="page"}'


def test_edge_slo_labels_and_public_url_default(receivers, settings):
    settings.PUBLIC_URL = ""
    settings.BIND, settings.WEB_PORT = "127.0.0.1", 8123
    receiver = receivers()
    slo = SLO.objects.create(name="edge/slo", service="frontend", edge_parent="frontend", edge_child="payments",
                             sli_type=SLO.LATENCY, threshold_ms=300, objective=0.99)
    alert = Alert.objects.create(slo=slo, severity="ticket", started_at=STARTED, burn_rates={"3d": 1.5},
                                 budget_remaining=None, summary="slow", details={})
    delivery = Delivery.objects.create(channel=channel(receiver.url), alert=alert, kind="firing")
    assert notify.deliver(delivery.id) is None
    body = receiver.requests[0]["json"]
    assert body["alerts"][0]["labels"] == {"alertname": "SLOBurnRate", "slo": "edge/slo", "service": "frontend",
                                           "severity": "ticket", "edge": "frontend -> payments",
                                           "sli_type": "latency"}
    assert body["externalURL"] == "http://127.0.0.1:8123"
    assert body["alerts"][0]["generatorURL"] == "http://127.0.0.1:8123/slos/edge%2Fslo/"


def test_slack_payload_escapes_telemetry_and_links_traces(receivers):
    receiver = receivers()
    alert = make_alert(summary="[page] SLO checkout: errors in <GET /a&b> are > 5%")
    slack = channel(receiver.url, type=Channel.SLACK, name="slack")
    delivery = Delivery.objects.create(channel=slack, alert=alert, kind="firing")
    assert notify.deliver(delivery.id) is None
    body = receiver.requests[0]["json"]
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("[FIRING:page] SLO checkout availability: ")
    assert "&lt;GET /a&amp;b&gt; are &gt; 5%" in body["text"]
    assert "<GET" not in json.dumps(body)
    blocks = body["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text",
                                                     "text": "[FIRING:page] SLO checkout availability"}}
    assert blocks[1]["type"] == "section" and blocks[1]["text"]["type"] == "mrkdwn"
    assert "errors in &lt;GET /a&amp;b&gt; are &gt; 5%" in blocks[1]["text"]["text"]
    text = json.dumps(blocks)
    assert "*Burn rate*\\n5m 96.0x, 1h 80.0x, 6h no traffic" in text
    assert "*Error budget left*\\n87.5%" in text
    assert "requests 1200, errors 96" in text
    assert (f"<{PUBLIC}/traces/4bf92f3577b34da6a3ce929d0e0e4736/|4bf92f3577b34da6a3ce929d0e0e4736>" in text)
    assert blocks[-1]["type"] == "context"
    assert f"<{PUBLIC}/slos/checkout%20availability/|SLO checkout availability in Sightline>" in text


def test_email_subject_and_body(receivers):
    alert = make_alert()
    email = channel(type=Channel.EMAIL, name="mail", to=["oncall@example.com", "sre@example.com"])
    firing = Delivery.objects.create(channel=email, alert=alert, kind="firing")
    assert notify.deliver(firing.id) is None
    assert refresh(firing).status == "sent"
    [message] = mail.outbox
    assert message.subject == "[FIRING:page] SLO checkout availability"
    assert message.to == ["oncall@example.com", "sre@example.com"]
    assert message.from_email == "sightline@example.com"
    assert alert.summary in message.body
    assert "Burn rate: 5m 96.0x, 1h 80.0x" in message.body
    assert "Error budget left: 87.5%" in message.body
    assert f"{PUBLIC}/traces/4bf92f3577b34da6a3ce929d0e0e4736/" in message.body
    assert f"{PUBLIC}/slos/checkout%20availability/" in message.body

    Alert.objects.filter(pk=alert.pk).update(state=Alert.RESOLVED, resolved_at=RESOLVED)
    resolved = Delivery.objects.create(channel=email, alert=alert, kind="resolved")
    assert notify.deliver(resolved.id) is None
    assert mail.outbox[1].subject == "[RESOLVED:page] SLO checkout availability"
    assert "Resolved: 2024-05-01T12:47:30.250000Z" in mail.outbox[1].body


def test_email_channel_without_recipients_fails_at_once():
    delivery = Delivery.objects.create(channel=channel(type=Channel.EMAIL, name="nobody"), alert=make_alert(),
                                       kind="firing")
    assert notify.deliver(delivery.id) is None
    delivery = refresh(delivery)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("failed", 1, "the channel has no recipients")
    assert mail.outbox == []


def test_only_http_urls_are_posted_to():
    delivery = Delivery.objects.create(channel=channel("file:///etc/passwd"), alert=make_alert(), kind="firing")
    assert notify.deliver(delivery.id) is None
    assert refresh(delivery).status == "failed"
    assert refresh(delivery).last_error == "the channel has no http(s) URL"


# --- Retries ---------------------------------------------------------------------------------

def test_receiver_down_at_first_then_up_gets_it(receivers):
    port = free_port()
    hook = channel(f"http://127.0.0.1:{port}/hook")
    delivery = Delivery.objects.create(channel=hook, alert=make_alert(), kind="firing")

    assert notify.deliver(delivery.id) == pytest.approx(0.05)
    delivery = refresh(delivery)
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("pending", 1, None)
    assert "refused" in delivery.last_error.lower()
    assert delivery.next_attempt_at > timezone.now() - dt.timedelta(seconds=1)
    time.sleep(0.06)
    assert notify.deliver(delivery.id) == pytest.approx(0.1)  # backoff doubles
    assert refresh(delivery).attempts == 2

    receiver = receivers(port=port)
    waits = run_until_done(delivery.id)
    delivery = refresh(delivery)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 3, "")
    assert len(receiver.requests) == 1
    assert waits and max(waits) <= 0.2 + 0.01


def test_500_then_200(receivers):
    receiver = receivers(statuses=[500, 503, 200])
    delivery = Delivery.objects.create(channel=channel(receiver.url), alert=make_alert(), kind="firing")
    assert notify.deliver(delivery.id) is not None
    delivery = refresh(delivery)
    assert (delivery.status, delivery.response_status, delivery.attempts) == ("pending", 500, 1)
    assert delivery.last_error.startswith("HTTP 500") and "receiver broke" in delivery.last_error
    run_until_done(delivery.id)
    delivery = refresh(delivery)
    assert (delivery.status, delivery.response_status, delivery.attempts) == ("sent", 200, 3)
    assert len(receiver.requests) == 3


def test_timeout_is_a_failure_and_retried(receivers, settings):
    settings.NOTIFY_TIMEOUT_SECONDS = 1
    receiver = receivers(delays=[1.5, 0])
    delivery = Delivery.objects.create(channel=channel(receiver.url), alert=make_alert(), kind="firing")
    started = time.monotonic()
    assert notify.deliver(delivery.id) is not None
    assert time.monotonic() - started < 1.4
    delivery = refresh(delivery)
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.last_error == "timed out after 1 s"
    run_until_done(delivery.id)
    assert refresh(delivery).status == "sent"


def test_gives_up_after_the_attempt_limit(receivers, monkeypatch):
    monkeypatch.setattr(notify, "MAX_ATTEMPTS", 3)
    receiver = receivers(statuses=[502])
    delivery = Delivery.objects.create(channel=channel(receiver.url), alert=make_alert(), kind="firing")
    waits = run_until_done(delivery.id)
    assert waits == [pytest.approx(0.05), pytest.approx(0.1)]
    delivery = refresh(delivery)
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 3, 502)
    assert delivery.next_attempt_at is None
    assert len(receiver.requests) == 3
    assert notify.deliver(delivery.id) is None and len(receiver.requests) == 3


def test_backoff_doubles_up_to_the_cap(monkeypatch):
    monkeypatch.setattr(notify, "BACKOFF_BASE_SECONDS", 1.0)
    monkeypatch.setattr(notify, "BACKOFF_CAP_SECONDS", 300.0)
    assert [notify.backoff(n) for n in range(1, 12)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


# --- Circuit breaker -------------------------------------------------------------------------

def test_circuit_breaker_opens_after_5_failures_postpones_and_closes_on_success(receivers, monkeypatch):
    monkeypatch.setattr(notify, "BACKOFF_CAP_SECONDS", 0.05)
    port = free_port()
    hook = channel(f"http://127.0.0.1:{port}/hook")
    alert = make_alert()
    first = Delivery.objects.create(channel=hook, alert=alert, kind="firing")
    for attempt in range(1, 5):
        assert refresh(hook).open_until is None
        wait = notify.deliver(first.id)
        assert refresh(first).attempts == attempt
        time.sleep(wait)
    assert 0.5 < notify.deliver(first.id) <= 1.0  # the 5th failure opens it: come back when it closes
    assert refresh(first).attempts == 5
    hook = refresh(hook)
    assert hook.consecutive_failures == 5
    assert hook.open_until > timezone.now() + dt.timedelta(seconds=0.5)

    # Open: nothing is attempted, nothing counted, the deliveries wait for open_until.
    second = Delivery.objects.create(channel=hook, alert=alert, kind="firing")
    for delivery in (first, second):
        wait = notify.deliver(delivery.id)
        assert 0.5 < wait <= 1.0
        assert refresh(delivery).next_attempt_at == hook.open_until
        assert refresh(delivery).status == "pending"
    assert (refresh(first).attempts, refresh(second).attempts) == (5, 0)

    # Half-open, still down: one delivery probes, fails, the breaker opens again; the other waits.
    time.sleep(max(0, (hook.open_until - timezone.now()).total_seconds()) + 0.02)
    assert notify.deliver(first.id) is not None
    assert refresh(first).attempts == 6
    hook = refresh(hook)
    assert hook.consecutive_failures == 6 and hook.open_until > timezone.now()
    assert notify.deliver(second.id) > 0.5
    assert refresh(second).attempts == 0

    # Back up: after the open period the probe succeeds, the breaker closes, the rest follow.
    receiver = receivers(port=port)
    time.sleep(max(0, (hook.open_until - timezone.now()).total_seconds()) + 0.02)
    run_until_done(second.id)
    hook = refresh(hook)
    assert (hook.consecutive_failures, hook.open_until) == (0, None)
    run_until_done(first.id)
    assert (refresh(first).status, refresh(first).attempts) == ("sent", 7)
    assert (refresh(second).status, refresh(second).attempts) == ("sent", 1)
    assert len(receiver.requests) == 2


# --- No double sends, no head-of-line blocking ---------------------------------------------------

def test_a_sent_delivery_is_not_sent_again(receivers):
    receiver = receivers()
    delivery = Delivery.objects.create(channel=channel(receiver.url), alert=make_alert(), kind="firing")
    assert notify.deliver(delivery.id) is None
    sent_at = refresh(delivery).sent_at
    for _ in range(3):  # Celery redelivery
        assert notify.deliver(delivery.id) is None
    assert len(receiver.requests) == 1
    assert (refresh(delivery).attempts, refresh(delivery).sent_at) == (1, sent_at)
    assert notify.deliver(987654321) is None  # deleted: nothing to do


def in_thread(function, *args):
    result = {}

    def run():
        try:
            result["value"] = function(*args)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_two_workers_on_one_delivery_send_it_once(receivers):
    receiver = receivers(delays=[0.5])
    delivery = Delivery.objects.create(channel=channel(receiver.url), alert=make_alert(), kind="firing")
    threads = [in_thread(notify.deliver, delivery.id) for _ in range(4)]
    for thread, _ in threads:
        thread.join(10)
    assert len(receiver.requests) == 1
    assert refresh(delivery).status == "sent" and refresh(delivery).attempts == 1
    # The ones that lost the race come back later and then find it sent.
    for thread, result in threads:
        if result["value"] is not None:
            assert notify.deliver(delivery.id) is None
    assert len(receiver.requests) == 1


def test_a_channel_that_is_down_does_not_hold_up_others(receivers, settings):
    settings.NOTIFY_TIMEOUT_SECONDS = 2
    hanging = receivers(delays=[3])
    healthy = receivers()
    alert = make_alert()
    slow = Delivery.objects.create(channel=channel(hanging.url, name="hanging"), alert=alert, kind="firing")
    fast = Delivery.objects.create(channel=channel(healthy.url, name="healthy"), alert=alert, kind="firing")
    refused = Delivery.objects.create(channel=channel(f"http://127.0.0.1:{free_port()}/", name="refused"),
                                      alert=alert, kind="firing")
    thread, result = in_thread(notify.deliver, slow.id)
    time.sleep(0.1)
    started = time.monotonic()
    assert notify.deliver(refused.id) is not None
    assert notify.deliver(fast.id) is None
    assert time.monotonic() - started < 1.0
    assert len(healthy.requests) == 1 and refresh(fast).status == "sent"
    thread.join(10)
    assert result["value"] is not None and refresh(slow).last_error == "timed out after 2 s"


# --- Test button ---------------------------------------------------------------------------------

def test_send_test_to_a_webhook(receivers):
    receiver = receivers()
    hook = channel(receiver.url, name="pager")
    delivery = notify.send_test(hook)
    assert (delivery.kind, delivery.alert, delivery.status, delivery.attempts) == ("test", None, "sent", 1)
    body = receiver.requests[0]["json"]
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "pager"
    labels = body["alerts"][0]["labels"]
    assert labels["test"] == "true" and labels["alertname"] == "SLOBurnRate" and labels["severity"] == "none"
    assert "Test notification" in body["alerts"][0]["annotations"]["summary"]


def test_send_test_to_slack_and_email(receivers):
    receiver = receivers()
    slack = notify.send_test(channel(receiver.url, type=Channel.SLACK, name="slack <room>"))
    assert slack.status == "sent"
    assert receiver.requests[0]["json"]["blocks"][0]["text"]["text"] == \
        "[TEST] Sightline notification channel slack <room>"
    assert "slack &lt;room&gt;" in receiver.requests[0]["json"]["text"]
    email = notify.send_test(channel(type=Channel.EMAIL, name="mail", to=["a@example.com"]))
    assert email.status == "sent"
    assert mail.outbox[0].subject == "[TEST] Sightline notification channel mail"


def test_send_test_to_a_broken_channel_reports_the_error_at_once(receivers):
    receiver = receivers(statuses=[404])
    secret_url = receiver.url + "/T000/B000/XXXXsecretXXXX"
    hook = channel(secret_url, type=Channel.SLACK, name="slack")
    # an open breaker does not stop a test; a failed test is failed at once (no retries)
    Channel.objects.filter(pk=hook.pk).update(consecutive_failures=5,
                                              open_until=timezone.now() + dt.timedelta(minutes=1))
    delivery = notify.send_test(hook)
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 1, 404)
    assert delivery.last_error.startswith("HTTP 404")
    assert "secret" not in delivery.last_error
    assert len(receiver.requests) == 1

    down = notify.send_test(channel(f"http://127.0.0.1:{free_port()}/", name="down"))
    assert down.status == "failed" and "refused" in down.last_error.lower()

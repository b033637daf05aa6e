"""Notification delivery: one Delivery row (an alert firing or resolving, or a test) sent
to one channel.

deliver(delivery_id) is what the worker's `deliver` task runs; it returns the seconds to
wait before it should run again, or None when the delivery is done (sent, or given up).

- webhook: the Prometheus Alertmanager webhook payload (version "4"), one alert per
  notification, so any receiver of Alertmanager webhooks understands it;
- slack: an incoming-webhook message (text + blocks, mrkdwn escaped as Slack requires);
- email: a plain-text mail through Django's e-mail backend (SIGHTLINE_EMAIL_* settings).

A 2xx answer is a success; anything else (refused, timeout after NOTIFY_TIMEOUT_SECONDS,
any other status, redirects included) is a failed attempt, retried with exponential
backoff (BACKOFF_BASE_SECONDS doubling up to BACKOFF_CAP_SECONDS) until MAX_ATTEMPTS,
then the delivery is failed. A bad channel configuration (no URL, no recipients) fails
at once: retrying cannot help.

Circuit breaker per channel: after BREAKER_THRESHOLD consecutive failures the channel is
open for BREAKER_OPEN_SECONDS; deliveries to an open channel are postponed until it closes
(not attempted, not counted as attempts, not lost). When the time is up, one delivery
probes the channel (the others keep waiting); a success closes the breaker, a failure opens
it again.

No double sends: before sending, a worker claims the delivery with a conditional UPDATE
(a lease on next_attempt_at); another worker, or the same task redelivered by Celery, finds
it claimed or already sent and sends nothing. No transaction is held open while sending.
"""

import datetime as dt
import json
import logging
import socket
import urllib.error
import urllib.request
from urllib.parse import quote, urlsplit

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import F
from django.utils import timezone

from dashboards.models import Channel, Delivery
from dashboards.slos import windows

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 300.0
BREAKER_THRESHOLD = 5
BREAKER_OPEN_SECONDS = 60.0
# A task woken this early is treated as due (timers are not exact).
EARLY_SECONDS = 0.05
MAX_ERROR_CHARS = 300

ALERTNAME = "SLOBurnRate"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing
TEST_SLO = "sightline-test"


class ConfigError(Exception):
    """The channel cannot work as configured: fail without retrying."""


# --- Links and formatting --------------------------------------------------------------

def public_url():
    url = (settings.PUBLIC_URL or "").strip().rstrip("/")
    if url:
        return url
    host = settings.BIND
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.WEB_PORT}"


def slo_url(name):
    return f"{public_url()}/slos/{quote(name, safe='')}/"


def trace_url(trace_id):
    return f"{public_url()}/traces/{quote(str(trace_id), safe='')}/"


def rfc3339(moment):
    moment = moment.astimezone(dt.timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def _rate(rate):
    return "no traffic" if rate is None else f"{rate:.1f}x"


def _budget(budget):
    return "unknown (no traffic)" if budget is None else f"{budget * 100:.1f}%"


_ITEM_ORDER = ("operation", "edge", "span_kind", "requests", "calls", "errors", "p95_ms")


def _item(item):
    """One top contributor, its fields in a fixed order (JSONB does not keep key order)."""
    keys = [key for key in _ITEM_ORDER if key in item] + sorted(key for key in item if key not in _ITEM_ORDER)
    return ", ".join(f"{key} {item[key]}" for key in keys if item[key] is not None)


def _window_order(label):
    try:
        return (0, windows.parse_duration(label))
    except ValueError:
        return (1, dt.timedelta(0))


def fingerprint(labels):
    """A stable 16-hex-digit id of a label set (FNV-1a 64 over the sorted pairs), the
    shape Prometheus uses for alert fingerprints."""
    value = 0xcbf29ce484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in str(part).encode() + b"\xff":
                value ^= byte
                value = (value * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


# --- What a notification says ------------------------------------------------------------

class Facts:
    """Everything the three formats say about one delivery."""

    def __init__(self, delivery):
        self.test = delivery.kind == "test" or delivery.alert is None
        self.channel = delivery.channel
        if self.test:
            now = delivery.created_at or timezone.now()
            self.status, self.severity, self.slo_name = "firing", "none", TEST_SLO
            self.labels = {"alertname": ALERTNAME, "slo": TEST_SLO, "service": "sightline", "severity": "none",
                           "sli_type": "availability", "test": "true"}
            self.summary = (f"Test notification from Sightline to the channel {self.channel.name}: "
                            f"no SLO is burning, nothing needs doing.")
            self.started_at, self.resolved_at = now, None
            self.burn_rates, self.budget, self.top, self.traces, self.conditions = {}, None, [], [], []
            self.link = f"{public_url()}/slos/"
            return
        alert = delivery.alert
        slo = alert.slo
        self.status = "resolved" if delivery.kind == "resolved" else "firing"
        self.severity, self.slo_name = alert.severity, slo.name
        self.labels = {"alertname": ALERTNAME, "slo": slo.name, "service": slo.service, "severity": alert.severity}
        if slo.operation:
            self.labels["operation"] = slo.operation
        if slo.edge_parent and slo.edge_child:
            self.labels["edge"] = f"{slo.edge_parent} -> {slo.edge_child}"
        self.labels["sli_type"] = slo.sli_type
        self.summary = alert.summary or f"SLO {slo.name} is burning its error budget ({alert.severity})."
        self.started_at = alert.started_at
        self.resolved_at = alert.resolved_at or (timezone.now() if self.status == "resolved" else None)
        self.burn_rates = alert.burn_rates or {}
        self.budget = alert.budget_remaining
        details = alert.details or {}
        self.top = [item for item in details.get("top") or [] if isinstance(item, dict)]
        self.traces = [str(trace_id) for trace_id in details.get("exemplar_trace_ids") or []]
        self.conditions = details.get("conditions") or []
        self.link = slo_url(slo.name)

    @property
    def title(self):
        if self.test:
            return f"[TEST] Sightline notification channel {self.channel.name}"
        return f"[{self.status.upper()}:{self.severity}] SLO {self.slo_name}"

    def rates_text(self):
        labels = sorted(self.burn_rates, key=_window_order)
        return ", ".join(f"{label} {_rate(self.burn_rates[label])}" for label in labels) or "none"

    def description(self):
        """The plain-text facts: burn rates, budget, top contributors, example traces."""
        if self.test:
            return self.summary
        lines = [f"Burn rate: {self.rates_text()}", f"Error budget left: {_budget(self.budget)}"]
        if self.conditions:
            lines.append("Conditions met: " + "; ".join(
                f"{c.get('severity')} when burn rate > {c.get('burn_rate')} over {c.get('long')} and {c.get('short')}"
                for c in self.conditions if isinstance(c, dict)))
        if self.top:
            lines.append("Top contributors: " + "; ".join(_item(item) for item in self.top))
        if self.traces:
            lines.append("Example traces: " + " ".join(trace_url(trace_id) for trace_id in self.traces))
        lines.append(f"SLO: {self.link}")
        return "\n".join(lines)


def webhook_payload(facts):
    """The Alertmanager webhook payload (version 4) for one alert."""
    annotations = {"summary": facts.summary, "description": facts.description()}
    alert = {
        "status": facts.status,
        "labels": facts.labels,
        "annotations": annotations,
        "startsAt": rfc3339(facts.started_at),
        "endsAt": rfc3339(facts.resolved_at) if facts.status == "resolved" and facts.resolved_at else ZERO_TIME,
        "generatorURL": facts.link,
        "fingerprint": fingerprint(facts.labels),
    }
    group = {"alertname": ALERTNAME, "slo": facts.slo_name, "severity": facts.severity}
    group_key = "{}:{" + ", ".join(f"{name}={json.dumps(value)}" for name, value in group.items()) + "}"
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": facts.status,
        "receiver": facts.channel.name,
        "groupLabels": group,
        "commonLabels": dict(facts.labels),
        "commonAnnotations": dict(annotations),
        "externalURL": public_url(),
        "alerts": [alert],
    }


def slack_escape(text):
    """Slack's mrkdwn needs exactly these three escaped."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_link(url, text):
    return f"<{url.replace('|', '%7C').replace('>', '%3E')}|{slack_escape(text)}>"


def _clip(text, limit):
    return text if len(text) <= limit else text[:limit - 1] + "…"


def slack_payload(facts):
    """An incoming-webhook message: a fallback text and Block Kit blocks."""
    mark = {"firing": ":rotating_light:", "resolved": ":white_check_mark:"}[facts.status]
    if facts.test:
        mark = ":wave:"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(facts.title, 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"{mark} {slack_escape(facts.summary)}", 3000)}},
    ]
    if not facts.test:
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": _clip(f"*Burn rate*\n{slack_escape(facts.rates_text())}", 2000)},
            {"type": "mrkdwn", "text": f"*Error budget left*\n{slack_escape(_budget(facts.budget))}"},
        ]})
        if facts.top:
            text = "*Top contributors*\n" + "\n".join(f"• {slack_escape(_item(item))}" for item in facts.top)
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, 3000)}})
        if facts.traces:
            text = "*Example traces*\n" + "\n".join(_slack_link(trace_url(t), t) for t in facts.traces)
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, 3000)}})
    when = f"started {rfc3339(facts.started_at)}"
    if facts.status == "resolved" and facts.resolved_at:
        when += f", resolved {rfc3339(facts.resolved_at)}"
    link = _slack_link(facts.link, "Open in Sightline" if facts.test else f"SLO {facts.slo_name} in Sightline")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"{link} · {when}"}]})
    return {"text": slack_escape(f"{facts.title}: {facts.summary}"), "blocks": blocks}


def email_message(facts):
    """(subject, plain-text body)."""
    lines = [facts.summary, "", f"Status: {facts.status}", f"Severity: {facts.severity}",
             f"Started: {rfc3339(facts.started_at)}"]
    if facts.status == "resolved" and facts.resolved_at:
        lines.append(f"Resolved: {rfc3339(facts.resolved_at)}")
    if not facts.test:
        lines += ["", facts.description()]
    else:
        lines += ["", f"Sightline: {facts.link}"]
    return facts.title, "\n".join(lines) + "\n"


# --- Sending -------------------------------------------------------------------------------

class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 3xx is an answer like any other non-2xx: a failure


_opener = urllib.request.build_opener(_NoRedirects)


def _check_url(url):
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("the channel has no http(s) URL")


def post_json(url, payload, timeout):
    """POST payload as JSON; (HTTP status or None, error text or None)."""
    _check_url(url)
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "Sightline-notify/1"})
    try:
        with _opener.open(request, timeout=timeout) as response:
            response.read(65536)
            return response.status, None
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(200).decode("utf-8", "replace").strip()
        except Exception:
            body = ""
        text = f"HTTP {exc.code} {exc.reason}".strip()
        return exc.code, f"{text}: {body}" if body else text
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (TimeoutError, socket.timeout)):
            return None, f"timed out after {timeout} s"
        return None, str(exc.reason) or type(exc.reason).__name__
    except (TimeoutError, socket.timeout):
        return None, f"timed out after {timeout} s"
    except Exception as exc:  # connection reset, bad status line, ...
        return None, f"{type(exc).__name__}: {exc}"


def _send(delivery, facts):
    """One attempt: (HTTP status or None, error text or None). ConfigError: cannot work."""
    channel = delivery.channel
    timeout = settings.NOTIFY_TIMEOUT_SECONDS
    if channel.type == Channel.WEBHOOK:
        return post_json(channel.url, webhook_payload(facts), timeout)
    if channel.type == Channel.SLACK:
        return post_json(channel.url, slack_payload(facts), timeout)
    if channel.type == Channel.EMAIL:
        recipients = [address for address in (channel.to or []) if isinstance(address, str) and address.strip()]
        if not recipients:
            raise ConfigError("the channel has no recipients")
        subject, body = email_message(facts)
        try:
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=False)
        except (TimeoutError, socket.timeout):
            return None, f"timed out after {timeout} s"
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return None, None
    raise ConfigError(f"unknown channel type {channel.type!r}")


def _short(text, channel):
    """An error fit for the delivery log: short, without the channel's URL or the SMTP password."""
    text = " ".join(str(text).split())
    for secret in (channel.url, settings.EMAIL_HOST_PASSWORD):
        if secret:
            text = text.replace(secret, "***")
    return text[:MAX_ERROR_CHARS]


# --- Delivery --------------------------------------------------------------------------------

def backoff(attempts):
    """Seconds to wait after the attempts-th failed attempt: 1, 2, 4, ... capped."""
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))


def _lease_seconds():
    # Longer than any one attempt can take (SMTP waits up to the timeout per step).
    return 4 * settings.NOTIFY_TIMEOUT_SECONDS + 30


def _until(moment, now):
    return max(EARLY_SECONDS, (moment - now).total_seconds())


def _claim(delivery, now):
    """Take the delivery for one attempt: True when this worker got it."""
    lease = now + dt.timedelta(seconds=_lease_seconds())
    claimed = Delivery.objects.filter(pk=delivery.pk, status=Delivery.PENDING,
                                      next_attempt_at=delivery.next_attempt_at)
    if delivery.next_attempt_at is None:
        claimed = Delivery.objects.filter(pk=delivery.pk, status=Delivery.PENDING, next_attempt_at__isnull=True)
    if not claimed.update(next_attempt_at=lease):
        return None
    return lease


def _breaker(channel_id, now):
    """None when this delivery may try the channel; else when to come back (the breaker is
    open, or another delivery is probing it)."""
    channel = Channel.objects.only("consecutive_failures", "open_until").get(pk=channel_id)
    if channel.open_until and channel.open_until > now:
        return channel.open_until
    if channel.consecutive_failures < BREAKER_THRESHOLD:
        return None
    # Half-open: the first delivery to get here probes; the rest wait for the verdict.
    probing_until = now + dt.timedelta(seconds=BREAKER_OPEN_SECONDS)
    taken = Channel.objects.filter(pk=channel_id, open_until=channel.open_until)
    if channel.open_until is None:
        taken = Channel.objects.filter(pk=channel_id, open_until__isnull=True)
    if taken.update(open_until=probing_until):
        return None
    return Channel.objects.values_list("open_until", flat=True).get(pk=channel_id) or probing_until


def deliver(delivery_id):
    """Send one delivery if it is due; the seconds to wait before trying again, or None when
    it is done (sent, failed for good, or not found)."""
    return _deliver(delivery_id)


def _deliver(delivery_id, *, force=False, last_try=False):
    now = timezone.now()
    delivery = (Delivery.objects.select_related("channel", "alert__slo").filter(pk=delivery_id).first())
    if delivery is None or delivery.status != Delivery.PENDING:
        return None  # done already: sent or failed (Celery redelivery, a second worker)
    if not force and delivery.next_attempt_at and delivery.next_attempt_at > now + dt.timedelta(seconds=EARLY_SECONDS):
        return _until(delivery.next_attempt_at, now)  # not due yet, or another worker is sending it
    lease = _claim(delivery, now)
    if lease is None:  # another worker claimed it a moment ago
        return _deliver_later(delivery_id, now)
    if not force:
        reopen = _breaker(delivery.channel_id, now)
        if reopen is not None:
            Delivery.objects.filter(pk=delivery_id, status=Delivery.PENDING, next_attempt_at=lease).update(
                next_attempt_at=reopen)
            return _until(reopen, now)

    try:
        facts = Facts(delivery)
        status, error = _send(delivery, facts)
    except ConfigError as exc:
        Delivery.objects.filter(pk=delivery_id, status=Delivery.PENDING).update(
            status=Delivery.FAILED, attempts=F("attempts") + 1, last_error=_short(exc, delivery.channel),
            next_attempt_at=None, response_status=None)
        return None
    except Exception as exc:  # a bug building the message must not loop forever silently
        log.exception("notification %s could not be built", delivery_id)
        status, error = None, f"{type(exc).__name__}: {exc}"
    finished = timezone.now()

    if error is None:
        Delivery.objects.filter(pk=delivery_id, status=Delivery.PENDING).update(
            status=Delivery.SENT, sent_at=finished, attempts=F("attempts") + 1, last_error="",
            response_status=status, next_attempt_at=None)
        Channel.objects.filter(pk=delivery.channel_id).update(consecutive_failures=0, open_until=None)
        return None

    error = _short(error, delivery.channel)
    log.warning("notification %s to channel %s failed (attempt %s): %s", delivery_id, delivery.channel.name,
                delivery.attempts + 1, error)
    Channel.objects.filter(pk=delivery.channel_id).update(consecutive_failures=F("consecutive_failures") + 1)
    Channel.objects.filter(pk=delivery.channel_id, consecutive_failures__gte=BREAKER_THRESHOLD).update(
        open_until=finished + dt.timedelta(seconds=BREAKER_OPEN_SECONDS))
    attempts = delivery.attempts + 1
    give_up = last_try or attempts >= MAX_ATTEMPTS
    wait = None if give_up else backoff(attempts)
    if wait is not None:  # the breaker just opened: no use waking before it closes
        open_until = Channel.objects.values_list("open_until", flat=True).get(pk=delivery.channel_id)
        if open_until and open_until > finished:
            wait = max(wait, (open_until - finished).total_seconds())
    Delivery.objects.filter(pk=delivery_id, status=Delivery.PENDING, next_attempt_at=lease).update(
        status=Delivery.FAILED if give_up else Delivery.PENDING, attempts=attempts, last_error=error,
        response_status=status, next_attempt_at=None if give_up else finished + dt.timedelta(seconds=wait))
    return wait


def _deliver_later(delivery_id, now):
    row = Delivery.objects.filter(pk=delivery_id).values("status", "next_attempt_at").first()
    if row is None or row["status"] != Delivery.PENDING:
        return None
    return _until(row["next_attempt_at"], now) if row["next_attempt_at"] else EARLY_SECONDS


def send_test(channel):
    """Send a test notification to the channel now (the "send a test" button): one attempt,
    whatever the circuit breaker says (a success closes it). Returns the Delivery: sent, or
    failed with last_error."""
    delivery = Delivery.objects.create(channel=channel, alert=None, kind="test")
    _deliver(delivery.id, force=True, last_try=True)
    delivery.refresh_from_db()
    return delivery

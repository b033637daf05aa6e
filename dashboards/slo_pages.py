"""The SLO pages: the SLO list, one SLO (SLI, burn rates and error-budget burn-down charts,
its definition, conditions, channels and alerts), the SLO form, the alert history and the
channels with their delivery log.

Charts read the rollups through dashboards.queries, one series query per chart (never one
query per point): the SLI and burn-rate charts over the page's window, the burn-down over
the SLO window ending where the page's window ends. Like the evaluator
(dashboards.slos.evaluate.counts), they count every environment. Telemetry strings that go
into a figure pass through label(); the templates auto-escape the rest.
"""

import datetime as dt
import math
import re
from urllib.parse import urlsplit

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db.models import Case, IntegerField, Value, When
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from dashboards import queries
from dashboards.models import SLO, Alert, Channel, Delivery
from dashboards.pages import figure, page, stamp
from dashboards.slos import windows
from dashboards.slos.evaluate import series

STATE_BADGES = {"page": "failing", "ticket": "degraded", "ok": "ok"}  # app.css badge colours
STATE_ORDER = {"page": 0, "ticket": 1, "ok": 2}
MAX_FINE_BUCKETS = 20_000  # the burn-rate chart's finest series: bounded whatever the windows
THRESHOLD_DASH = {"page": "dash", "ticket": "dot"}
WINDOW_COLOURS = ["#0b5cad", "#8a5a00", "#7a2ee0", "#1a7f37", "#d9480f", "#4d5560", "#b42318"]


# --- Helpers --------------------------------------------------------------------------------


def slo_url(name, view="slo"):
    """The page of an SLO; "" for a name no route can hold (one made through the API with a /)."""
    try:
        return reverse(view, kwargs={"name": name})
    except NoReverseMatch:
        return ""


def _get_slo(name):
    try:
        return SLO.objects.prefetch_related("channels").get(name=name)
    except SLO.DoesNotExist:
        raise Http404("No such SLO") from None


def target(slo):
    """What the SLI reads, in words."""
    if slo.edge_parent and slo.edge_child:
        return f"calls {slo.edge_parent} → {slo.edge_child}"
    if slo.operation:
        return f"{slo.service} · {slo.operation}"
    return f"{slo.service} (requests entering it)"


def sli_text(slo):
    if slo.sli_type == SLO.LATENCY:
        threshold = "?" if slo.threshold_ms is None else f"{slo.threshold_ms:g}"
        return f"latency: share of requests faster than {threshold} ms"
    return "availability: share of requests without error"


def percent(value, digits=3):
    return "–" if value is None else f"{value * 100:.{digits}f} %".replace("-", "−")


def _window_key(text):
    try:
        return windows.parse_duration(text)
    except ValueError:
        return dt.timedelta.max


def rates_list(rates):
    """[(window label, "14.4×" or "–")] ordered by window length."""
    return [(key, "–" if rate is None else f"{rate:.2f}×")
            for key, rate in sorted((rates or {}).items(), key=lambda item: _window_key(item[0]))]


def effective_conditions(slo):
    """(conditions as dicts, whether they are the defaults, error text or "")."""
    slo_window = dt.timedelta(days=slo.window_days)
    try:
        conditions = windows.conditions_from(slo.conditions, slo_window)
        error = ""
    except ValueError as exc:  # stored through some other path: show it, fall back on the defaults
        conditions, error = windows.default_conditions(slo_window), str(exc)
    dicts = []
    for condition in conditions:
        item = condition.as_dict()
        item["spent"] = f"{condition.burn_rate * (condition.long / slo_window) * 100:.3g} %"
        dicts.append(item)
    return dicts, not slo.conditions or bool(error), error, conditions


def row(slo):
    return {"slo": slo, "url": slo_url(slo.name), "target": target(slo), "badge": STATE_BADGES.get(slo.state, "ok"),
            "objective": f"{slo.objective * 100:g} %", "sli": percent(slo.sli),
            "budget": percent(slo.budget_remaining, 1),
            "budget_meter": None if slo.budget_remaining is None else max(0.0, min(1.0, slo.budget_remaining)),
            "rates": rates_list(slo.burn_rates)}


def alert_row(alert):
    details = alert.details or {}
    return {"alert": alert, "slo_url": slo_url(alert.slo.name), "badge": STATE_BADGES.get(alert.severity, "ok"),
            "rates": rates_list(alert.burn_rates), "budget": percent(alert.budget_remaining, 1),
            "traces": [str(t) for t in details.get("exemplar_trace_ids") or [] if t],
            "conditions": details.get("conditions") or []}


def breaker(channel, now):
    if channel.open_until and channel.open_until > now:
        return "open", f"resting until {channel.open_until:%Y-%m-%d %H:%M:%S} UTC after " \
                       f"{channel.consecutive_failures} failures"
    if channel.consecutive_failures:
        return "closed", f"{channel.consecutive_failures} failure(s) in a row"
    return "closed", ""


def destination(channel):
    """Where a channel sends, without secrets: webhook paths (Slack's hold the token) are cut."""
    if channel.type == Channel.EMAIL:
        return ", ".join(channel.to or [])
    if not channel.url:
        return ""
    parts = urlsplit(channel.url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.path not in ("", "/") else f"{parts.scheme}://{parts.netloc}"


# --- The rollup series of an SLO ----------------------------------------------------------------


def _minutes(delta):
    return max(1, int(delta.total_seconds() // 60))


def sli_figure(slo, buckets, points):
    x = [stamp(b) for b in buckets]
    y = []
    for bucket in buckets:
        bad, total = points.get(bucket, (0, 0))
        y.append(None if not total else round((1 - bad / total) * 100, 4))
    data = [{"type": "scatter", "mode": "lines+markers", "name": "SLI", "x": x, "y": y, "connectgaps": False,
             "marker": {"size": 4}, "line": {"color": "#0b5cad"}, "meta": "sli"},
            {"type": "scatter", "mode": "lines", "name": f"objective {slo.objective * 100:g} %",
             "x": [x[0], x[-1]] if x else [], "y": [slo.objective * 100] * (2 if x else 0),
             "line": {"dash": "dash", "color": "#b42318"}, "meta": "objective"}]
    return figure(data, {"xaxis": {"type": "date"}, "yaxis": {"title": {"text": "% good"}, "ticksuffix": " %"}})


def burn_figure(slo, conditions, start, end, step):
    """Burn rate over each alert window, sampled at the end of each page bucket, from one
    series at the finest resolution the windows need (bounded), with prefix sums."""
    alert_windows = windows.windows_of(conditions)
    longest = max(alert_windows)
    fine_minutes = math.gcd(*[_minutes(w) for w in alert_windows], _minutes(step))
    total_minutes = _minutes(end - start + longest)
    fine_minutes = max(fine_minutes, math.ceil(total_minutes / MAX_FINE_BUCKETS))
    fine = dt.timedelta(minutes=fine_minutes)
    first = start - longest
    points = series(slo, first, end, fine)
    fine_buckets = queries.buckets(first, end, fine)
    origin = fine_buckets[0]
    bad_sum, total_sum = [0.0], [0]
    for bucket in fine_buckets:
        bad, total = points.get(bucket, (0, 0))
        bad_sum.append(bad_sum[-1] + bad)
        total_sum.append(total_sum[-1] + total)

    def index(moment):  # fine buckets starting before moment
        return max(0, min(len(fine_buckets), math.ceil((moment - origin) / fine)))

    samples = [min(b + step, end) for b in queries.buckets(start, end, step)]
    x = [stamp(t) for t in samples]
    data = []
    for number, alert_window in enumerate(alert_windows):
        y = []
        for t in samples:
            low, high = index(t - alert_window), index(t)
            rate = windows.burn_rate(bad_sum[high] - bad_sum[low], total_sum[high] - total_sum[low], slo.objective)
            y.append(None if rate is None else round(rate, 4))
        data.append({"type": "scatter", "mode": "lines", "name": f"burn rate over {windows.format_duration(alert_window)}",
                     "x": x, "y": y, "connectgaps": False, "meta": "window",
                     "line": {"color": WINDOW_COLOURS[number % len(WINDOW_COLOURS)]}})
    for condition in conditions:
        text = (f"{condition.severity} threshold {condition.burn_rate:g}× "
                f"({windows.format_duration(condition.long)} and {windows.format_duration(condition.short)})")
        data.append({"type": "scatter", "mode": "lines", "name": text, "x": [x[0], x[-1]] if x else [],
                     "y": [condition.burn_rate] * (2 if x else 0), "meta": "threshold",
                     "line": {"dash": THRESHOLD_DASH.get(condition.severity, "dash"), "width": 1,
                              "color": "#b42318" if condition.severity == "page" else "#8a5a00"}})
    resolution = windows.format_duration(fine)
    layout = {"xaxis": {"type": "date"}, "yaxis": {"title": {"text": "burn rate (×)"}, "rangemode": "tozero"},
              "legend": {"orientation": "h", "font": {"size": 11}}}
    return figure(data, layout, height=420), resolution


def burndown_figure(slo, end):
    """Budget remaining over the SLO window ending at `end`: each bad request spends its share
    of the budget, which is (1 − objective) × the window's requests; the even-spend line is
    where a budget spent at burn rate 1 would be."""
    slo_window = dt.timedelta(days=slo.window_days)
    start = end - slo_window
    step = queries.choose_step(start, end)
    points = series(slo, start, end, step)
    buckets = queries.buckets(start, end, step)
    total_all = sum(points.get(b, (0, 0))[1] for b in buckets)
    bad_all = sum(points.get(b, (0, 0))[0] for b in buckets)
    allowed = (1 - slo.objective) * total_all
    x, y, even = [], [], []
    spent = 0.0
    for bucket in buckets:
        moment = min(bucket + step, end)
        spent += points.get(bucket, (0, 0))[0]
        x.append(stamp(moment))
        y.append(round((1 - spent / allowed) * 100, 3) if allowed else None)
        even.append(round((1 - max(0.0, (moment - start) / slo_window)) * 100, 3))
    data = [{"type": "scatter", "mode": "lines", "name": "budget remaining", "x": x, "y": y, "fill": "tozeroy",
             "line": {"color": "#0b5cad"}, "meta": "budget"},
            {"type": "scatter", "mode": "lines", "name": "spent evenly", "x": x, "y": even,
             "line": {"dash": "dot", "color": "#4d5560"}, "meta": "even"}]
    fig = figure(data, {"xaxis": {"type": "date"}, "yaxis": {"title": {"text": "% of the error budget"},
                                                              "ticksuffix": " %"}})
    remaining = None if not total_all else windows.budget_remaining(bad_all, total_all, slo.objective)
    return fig, {"start": start, "end": end, "step": windows.format_duration(step), "requests": total_all,
                 "bad": bad_all, "remaining": percent(remaining, 1)}


# --- Pages ----------------------------------------------------------------------------------


@page("dashboards/slos.html")
def slo_list(request, window):
    slos = sorted(SLO.objects.all(), key=lambda slo: (STATE_ORDER.get(slo.state, 3), slo.name))
    firing = [alert_row(a) for a in Alert.objects.filter(state=Alert.FIRING).select_related("slo")
              .order_by(Case(When(severity="page", then=Value(0)), default=Value(1), output_field=IntegerField()),
                        "-started_at")]
    return {"rows": [row(slo) for slo in slos], "firing": firing}


@page("dashboards/slo.html")
def slo_detail(request, window, name):
    slo = _get_slo(name)
    as_dicts, defaults, error, conditions = effective_conditions(slo)
    step = window.step
    buckets = queries.buckets(window.start, window.end, step)
    sli = sli_figure(slo, buckets, series(slo, window.start, window.end, step))
    burn, resolution = burn_figure(slo, conditions, window.start, window.end, step)
    burndown, budget = burndown_figure(slo, window.end)
    alerts = [alert_row(a) for a in slo.alerts.select_related("slo").order_by(
        Case(When(state=Alert.FIRING, then=Value(0)), default=Value(1), output_field=IntegerField()), "-started_at")[:100]]
    return {"slo": slo, "row": row(slo), "target": target(slo), "sli_text": sli_text(slo),
            "conditions": as_dicts, "defaults": defaults, "conditions_error": error,
            "channels": list(slo.channels.all()), "alerts": alerts, "charts": {"sli": sli, "burn": burn,
                                                                              "burndown": burndown},
            "step": windows.format_duration(step), "resolution": resolution, "budget": budget,
            "edit_url": slo_url(slo.name, "slo-edit"), "delete_url": slo_url(slo.name, "slo-delete"),
            "window": window}


# --- The SLO form ---------------------------------------------------------------------------

_CONDITION_LINE = re.compile(r"^(page|ticket)\s+(\S+)\s+(\S+)\s+(\S+)$")
_NAME = re.compile(r"^[^/\s][^/]*$")


def conditions_text(stored):
    return "\n".join(f"{c.get('severity')} {c.get('long')} {c.get('short')} {c.get('burn_rate'):g}"
                     if isinstance(c.get("burn_rate"), (int, float)) else
                     f"{c.get('severity')} {c.get('long')} {c.get('short')} {c.get('burn_rate')}"
                     for c in stored or [] if isinstance(c, dict))


def default_lines(window_days):
    return [f"{c['severity']} {c['long']} {c['short']} {c['burn_rate']:g}"
            for c in (c.as_dict() for c in windows.default_conditions(dt.timedelta(days=window_days)))]


def parse_objective(text):
    """"99.9 %", "99.9" -> 0.999 (a percentage: with % or above 1); "0.999" -> 0.999 (a ratio)."""
    raw = str(text).strip().replace(",", ".")
    is_percent = raw.endswith("%")
    raw = raw.rstrip("%").strip()
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError("Write the objective as a percentage (99.9 or 99.9 %) or a ratio (0.999).") from None
    if not math.isfinite(value):
        raise ValidationError("Write the objective as a percentage (99.9 or 99.9 %) or a ratio (0.999).")
    if value == 1 and not is_percent:
        raise ValidationError("1 is ambiguous: write 1 % or a ratio such as 0.99.")
    if is_percent or value > 1:
        value /= 100
    if not 0 < value < 1:
        raise ValidationError("The objective must be above 0 % and below 100 % (100 % leaves no error budget).")
    return value


class SLOForm(forms.ModelForm):
    objective_text = forms.CharField(
        label="Objective", max_length=20,
        help_text="A percentage (99.9 or 99.9 %) or a ratio (0.999): the share of good requests to reach.")
    window = forms.CharField(label="SLO window", max_length=10, initial="30d",
                             help_text="Rolling window in whole days: 30d, 28d, 4w, 7d.")
    conditions_text = forms.CharField(
        label="Alert conditions", required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 40}),
        help_text="One per line: severity (page or ticket), long window, short window, burn rate — "
                  "e.g. \"page 1h 5m 14.4\". An alert fires when the burn rate exceeds the threshold over "
                  "both windows. Leave empty for the defaults.")

    class Meta:
        model = SLO
        fields = ["name", "description", "service", "operation", "edge_parent", "edge_child", "sli_type",
                  "threshold_ms", "channels"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2, "cols": 60}),
                   "service": forms.TextInput(), "operation": forms.TextInput(),
                   "edge_parent": forms.TextInput(), "edge_child": forms.TextInput(),
                   "channels": forms.CheckboxSelectMultiple()}
        labels = {"threshold_ms": "Latency threshold (ms)", "sli_type": "SLI type", "edge_parent": "Edge: caller",
                  "edge_child": "Edge: callee"}
        help_texts = {"service": "The service whose requests (entering it) are counted.",
                      "operation": "Optional: only this operation of the service.",
                      "edge_parent": "Optional, with the callee: count the calls over one edge of the service map "
                                     "instead (the service may then stay empty).",
                      "threshold_ms": "Latency SLIs only: a request is good when faster than this.",
                      "channels": "Where its alerts are sent."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["service"].required = False
        self.fields["channels"].required = False
        instance = self.instance
        if instance.pk:
            self.initial.setdefault("objective_text", f"{instance.objective * 100:g}")
            self.initial.setdefault("window", f"{instance.window_days}d")
            self.initial.setdefault("conditions_text", conditions_text(instance.conditions))
        else:
            self.initial.setdefault("objective_text", "99.9")
        self.order_fields(["name", "description", "service", "operation", "edge_parent", "edge_child", "sli_type",
                           "threshold_ms", "objective_text", "window", "conditions_text", "channels"])

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not _NAME.match(name) or name in ("new", ".", ".."):
            raise ValidationError("A name may not contain / nor start with a space, and may not be \"new\", \".\" or \"..\".")
        return name

    def clean_objective_text(self):
        return parse_objective(self.cleaned_data["objective_text"])

    def clean_window(self):
        try:
            delta = windows.parse_duration(self.cleaned_data["window"])
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        if delta % dt.timedelta(days=1) or not 1 <= delta.days <= 365:
            raise ValidationError("The SLO window is whole days, from 1d to 365d.")
        return delta.days

    def clean_conditions_text(self):
        result = []
        for number, line in enumerate(self.cleaned_data["conditions_text"].splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            match = _CONDITION_LINE.match(line)
            if not match:
                raise ValidationError(f"Line {number}: write severity long short burn-rate, e.g. \"page 1h 5m 14.4\".")
            severity, long, short, rate = match.groups()
            try:
                rate = float(rate)
            except ValueError:
                raise ValidationError(f"Line {number}: the burn rate must be a number.") from None
            result.append({"severity": severity, "long": long, "short": short, "burn_rate": rate})
        try:
            windows.conditions_from(result, dt.timedelta(days=30))
        except ValueError as exc:  # "condition 0: ..." -> "line 1: ..."
            message = re.sub(r"condition (\d+)", lambda m: f"line {int(m.group(1)) + 1}", str(exc))
            raise ValidationError(message[:1].upper() + message[1:] + ".") from None
        return [windows.conditions_from([item], dt.timedelta(days=30))[0].as_dict() for item in result]

    def clean(self):
        data = super().clean()
        service = (data.get("service") or "").strip()
        operation = (data.get("operation") or "").strip() or None
        parent = (data.get("edge_parent") or "").strip() or None
        child = (data.get("edge_child") or "").strip() or None
        if bool(parent) != bool(child):
            self.add_error("edge_child" if parent else "edge_parent", "An edge needs both its caller and its callee.")
        elif parent and operation:
            self.add_error("operation", "An SLO reads either a service (or one of its operations) or an edge, not both.")
        if not service and not parent:
            self.add_error("service", "Name the service (or an edge).")
        data["service"] = service or parent or ""
        data["operation"], data["edge_parent"], data["edge_child"] = operation, parent, child
        if data.get("sli_type") == SLO.LATENCY:
            threshold = data.get("threshold_ms")
            if threshold is None:
                self.add_error("threshold_ms", "A latency SLI needs its threshold in milliseconds.")
            elif not 0 < threshold < 1e9:
                self.add_error("threshold_ms", "The threshold must be positive.")
        else:
            data["threshold_ms"] = None
        return data

    def save(self, commit=True):
        slo = super().save(commit=False)
        slo.objective = self.cleaned_data["objective_text"]
        slo.window_days = self.cleaned_data["window"]
        slo.conditions = self.cleaned_data["conditions_text"]
        if commit:
            slo.save()
            self.save_m2m()
        return slo


def _form_context(form, slo=None):
    days = slo.window_days if slo else 30
    cleaned = getattr(form, "cleaned_data", None) or {}
    if isinstance(cleaned.get("window"), int):
        days = cleaned["window"]
    return {"form": form, "slo": slo, "default_lines": default_lines(days), "default_days": days,
            "cancel_url": slo_url(slo.name) if slo else reverse("slos")}


@page("dashboards/slo_form.html")
def slo_new(request, window):
    form = SLOForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        slo = form.save()
        messages.success(request, f"SLO {slo.name} created; it is evaluated within a minute.")
        return redirect(slo_url(slo.name) or reverse("slos"))
    return _form_context(form)


@page("dashboards/slo_form.html")
def slo_edit(request, window, name):
    slo = _get_slo(name)
    form = SLOForm(request.POST or None, instance=slo)
    if request.method == "POST" and form.is_valid():
        slo = form.save()
        messages.success(request, f"SLO {slo.name} saved.")
        return redirect(slo_url(slo.name) or reverse("slos"))
    return _form_context(form, _get_slo(name))


@page("dashboards/slo_form.html")
def slo_delete(request, window, name):
    """GET: the confirmation; POST: delete (its alerts and their deliveries go with it)."""
    slo = _get_slo(name)
    if request.method == "POST":
        slo.delete()
        messages.success(request, f"SLO {name} deleted.")
        return redirect("slos")
    return {"deleting": True, "slo": slo, "alert_count": slo.alerts.count(), "cancel_url": slo_url(slo.name)}


# --- Alerts and channels -------------------------------------------------------------------

ALERT_LIMIT = 200
DELIVERY_LIMIT = 100


@page("dashboards/alerts.html")
def alert_list(request, window):
    alerts = (Alert.objects.select_related("slo")
              .order_by(Case(When(state=Alert.FIRING, then=Value(0)), default=Value(1), output_field=IntegerField()),
                        "-started_at")[:ALERT_LIMIT])
    return {"alerts": [alert_row(a) for a in alerts], "limit": ALERT_LIMIT,
            "firing_count": Alert.objects.filter(state=Alert.FIRING).count()}


class ChannelForm(forms.ModelForm):
    url = forms.URLField(label="URL", required=False, max_length=2000, assume_scheme="https",
                         help_text="Webhook and Slack channels: where to POST (Slack: the incoming-webhook URL).")
    to_text = forms.CharField(label="E-mail addresses", required=False, max_length=2000,
                              help_text="E-mail channels: addresses separated by commas.")

    class Meta:
        model = Channel
        fields = ["name", "type", "url"]

    def clean_to_text(self):
        addresses = [a.strip() for a in re.split(r"[,;\s]+", self.cleaned_data["to_text"]) if a.strip()]
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError(f"{address} is not an e-mail address.") from None
        return addresses

    def clean(self):
        data = super().clean()
        kind = data.get("type")
        if kind in (Channel.WEBHOOK, Channel.SLACK) and not data.get("url") and "url" not in self.errors:
            self.add_error("url", "This channel type needs a URL.")
        if kind == Channel.EMAIL and not data.get("to_text") and "to_text" not in self.errors:
            self.add_error("to_text", "An e-mail channel needs at least one address.")
        return data

    def save(self, commit=True):
        channel = super().save(commit=False)
        channel.to = self.cleaned_data["to_text"] if channel.type == Channel.EMAIL else []
        if commit:
            channel.save()
        return channel


@page("dashboards/channels.html")
def channel_list(request, window):
    form = ChannelForm(request.POST or None, prefix="new")
    if request.method == "POST" and form.is_valid():
        channel = form.save()
        messages.success(request, f"Channel {channel.name} added.")
        return redirect("channels")
    now = timezone.now()
    channels = []
    for channel in Channel.objects.all():
        state, detail = breaker(channel, now)
        channels.append({"channel": channel, "breaker": state, "breaker_detail": detail,
                         "destination": destination(channel), "slo_count": channel.slos.count()})
    deliveries = list(Delivery.objects.select_related("channel", "alert__slo")[:DELIVERY_LIMIT])
    return {"channels": channels, "deliveries": deliveries, "form": form, "limit": DELIVERY_LIMIT}


@page("dashboards/channels.html")
def channel_test(request, window, channel_id):
    """POST: send a test notification through the channel now (dashboards.slos.notify)."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    try:
        channel = Channel.objects.get(pk=channel_id)
    except Channel.DoesNotExist:
        raise Http404("No such channel") from None
    try:
        from dashboards.slos import notify

        send_test = notify.send_test
    except (ImportError, AttributeError):
        messages.error(request, "Test notifications are not available yet (dashboards.slos.notify.send_test "
                                "is missing); nothing was sent.")
        return redirect("channels")
    try:
        delivery = send_test(channel)
    except Exception as exc:  # the page reports it; the delivery log has the details when one was made
        messages.error(request, f"The test to {channel.name} could not be sent: {exc}")
        return redirect("channels")
    status = getattr(delivery, "status", "")
    if status == Delivery.SENT:
        messages.success(request, f"Test sent to {channel.name}.")
    elif status == Delivery.FAILED:
        messages.error(request, f"The test to {channel.name} failed: {getattr(delivery, 'last_error', '')}")
    else:
        messages.info(request, f"Test to {channel.name} queued ({status or 'pending'}); see the delivery log.")
    return redirect("channels")

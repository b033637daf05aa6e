"""The SLO REST API: /api/v1/channels, /api/v1/slos, /api/v1/alerts.

Bodies are JSON. An SLO is written as

    {"name": "checkout-availability", "description": "", "service": "checkout",
     "operation": null, "edge": null | {"parent": "checkout", "child": "payments"},
     "sli": {"type": "availability"} | {"type": "latency", "threshold_ms": 300},
     "objective": 0.999, "window": "30d", "channels": ["ops-webhook"],
     "conditions": [{"severity": "page", "long": "1h", "short": "5m", "burn_rate": 14.4}, ...]}

and read back in the same shape plus what the last evaluation found: sli.value,
budget_remaining, burn_rates (window label -> burn rate, null without traffic), state and
evaluated_at, and effective_conditions (the defaults when conditions is empty). The
read-only keys are ignored on writes, so GET -> edit -> PUT works.

The validation (definition_from, channel_from) and the writes (save_slo, save_channel)
are shared with the OpenSLO importer (dashboards.slos.openslo); they raise Invalid(field,
message), which the views turn into a 400 naming the field.
"""

import datetime as dt
import json
import math
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.http import HttpResponse

from dashboards.api import params
from dashboards.api.http import ApiError, BadParameter, NotFound, api_view, json_response
from dashboards.models import SLO, Alert, Channel
from dashboards.slos import windows

MAX_NAME = 100
MAX_SERVICE = 1024
MAX_DESCRIPTION = 10_000
MAX_WINDOW_DAYS = 365
SLO_KEYS = {"name", "description", "service", "operation", "edge", "sli", "objective", "window", "channels",
            "conditions"}
SLO_READ_ONLY = {"budget_remaining", "burn_rates", "state", "evaluated_at", "effective_conditions", "created_at",
                 "updated_at"}
CHANNEL_KEYS = {"name", "type", "url", "to"}
CHANNEL_READ_ONLY = {"created_at"}
CHANNEL_TYPES = (Channel.WEBHOOK, Channel.SLACK, Channel.EMAIL)


class Invalid(ValueError):
    """A bad field of a definition: field is its dotted name (sli.threshold_ms, edge.parent)."""

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class Conflict(ApiError):
    status = 409


# ---------------------------------------------------------------- validation


def _name(value, field="name"):
    if not isinstance(value, str) or not value.strip():
        raise Invalid(field, "required: a non-empty string")
    if len(value) > MAX_NAME:
        raise Invalid(field, f"longer than {MAX_NAME} characters")
    if value != value.strip():
        raise Invalid(field, "must not start or end with white space")
    if "/" in value or any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise Invalid(field, "must not contain '/' or control characters")
    return value


def _text(value, field, required=True, max_length=MAX_SERVICE):
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise Invalid(field, "required: a non-empty string" if required else "must be null or a non-empty string")
    if len(value) > max_length:
        raise Invalid(field, f"longer than {max_length} characters")
    if "\x00" in value:
        raise Invalid(field, "contains a NUL character")
    return value


def _number(value, field):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Invalid(field, "must be a number")
    return float(value)


def _unknown_keys(data, allowed, read_only=frozenset(), prefix=""):
    for key in data:
        if key not in allowed and key not in read_only:
            raise Invalid(f"{prefix}{key}", f"unknown field; expected {', '.join(sorted(allowed))}")


def window_days(value, field="window"):
    """'30d', '4w', '720h' -> whole days (1..365)."""
    if not isinstance(value, str):
        raise Invalid(field, "must be a duration of whole days like 7d, 28d or 30d")
    try:
        delta = windows.parse_duration(value)
    except ValueError as exc:
        raise Invalid(field, str(exc)) from None
    if delta % dt.timedelta(days=1) or not 1 <= delta.days <= MAX_WINDOW_DAYS:
        raise Invalid(field, f"must be whole days between 1d and {MAX_WINDOW_DAYS}d, like 7d, 28d or 30d")
    return delta.days


def conditions_of(value, days, field="conditions"):
    """The stored form of burn-rate conditions ([] = the defaults), canonical labels."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(field, "must be a list of {severity, long, short, burn_rate} (or empty for the defaults)")
    for index, item in enumerate(value):
        if isinstance(item, dict):
            _unknown_keys(item, {"severity", "long", "short", "burn_rate"}, prefix=f"{field}[{index}].")
            if isinstance(item.get("burn_rate"), bool):
                raise Invalid(f"{field}[{index}].burn_rate", "must be a number")
    try:
        parsed = windows.conditions_from(value, dt.timedelta(days=days)) if value else []
    except ValueError as exc:
        raise Invalid(field, str(exc)) from None
    return [condition.as_dict() for condition in parsed]


def definition_from(data, known_channels=None):
    """Validate a REST-shaped SLO definition -> (model fields, channel names). known_channels:
    channel names that may be referred to (default: the stored channels)."""
    if not isinstance(data, dict):
        raise Invalid("body", "must be a JSON object")
    _unknown_keys(data, SLO_KEYS, SLO_READ_ONLY)
    fields = {"name": _name(data.get("name"))}
    description = data.get("description")
    if description is None:
        description = ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION or "\x00" in description:
        raise Invalid("description", f"must be a string of at most {MAX_DESCRIPTION} characters")
    fields["description"] = description

    edge = data.get("edge")
    if edge is None:
        fields["edge_parent"] = fields["edge_child"] = None
    elif isinstance(edge, dict):
        _unknown_keys(edge, {"parent", "child"}, prefix="edge.")
        fields["edge_parent"] = _text(edge.get("parent"), "edge.parent")
        fields["edge_child"] = _text(edge.get("child"), "edge.child")
    else:
        raise Invalid("edge", "must be null or {\"parent\": service, \"child\": service}")
    service = data.get("service")
    if service is None and fields["edge_parent"]:
        service = fields["edge_parent"]  # an edge's SLO belongs to its caller unless told otherwise
    fields["service"] = _text(service, "service")
    fields["operation"] = _text(data.get("operation"), "operation", required=False)
    if fields["operation"] is not None and fields["edge_parent"]:
        raise Invalid("operation", "an SLO is on a service, one of its operations, or an edge: not both "
                                   "operation and edge")

    sli = data.get("sli")
    if not isinstance(sli, dict):
        raise Invalid("sli", "required: {\"type\": \"availability\"} or {\"type\": \"latency\", \"threshold_ms\": 300}")
    _unknown_keys(sli, {"type", "threshold_ms"}, {"value"}, prefix="sli.")
    if sli.get("type") not in (SLO.AVAILABILITY, SLO.LATENCY):
        raise Invalid("sli.type", "must be availability or latency")
    fields["sli_type"] = sli["type"]
    threshold = sli.get("threshold_ms")
    if sli["type"] == SLO.LATENCY:
        if threshold is None:
            raise Invalid("sli.threshold_ms", "required for a latency SLI: milliseconds, > 0")
        threshold = _number(threshold, "sli.threshold_ms")
        if not 0 < threshold <= 86_400_000:
            raise Invalid("sli.threshold_ms", "must be > 0 (milliseconds, at most a day)")
        fields["threshold_ms"] = threshold
    elif threshold is not None:
        raise Invalid("sli.threshold_ms", "only for a latency SLI")
    else:
        fields["threshold_ms"] = None

    if "objective" not in data:
        raise Invalid("objective", "required: a number > 0 and < 1, e.g. 0.999")
    objective = _number(data["objective"], "objective")
    if not 0 < objective < 1:
        raise Invalid("objective", "must be > 0 and < 1, e.g. 0.999")
    fields["objective"] = objective
    fields["window_days"] = window_days(data.get("window", "30d"))
    fields["conditions"] = conditions_of(data.get("conditions"), fields["window_days"])

    channels = data.get("channels")
    if channels is None:
        channels = []
    if not isinstance(channels, list) or not all(isinstance(name, str) for name in channels):
        raise Invalid("channels", "must be a list of channel names")
    if len(set(channels)) != len(channels):
        raise Invalid("channels", "names a channel twice")
    if known_channels is None:
        known_channels = set(Channel.objects.filter(name__in=channels).values_list("name", flat=True))
    missing = [name for name in channels if name not in known_channels]
    if missing:
        raise Invalid("channels", f"no channel named {', '.join(repr(name) for name in missing)}")
    return fields, channels


def channel_from(data):
    """Validate a channel definition -> model fields."""
    if not isinstance(data, dict):
        raise Invalid("body", "must be a JSON object")
    _unknown_keys(data, CHANNEL_KEYS, CHANNEL_READ_ONLY)
    fields = {"name": _name(data.get("name"))}
    kind = data.get("type")
    if kind not in CHANNEL_TYPES:
        raise Invalid("type", f"must be one of {', '.join(CHANNEL_TYPES)}")
    fields["type"] = kind
    url, to = data.get("url"), data.get("to")
    if kind == Channel.EMAIL:
        if url not in (None, ""):
            raise Invalid("url", "an email channel has no url: give 'to'")
        if not isinstance(to, list) or not to:
            raise Invalid("to", "required for email: a list of e-mail addresses")
        for index, address in enumerate(to):
            try:
                if not isinstance(address, str):
                    raise ValidationError("not a string")
                validate_email(address)
            except ValidationError:
                raise Invalid(f"to[{index}]", "is not an e-mail address") from None
        fields.update(url="", to=list(to))
    else:
        if to not in (None, []):
            raise Invalid("to", f"only for email channels; a {kind} channel has a url")
        if not isinstance(url, str) or not url:
            raise Invalid("url", f"required for a {kind} channel: an http or https URL")
        if len(url) > 2000:
            raise Invalid("url", "longer than 2000 characters")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
            raise Invalid("url", "must be an http or https URL")
        fields.update(url=url, to=[])
    return fields


# ---------------------------------------------------------------- writes


def save_channel(fields, existing=None):
    channel = existing or Channel()
    for key, value in fields.items():
        setattr(channel, key, value)
    channel.save()
    return channel


def save_slo(fields, channel_names, existing=None):
    """Create or replace an SLO's definition (the evaluation fields are kept)."""
    slo = existing or SLO()
    for key, value in fields.items():
        setattr(slo, key, value)
    slo.save()
    slo.channels.set(Channel.objects.filter(name__in=channel_names))
    return slo


def slo_definition(slo):
    """The REST definition of a stored SLO (no evaluation fields): what POST takes."""
    edge = {"parent": slo.edge_parent, "child": slo.edge_child} if slo.edge_parent and slo.edge_child else None
    return {"name": slo.name, "description": slo.description, "service": slo.service,
            "operation": slo.operation or None, "edge": edge,
            "sli": {"type": slo.sli_type, "threshold_ms": slo.threshold_ms if slo.sli_type == SLO.LATENCY else None},
            "objective": slo.objective, "window": f"{slo.window_days}d",
            "channels": sorted(channel.name for channel in slo.channels.all()),
            "conditions": list(slo.conditions or [])}


# ---------------------------------------------------------------- out


def slo_json(slo):
    data = slo_definition(slo)
    data["sli"]["value"] = slo.sli
    try:
        effective = [c.as_dict() for c in windows.conditions_from(slo.conditions, dt.timedelta(days=slo.window_days))]
    except ValueError:
        effective = []
    data.update(effective_conditions=effective, budget_remaining=slo.budget_remaining,
                burn_rates=dict(slo.burn_rates or {}), state=slo.state, evaluated_at=slo.evaluated_at,
                created_at=slo.created_at, updated_at=slo.updated_at)
    return data


def _masked(url):
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/…" if parts.hostname else ""


def channel_json(channel, request):
    # a Slack webhook's path is its secret and addresses are personal: shown to signed-in readers only
    shown = request.user.is_authenticated
    return {"name": channel.name, "type": channel.type,
            "url": (channel.url if shown else _masked(channel.url)) if channel.url else None,
            "to": list(channel.to or []) if shown else [], "created_at": channel.created_at}


def alert_json(alert):
    return {"id": alert.pk, "slo": alert.slo.name, "severity": alert.severity, "state": alert.state,
            "started_at": alert.started_at, "resolved_at": alert.resolved_at, "burn_rates": alert.burn_rates or {},
            "budget_remaining": alert.budget_remaining, "summary": alert.summary, "details": alert.details or {}}


def _body(request):
    try:
        return json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadParameter("body", "is not JSON") from None


def _bad(exc):
    return BadParameter(exc.field, exc.message)


def _find(model, name):
    """The row named so; None for a name no row can have (PostgreSQL refuses NUL characters)."""
    if "\x00" in name or len(name) > MAX_NAME:
        return None
    return model.objects.filter(name=name).first()


def _no_content():
    return HttpResponse(status=204)


# ---------------------------------------------------------------- views


@api_view(methods=("GET", "POST"))
def channels(request):
    """GET /api/v1/channels: every channel; POST: create one."""
    if request.method == "POST":
        try:
            fields = channel_from(_body(request))
        except Invalid as exc:
            raise _bad(exc) from None
        if Channel.objects.filter(name=fields["name"]).exists():
            raise Conflict(f"name: a channel named {fields['name']!r} exists", "name")
        try:
            with transaction.atomic():
                channel = save_channel(fields)
        except IntegrityError:
            raise Conflict(f"name: a channel named {fields['name']!r} exists", "name") from None
        return json_response(channel_json(channel, request), status=201)
    return {"data": [channel_json(channel, request) for channel in Channel.objects.order_by("name")]}


@api_view(methods=("GET", "DELETE"))
def channel(request, name):
    """GET/DELETE /api/v1/channels/{name}."""
    row = _find(Channel, name)
    if row is None:
        raise NotFound(f"no channel named {name[:200]!r}")
    if request.method == "DELETE":
        row.delete()
        return _no_content()
    return channel_json(row, request)


@api_view(methods=("GET", "POST"))
def slos(request):
    """GET /api/v1/slos: every SLO with its last evaluation; POST: create one."""
    if request.method == "POST":
        try:
            fields, names = definition_from(_body(request))
        except Invalid as exc:
            raise _bad(exc) from None
        if SLO.objects.filter(name=fields["name"]).exists():
            raise Conflict(f"name: an SLO named {fields['name']!r} exists", "name")
        try:
            with transaction.atomic():
                slo = save_slo(fields, names)
        except IntegrityError:
            raise Conflict(f"name: an SLO named {fields['name']!r} exists", "name") from None
        return json_response(slo_json(slo), status=201)
    rows = SLO.objects.prefetch_related("channels").order_by("name")
    return {"data": [slo_json(slo) for slo in rows]}


@api_view(methods=("GET", "PUT", "DELETE"))
def slo(request, name):
    """GET/PUT/DELETE /api/v1/slos/{name}; PUT replaces the definition (a new name renames it)."""
    row = _find(SLO, name)
    if row is None:
        raise NotFound(f"no SLO named {name[:200]!r}")
    if request.method == "DELETE":
        row.delete()
        return _no_content()
    if request.method == "PUT":
        body = _body(request)
        if isinstance(body, dict) and "name" not in body:
            body = {**body, "name": name}
        try:
            fields, names = definition_from(body)
        except Invalid as exc:
            raise _bad(exc) from None
        if fields["name"] != name and SLO.objects.filter(name=fields["name"]).exists():
            raise Conflict(f"name: an SLO named {fields['name']!r} exists", "name")
        try:
            with transaction.atomic():
                row = save_slo(fields, names, existing=row)
        except IntegrityError:
            raise Conflict(f"name: an SLO named {fields['name']!r} exists", "name") from None
    return slo_json(row)


@api_view()
def alerts(request):
    """GET /api/v1/alerts?state=firing|resolved&slo=NAME&limit=100: newest first."""
    state = params.choice(request.GET, "state", (Alert.FIRING, Alert.RESOLVED))
    name = params.text(request.GET, "slo")
    limit = params.integer(request.GET, "limit", 100, minimum=1, maximum=1000)
    rows = Alert.objects.select_related("slo").order_by("-started_at", "-id")
    if state:
        rows = rows.filter(state=state)
    if name:
        rows = rows.filter(slo__name=name)
    return {"data": [alert_json(alert) for alert in rows[:limit]]}

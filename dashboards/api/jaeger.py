"""Jaeger's HTTP query API (/api/services, /api/traces, ...) so Jaeger UI and Grafana's
Jaeger data source can read Sightline.

Every answer is Jaeger's envelope {"data", "total", "limit", "offset", "errors"}; traces are
Jaeger's UI JSON model. OTLP fields become Jaeger tags as the OpenTelemetry Collector's
OTLP -> Jaeger translator makes them, after the collections Jaeger's query service sorts
(span, event and resource attributes by key, events by name): otel.scope.name/version,
then the span's attributes, then span.kind, otel.status_code, error,
otel.status_description and w3c.tracestate. Times are microseconds, durations of search
parameters Go durations ("1.5s"), /api/dependencies times milliseconds.
"""

import datetime as dt
import json
import re

from django.db import connection
from django.utils import timezone

from dashboards import queries
from dashboards.api import params
from dashboards.api.http import BadParameter, NotFound, api_view, jaeger_error
from dashboards.api.v1 import parse_trace_id

DEFAULT_LIMIT = 100  # Jaeger's query service when `limit` is absent (its UI sends 20)
MAX_LIMIT = 1500
DEFAULT_TRACE_LOOKBACK = "2d"  # Jaeger's default when `start` is absent
DEFAULT_DEPENDENCY_LOOKBACK_MS = 24 * 3600 * 1000
JS_MAX_SAFE_INTEGER = 2 ** 53 - 1
SPAN_KINDS = {0: "", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
KIND_BY_NAME = {name: number for number, name in SPAN_KINDS.items() if name}
STATUS_NAMES = {1: "OK", 2: "ERROR"}
MAX_TAGS = 20


def envelope(data, total=0, errors=None):
    return {"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors}


# --- OTLP -> Jaeger JSON ---------------------------------------------------------------


def _raw(value):
    """A stored attribute value as plain JSON-able data (what pdata's AsRaw gives)."""
    if isinstance(value, dict) and len(value) == 1:
        (key, inner), = value.items()
        if key == "kvlistValue" and isinstance(inner, dict):
            return {k: _raw(v) for k, v in inner.items()}
        if key == "bytesValue":
            return inner  # base64, as Go marshals []byte
        if key == "doubleValue":
            return inner
    if isinstance(value, list):
        return [_raw(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)  # Go writes 3.0 as 3
    return value


def _go_json(value):
    """JSON text as Go's encoding/json writes it: no spaces, sorted map keys, HTML escaped."""
    text = json.dumps(_raw(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def tag(key, value):
    """One Jaeger KeyValue from a stored OTLP attribute value."""
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        # Jaeger sends integers JavaScript cannot hold exactly as strings.
        return {"key": key, "type": "int64",
                "value": value if -JS_MAX_SAFE_INTEGER <= value <= JS_MAX_SAFE_INTEGER else str(value)}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    if isinstance(value, str):
        return {"key": key, "type": "string", "value": value}
    if isinstance(value, dict) and len(value) == 1:
        if "bytesValue" in value:
            return {"key": key, "type": "binary", "value": value["bytesValue"]}
        if "doubleValue" in value:  # NaN or an infinity: JSON has no number for them
            return {"key": key, "type": "float64", "value": value["doubleValue"]}
    if value is None:  # an empty AnyValue
        return {"key": key, "type": "string", "value": ""}
    return {"key": key, "type": "string", "value": _go_json(value)}  # arrays and kvlists


def _tags(attributes, skip=()):
    return [tag(key, attributes[key]) for key in sorted(attributes) if key not in skip]


def _string(key, value):
    return {"key": key, "type": "string", "value": value}


def _empty_id(hex_id):
    return not hex_id or not hex_id.strip("0")


def _references(span, trace_hex):
    refs = []
    parent = span["parent_span_id"]
    if parent and not _empty_id(parent):
        refs.append({"refType": "CHILD_OF", "traceID": trace_hex, "spanID": parent})
    for link in span["links"] or []:
        link_trace, link_span = link.get("trace_id") or "", link.get("span_id") or ""
        if _empty_id(link_trace) or _empty_id(link_span):
            continue  # Jaeger drops links without ids
        ref_type = "CHILD_OF" if (link.get("attributes") or {}).get("opentracing.ref_type") == "child_of" \
            else "FOLLOWS_FROM"
        if refs and parent and link_trace == trace_hex and link_span == parent:
            refs[0]["refType"] = ref_type  # the link names the parent: it only sets its type
            continue
        refs.append({"refType": ref_type, "traceID": link_trace.rjust(32, "0"), "spanID": link_span.rjust(16, "0")})
    return refs


def _logs(events):
    logs = []
    for event in sorted(events or [], key=lambda e: e.get("name") or ""):
        attributes = event.get("attributes") or {}
        fields = []
        if event.get("name") and "event" not in attributes:
            fields.append(_string("event", event["name"]))
        fields += _tags(attributes)
        logs.append({"timestamp": int(event.get("time_unix_nano") or 0) // 1000, "fields": fields})
    return logs


def _span_tags(span, scope):
    tags = []
    if scope and scope.get("name"):
        tags.append(_string("otel.scope.name", scope["name"]))
    if scope and scope.get("version"):
        tags.append(_string("otel.scope.version", scope["version"]))
    tags += _tags(span["attributes"] or {})
    if SPAN_KINDS.get(span["kind"]):
        tags.append(_string("span.kind", SPAN_KINDS[span["kind"]]))
    if span["status_code"] in STATUS_NAMES:
        tags.append(_string("otel.status_code", STATUS_NAMES[span["status_code"]]))
    if span["status_code"] == 2:
        tags.append({"key": "error", "type": "bool", "value": True})
    if span["status_message"]:
        tags.append(_string("otel.status_description", span["status_message"]))
    if span["trace_state"]:
        tags.append(_string("w3c.tracestate", span["trace_state"]))
    return tags


def jaeger_trace(trace_id: bytes, spans, resources, scopes):
    """One trace in Jaeger's UI JSON model from queries.trace_spans()."""
    trace_hex = trace_id.hex()
    processes, process_keys, out = {}, {}, []
    for span in spans:
        resource = resources.get(span["resource_id"]) or {"service": span["service"], "attributes": {}}
        process = {"serviceName": resource["service"], "tags": _tags(resource["attributes"] or {}, ("service.name",))}
        identity = json.dumps(process, sort_keys=True)
        if identity not in process_keys:
            process_keys[identity] = f"p{len(process_keys) + 1}"
            processes[process_keys[identity]] = process
        item = {"traceID": trace_hex, "spanID": span["span_id"]}
        if span["flags"] & 0x01:  # W3C sampled -> Jaeger's sampled flag; 0 is left out
            item["flags"] = 1
        item.update({
            "operationName": span["name"],
            "references": _references(span, trace_hex),
            "startTime": span["start_ns"] // 1000,
            "duration": max(span["end_ns"] - span["start_ns"], 0) // 1000,
            "tags": _span_tags(span, scopes.get(span["scope_id"])),
            "logs": _logs(span["events"]),
            "processID": process_keys[identity],
            "warnings": None,
        })
        out.append(item)
    return {"traceID": trace_hex, "spans": out, "processes": processes, "warnings": None}


def load_trace(trace_id: bytes):
    return load_traces([trace_id]).get(trace_id)


# --- Services and operations ----------------------------------------------------------------


@api_view(error=jaeger_error)
def services(request):
    """GET /api/services: every service that sent spans."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT service_name FROM sightline_resource ORDER BY 1")
        names = [row[0] for row in cursor.fetchall()]
    return envelope(names, total=len(names))


def _operations(service, kind=None):
    """(name, kind) of the service's spans over every retained rollup bucket."""
    where, values = "service = %s", [service]
    if kind is not None:
        where += " AND kind = %s"
        values.append(kind)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT operation, kind FROM sightline_red_rollup_hour WHERE {where} "
                       f"UNION SELECT operation, kind FROM sightline_red_rollup WHERE {where} "
                       "ORDER BY 1, 2", values + values)
        return cursor.fetchall()


@api_view(error=jaeger_error)
def service_operations(request, service):
    """GET /api/services/{service}/operations: the operation names, every span kind."""
    names = sorted({name for name, _ in _operations(service)})
    return envelope(names, total=len(names))


@api_view(error=jaeger_error)
def operations(request):
    """GET /api/operations?service=&spanKind=: [{name, spanKind}]."""
    service = request.GET.get("service", "")
    if not service:
        raise BadParameter("service", "parameter 'service' is required")
    span_kind = request.GET.get("spanKind", "")
    if span_kind and span_kind not in KIND_BY_NAME:
        return envelope([], total=0)  # Jaeger: no operation has such a kind
    rows = _operations(service, KIND_BY_NAME[span_kind] if span_kind else None)
    data = [{"name": name, "spanKind": SPAN_KINDS.get(kind, "")} for name, kind in rows]
    return envelope(data, total=len(data))


# --- Traces ------------------------------------------------------------------------------------


@api_view(error=jaeger_error)
def trace(request, trace_id):
    """GET /api/traces/{traceID}: data = [trace]; 404 "trace not found"."""
    binary = parse_trace_id(trace_id, "traceID")
    for name in ("start", "end"):
        if request.GET.get(name):
            params.instant(request.GET[name], name, unit="us")
    result = load_trace(binary)
    if result is None:
        raise NotFound("trace not found")
    return envelope([result])


def _tag_filters(query):
    """Jaeger's `tag=key:value` (repeated) and `tags={"key": "value"}` (JSON) as one dict."""
    tags = {}
    for item in query.getlist("tag"):
        key, sep, value = item.partition(":")
        if not sep:
            raise BadParameter("tag", f"malformed 'tag' parameter, expecting key:value, received: {item[:80]}")
        tags[key] = value
    for item in query.getlist("tags"):
        if not item:
            continue
        try:
            parsed = json.loads(item)
        except ValueError as exc:
            raise BadParameter("tags", f"malformed 'tags' parameter, cannot unmarshal JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise BadParameter("tags", "malformed 'tags' parameter: must be a JSON object of key: value")
        for key, value in parsed.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (int, float)):
                value = json.dumps(value)
            elif not isinstance(value, str):
                raise BadParameter("tags", f"malformed 'tags' parameter: the value of {key[:80]!r} must be a string")
            tags[key] = value
    if len(tags) > MAX_TAGS:
        raise BadParameter("tags", f"at most {MAX_TAGS} tags")
    for key, value in tags.items():
        if not key or len(key) > params.MAX_TEXT or len(value) > params.MAX_TEXT or "\x00" in key + value:
            raise BadParameter("tags", f"bad tag {key[:80]!r}: empty key, NUL, or longer than {params.MAX_TEXT}")
    return tags


def _split_tags(tags):
    """Tags the translator makes from span fields -> conditions on the matching span;
    every other tag -> attribute filters (span or resource attributes of that span)."""
    span, attributes = {}, {}
    for key, value in tags.items():
        if key == "error" and value == "true":
            span["status_code"] = 2
        elif key == "otel.status_code" and value in ("OK", "ERROR"):
            span["status_code"] = 1 if value == "OK" else 2
        elif key == "span.kind" and value in KIND_BY_NAME:
            span["kind"] = KIND_BY_NAME[value]
        elif key == "otel.status_description":
            span["status_message"] = value
        elif key == "w3c.tracestate":
            span["trace_state"] = value
        elif key in ("otel.scope.name", "otel.library.name"):
            span["scope_name"] = value
        elif key in ("otel.scope.version", "otel.library.version"):
            span["scope_version"] = value
        else:
            attributes[key] = value
    return span, attributes


def _search(query):
    """Trace ids matching a Jaeger search: one span of the service (with the operation, the
    tags and a duration within minDuration..maxDuration, as Jaeger), newest first."""
    service = params.text(query, "service")
    if not service:
        raise BadParameter("service", "parameter 'service' is required")
    operation = params.text(query, "operation")
    times = {name: query.get(name) for name in ("start", "end", "lookback")}
    if times["lookback"] == "custom":
        times["lookback"] = None
    times = {name: value for name, value in times.items() if value}
    start, end = params.time_range(times, DEFAULT_TRACE_LOOKBACK, unit="us")
    limit = params.integer(query, "limit", DEFAULT_LIMIT)
    limit = DEFAULT_LIMIT if limit <= 0 else min(limit, MAX_LIMIT)
    min_ns = params.duration_ns(query, "minDuration")
    max_ns = params.duration_ns(query, "maxDuration")
    if min_ns and max_ns and max_ns < min_ns:
        raise BadParameter("maxDuration", "'maxDuration' should be greater than 'minDuration'")
    span, attributes = _split_tags(_tag_filters(query))
    span.update(min_duration_ns=min_ns or None, max_duration_ns=max_ns or None)
    rows = queries.search_traces(start, end, service=service, operation=operation, attributes=attributes or None,
                                 span=span, limit=limit)
    return [bytes.fromhex(row["trace_id"]) for row in rows[:limit]]


def load_traces(trace_ids):
    """Jaeger traces for these ids (bytes), in that order; ids without spans are left out."""
    by_trace, resources, scopes = queries.traces_spans(trace_ids)
    return {trace_id: jaeger_trace(trace_id, by_trace[trace_id], resources, scopes)
            for trace_id in trace_ids if by_trace.get(trace_id)}


@api_view(error=jaeger_error)
def traces(request):
    """GET /api/traces: search (service required), or the traces named by `traceID=` params."""
    query = request.GET
    ids = query.getlist("traceID")
    if ids:
        binaries = [parse_trace_id(value, "traceID") for value in ids]
        loaded = load_traces(list(dict.fromkeys(binaries)))
        errors = [{"msg": "trace not found", "traceID": binary.hex()}
                  for binary in dict.fromkeys(binaries) if binary not in loaded]
        return envelope(list(loaded.values()), errors=errors or None)
    found = _search(query)
    loaded = load_traces(found)
    return envelope([loaded[trace_id] for trace_id in found if trace_id in loaded])


# --- Dependencies ------------------------------------------------------------------------------


def _milliseconds(query, name):
    value = query.get(name, "")
    if value == "":
        return None
    if not re.fullmatch(r"-?\d{1,18}", value.strip()):
        raise BadParameter(name, f"unable to parse param '{name}': must be an integer (milliseconds), "
                                 f"got {value[:40]!r}")
    return int(value)


@api_view(error=jaeger_error)
def dependencies(request):
    """GET /api/dependencies?endTs=&lookback= (milliseconds): [{parent, child, callCount}]."""
    end_ms = _milliseconds(request.GET, "endTs")
    lookback_ms = _milliseconds(request.GET, "lookback") or DEFAULT_DEPENDENCY_LOOKBACK_MS
    if lookback_ms < 0 or lookback_ms > params.MAX_RANGE.total_seconds() * 1000:
        raise BadParameter("lookback", "must be between 0 and 3650 days in milliseconds")
    try:
        end = timezone.now() if end_ms is None else dt.datetime.fromtimestamp(end_ms / 1000, tz=dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise BadParameter("endTs", "epoch milliseconds out of range") from None
    start = end - dt.timedelta(milliseconds=lookback_ms)
    service = params.text(request.GET, "service")
    calls = {}
    for edge in queries.dependencies(start, end, service=service):
        key = (edge["parent"], edge["child"])
        calls[key] = calls.get(key, 0) + edge["calls"]
    data = [{"parent": parent, "child": child, "callCount": count} for (parent, child), count in sorted(calls.items())]
    return envelope(data)

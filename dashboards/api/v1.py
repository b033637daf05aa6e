"""Sightline's own JSON API under /api/v1/: every list as {"data": [...]}.

Time ranges: `lookback` (15m, 1h, 7d) or `start`/`end` (RFC 3339 or epoch ms); default
the last hour. `environment` (deployment.environment) narrows every read. Durations are
in milliseconds (floats); times are RFC 3339 UTC strings; nanosecond epoch times, which
JSON numbers cannot hold exactly, are strings (as in OTLP/JSON).
"""

import base64
import binascii
import datetime as dt
import json

from dashboards import queries
from dashboards.api import params
from dashboards.api.http import BadParameter, NotFound, api_view, jaeger_error, rfc3339, v1_error
from traces import analysis
from traces.hotspots import hotspots as hotspot_rows

STATUS_NAMES = {0: "unset", 1: "ok", 2: "error"}
MAX_SERVICE = 1024


def _range_and_environment(request, default_lookback="1h"):
    start, end = params.time_range(request.GET, default_lookback)
    return start, end, params.text(request.GET, "environment")


def _service(value):
    if len(value) > MAX_SERVICE:
        raise BadParameter("service", f"longer than {MAX_SERVICE} characters")
    return value


def not_found(request, *args, **kwargs):
    return v1_error(404, f"no API endpoint at {request.path[:200]!r}; see /api/v1/openapi.json")


def jaeger_not_found(request, *args, **kwargs):
    return jaeger_error(404, "404 page not found")


@api_view()
def services(request):
    """GET /api/v1/services: RED figures per service (requests = spans where a request entered it)."""
    start, end, environment = _range_and_environment(request)
    return {"data": queries.services(start, end, environment=environment),
            "start": start, "end": end}


@api_view()
def operations(request, service):
    """GET /api/v1/services/{service}/operations: the same per operation and span kind."""
    start, end, environment = _range_and_environment(request)
    kind = params.choice(request.GET, "span_kind", tuple(queries.KIND_NUMBERS))
    rows = queries.operations(start, end, _service(service), environment=environment,
                              kind=queries.KIND_NUMBERS[kind] if kind else None)
    return {"data": rows, "start": start, "end": end}


@api_view()
def dependencies(request):
    """GET /api/v1/dependencies: per service-graph edge, calls, errors and latency."""
    start, end, environment = _range_and_environment(request)
    service = params.text(request.GET, "service")
    return {"data": queries.dependencies(start, end, environment=environment, service=service),
            "start": start, "end": end}


@api_view()
def hotspots(request):
    """GET /api/v1/hotspots: operations ranked by their share of critical-path time."""
    start, end, environment = _range_and_environment(request)
    limit = params.integer(request.GET, "limit", 20, minimum=1, maximum=500)
    rows = hotspot_rows(start, end, root_service=params.text(request.GET, "root_service"), limit=limit,
                        through=params.text(request.GET, "service"), environment=environment)
    data = [{"service": row["service"], "operation": row["operation"],
             "critical_path_share": row["critical_path_share"],
             "slow_critical_path_share": row["slow_critical_path_share"],
             "self_time_p95_ms": None if row["self_time_p95_ns"] is None else row["self_time_p95_ns"] / 1e6,
             "exemplar_trace_ids": row["exemplar_trace_ids"]} for row in rows]
    return {"data": data, "start": start, "end": end}


# --- Traces ------------------------------------------------------------------------------


def encode_cursor(row):
    raw = json.dumps([rfc3339(row["start_time"]), row["trace_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value):
    try:
        moment, trace_id = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        return params.instant(moment, "cursor"), bytes.fromhex(trace_id)
    except (ValueError, TypeError, binascii.Error, BadParameter):
        raise BadParameter("cursor", "is not a cursor this API handed out") from None


def _trace_item(row):
    return {"trace_id": row["trace_id"], "root_service": row["root_service"],
            "root_operation": row["root_operation"], "root_missing": row["root_missing"],
            "environment": row["environment"], "start_time": row["start_time"],
            "duration_ms": row["duration_ns"] / 1e6, "span_count": row["span_count"],
            "error_count": row["error_count"], "services": row["services"]}


@api_view()
def trace_search(request):
    """GET /api/v1/traces: summaries of matching traces, newest first, with cursor pagination."""
    query = request.GET
    start, end, environment = _range_and_environment(request)
    limit = params.integer(query, "limit", 20, minimum=1, maximum=1000)
    min_ns = params.duration_ns(query, "min_duration")
    max_ns = params.duration_ns(query, "max_duration")
    if min_ns is not None and max_ns is not None and min_ns > max_ns:
        raise BadParameter("min_duration", "is larger than max_duration")
    cursor = params.text(query, "cursor")
    rows = queries.search_traces(
        start, end, service=params.text(query, "service"), operation=params.text(query, "operation"),
        attributes=params.attribute_filters(query), min_duration_ns=min_ns, max_duration_ns=max_ns,
        status=params.choice(query, "status", ("error", "ok")), environment=environment, limit=limit,
        before=decode_cursor(cursor) if cursor else None)
    page = rows[:limit]
    return {"data": [_trace_item(row) for row in page],
            "next_cursor": encode_cursor(page[-1]) if len(rows) > limit else None}


def parse_trace_id(value, name="trace_id"):
    """1 to 32 hex digits (Jaeger drops leading zeros), never all zero -> 16 bytes."""
    if not 1 <= len(value) <= 32 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise BadParameter(name, f"must be 1 to 32 hexadecimal digits, got {value[:40]!r}")
    trace_id = bytes.fromhex(value.rjust(32, "0"))
    if not any(trace_id):
        raise BadParameter(name, "must not be all zero")
    return trace_id


def _analysis_of(trace_id, spans):
    """A live analysis for a trace not correlated yet: the same figures the worker would store."""
    records = [analysis.SpanRecord(
        trace_id=trace_id, span_id=bytes.fromhex(s["span_id"]),
        parent_span_id=bytes.fromhex(s["parent_span_id"]) if s["parent_span_id"] else None,
        service=s["service"], name=s["name"], kind=s["kind"], start_ns=s["start_ns"], end_ns=s["end_ns"],
        status_code=s["status_code"], attributes=s["attributes"],
        links=tuple((link.get("trace_id"), link.get("span_id")) for link in s["links"])) for s in spans]
    result = analysis.analyze(records)
    return {"root_span_id": result.root_span_id.hex(), "root_service": result.root_service,
            "root_operation": result.root_operation, "root_missing": result.root_missing, "environment": "",
            "start_ns": result.start_ns, "duration_ns": result.duration_ns, "span_count": result.span_count,
            "error_count": result.error_count, "services": result.services,
            "orphan_span_ids": [i.hex() for i in result.orphan_span_ids],
            "skew_ns": {i.hex(): v for i, v in result.skew_ns.items()},
            "span_stats": {i.hex(): [result.self_ns.get(i, 0), result.critical_ns.get(i, 0)] for i in result.self_ns}}


def _total_skew(spans, skew):
    """A span's shift is the sum of the shifts decided at it and at its ancestors."""
    parents = {s["span_id"]: s["parent_span_id"] for s in spans}
    totals = {}
    for span in spans:
        total, node, seen = 0, span["span_id"], set()
        while node is not None and node not in seen:
            seen.add(node)
            total += skew.get(node, 0)
            node = parents.get(node)
        totals[span["span_id"]] = total
    return totals


def _time(ns):
    moment = dt.datetime.fromtimestamp(ns // 1000 / 1e6, tz=dt.timezone.utc)
    return rfc3339(moment)


def trace_document(trace_bytes):
    """One trace as the API and the trace page show it: the summary and every span (start
    order) with skew-corrected offsets, self and critical-path times; None when no span is stored."""
    spans, resources, scopes = queries.trace_spans(trace_bytes)
    if not spans:
        return None
    summary = queries.trace_summary(trace_bytes)
    correlated = summary is not None and summary["span_count"] == len(spans)
    if not correlated:  # still arriving, or a late span since: analyse what is stored now
        summary = {**(summary or {}), **_analysis_of(trace_bytes, spans)}
    stats, skew = summary["span_stats"], _total_skew(spans, summary["skew_ns"])
    orphans = set(summary["orphan_span_ids"])
    trace_start = summary["start_ns"]
    out = []
    for span in spans:
        self_ns, critical_ns = stats.get(span["span_id"], [0, 0])
        resource = resources.get(span["resource_id"], {"attributes": {}})
        scope = scopes.get(span["scope_id"], {"name": "", "version": "", "attributes": {}})
        record = analysis.SpanRecord(b"", b"", None, span["service"], span["name"], span["kind"], 0, 0,
                                     span["status_code"], span["attributes"])
        out.append({
            "span_id": span["span_id"], "parent_span_id": span["parent_span_id"], "service": span["service"],
            "name": span["name"], "kind": queries.KINDS.get(span["kind"], "unspecified"),
            "start_time": _time(span["start_ns"]), "start_unix_nano": str(span["start_ns"]),
            "end_unix_nano": str(span["end_ns"]),
            "offset_ms": (span["start_ns"] + skew[span["span_id"]] - trace_start) / 1e6,
            "duration_ms": max(span["end_ns"] - span["start_ns"], 0) / 1e6,
            "skew_ms": skew[span["span_id"]] / 1e6,
            "self_time_ms": self_ns / 1e6, "critical_path_ms": critical_ns / 1e6,
            "on_critical_path": critical_ns > 0, "orphan": span["span_id"] in orphans,
            "error": analysis.is_error(record),
            "status": {"code": STATUS_NAMES.get(span["status_code"], "unset"), "message": span["status_message"]},
            "trace_state": span["trace_state"], "flags": span["flags"],
            "attributes": span["attributes"],
            "events": [{"name": e.get("name", ""), "time": _time(e.get("time_unix_nano", 0)),
                        "time_unix_nano": str(e.get("time_unix_nano", 0)), "attributes": e.get("attributes", {})}
                       for e in span["events"]],
            "links": [{"trace_id": link.get("trace_id"), "span_id": link.get("span_id"),
                       "attributes": link.get("attributes", {})} for link in span["links"]],
            "resource": resource["attributes"],
            "scope": {"name": scope["name"], "version": scope["version"]},
            "dropped": {"attributes": span["dropped_attributes_count"], "events": span["dropped_events_count"],
                        "links": span["dropped_links_count"]},
        })
    data = {"trace_id": trace_bytes.hex(), "correlated": correlated, "root_span_id": summary["root_span_id"],
            "root_service": summary["root_service"], "root_operation": summary["root_operation"],
            "root_missing": summary["root_missing"], "environment": summary["environment"],
            "start_time": _time(trace_start), "duration_ms": summary["duration_ns"] / 1e6,
            "span_count": len(spans), "error_count": summary["error_count"], "services": summary["services"],
            "spans": out}
    return data


@api_view()
def trace_detail(request, trace_id):
    """GET /api/v1/traces/{trace_id}: the summary and every span, with critical-path flags and self times."""
    trace_bytes = parse_trace_id(trace_id)
    data = trace_document(trace_bytes)
    if data is None:
        raise NotFound(f"trace {trace_bytes.hex()} not found")
    return {"data": data}

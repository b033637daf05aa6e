"""The OpenAPI 3 document of /api/v1, served at /api/v1/openapi.json.

Written by hand beside the views (dashboards/api/v1.py, metrics.py); tests/test_api_schema.py
runs schemathesis against it, so a view and its description cannot drift apart unnoticed.
"""

from django.http import JsonResponse


def _nullable(schema):
    return {**schema, "nullable": True}


NUMBER = {"type": "number"}
MS = _nullable({"type": "number", "description": "milliseconds; null without requests"})
INT = {"type": "integer", "minimum": 0}
TEXT = {"type": "string"}
TIME = {"type": "string", "format": "date-time"}


def _object(properties, required=None):
    return {"type": "object", "properties": properties, "required": required or list(properties),
            "additionalProperties": False}


def _list_of(ref, extra=None):
    properties = {"data": {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}}, **(extra or {})}
    return {"type": "object", "properties": properties, "required": list(properties)}


RED = {"requests": INT, "rate": {**NUMBER, "description": "per second"}, "errors": INT,
       "error_rate": {"type": "number", "minimum": 0, "maximum": 1}, "p50_ms": MS, "p95_ms": MS, "p99_ms": MS}
ATTRIBUTES = {"type": "object", "additionalProperties": True, "description": "OTLP attributes as JSON"}

SCHEMAS = {
    "Error": _object({"error": _object({"status": {"type": "integer"}, "message": TEXT,
                                        "parameter": TEXT}, ["status", "message"])}),
    "Service": _object({"service": TEXT, **RED}),
    "Operation": _object({"service": TEXT, "operation": TEXT, "span_kind": {
        "type": "string", "enum": ["unspecified", "internal", "server", "client", "producer", "consumer"]}, **RED}),
    "Dependency": _object({"parent": TEXT, "child": TEXT,
                           "child_type": {"type": "string", "enum": ["service", "database", "messaging", "external"]},
                           "calls": INT, "rate": NUMBER, "errors": INT,
                           "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
                           "p50_ms": MS, "p95_ms": MS, "p99_ms": MS}),
    "Hotspot": _object({"service": TEXT, "operation": TEXT,
                        "critical_path_share": _nullable({"type": "number", "minimum": 0, "maximum": 1}),
                        "slow_critical_path_share": _nullable({"type": "number", "minimum": 0, "maximum": 1}),
                        "self_time_p95_ms": MS,
                        "exemplar_trace_ids": {"type": "array", "items": TEXT}}),
    "TraceItem": _object({"trace_id": TEXT, "root_service": TEXT, "root_operation": TEXT, "root_missing": {
        "type": "boolean"}, "environment": TEXT, "start_time": TIME, "duration_ms": NUMBER, "span_count": INT,
        "error_count": INT, "services": {"type": "array", "items": TEXT}}),
    "Span": _object({
        "span_id": TEXT, "parent_span_id": _nullable(TEXT), "service": TEXT, "name": TEXT,
        "kind": {"type": "string", "enum": ["unspecified", "internal", "server", "client", "producer", "consumer"]},
        "start_time": TIME, "start_unix_nano": TEXT, "end_unix_nano": TEXT,
        "offset_ms": {**NUMBER, "description": "from the trace's start, clock skew corrected"},
        "duration_ms": NUMBER, "skew_ms": NUMBER, "self_time_ms": NUMBER, "critical_path_ms": NUMBER,
        "on_critical_path": {"type": "boolean"}, "orphan": {"type": "boolean"}, "error": {"type": "boolean"},
        "status": _object({"code": {"type": "string", "enum": ["unset", "ok", "error"]}, "message": TEXT}),
        "trace_state": TEXT, "flags": INT, "attributes": ATTRIBUTES,
        "events": {"type": "array", "items": _object({"name": TEXT, "time": TIME, "time_unix_nano": TEXT,
                                                      "attributes": ATTRIBUTES})},
        "links": {"type": "array", "items": _object({"trace_id": _nullable(TEXT), "span_id": _nullable(TEXT),
                                                     "attributes": ATTRIBUTES})},
        "resource": ATTRIBUTES, "scope": _object({"name": TEXT, "version": TEXT}),
        "dropped": _object({"attributes": INT, "events": INT, "links": INT})}),
    "Trace": _object({"trace_id": TEXT, "correlated": {"type": "boolean"}, "root_span_id": TEXT,
                      "root_service": TEXT, "root_operation": TEXT, "root_missing": {"type": "boolean"},
                      "environment": TEXT, "start_time": TIME, "duration_ms": NUMBER, "span_count": INT,
                      "error_count": INT, "services": {"type": "array", "items": TEXT},
                      "spans": {"type": "array", "items": {"$ref": "#/components/schemas/Span"}}}),
    "Metric": _object({"name": TEXT, "type": _nullable(TEXT), "unit": TEXT, "description": TEXT,
                       "temporality": _nullable({"type": "string", "enum": ["delta", "cumulative"]}),
                       "monotonic": {"type": "boolean"}, "services": {"type": "array", "items": TEXT},
                       "attribute_keys": {"type": "array", "items": TEXT}}),
    "Series": _object({"labels": {"type": "object", "additionalProperties": TEXT},
                       "stat": {"type": "string", "enum": ["value", "rate", "p50", "p95", "p99"]},
                       "points": {"type": "array", "description": "[epoch ms, value or null]", "items": {
                           "type": "array", "minItems": 2, "maxItems": 2,
                           "items": _nullable({"type": "number"})}}}),
}


def _param(name, description, schema=None, where="query", required=False):
    return {"name": name, "in": where, "required": required, "description": description,
            "schema": schema or {"type": "string"}}


TIME_RANGE = [
    _param("lookback", "how far back from end: a number and s, m, h, d or w (default 1h)",
           {"type": "string", "pattern": r"^[0-9]{1,6}[smhdw]$"}),
    _param("start", "RFC 3339 (2026-11-21T10:00:00Z) or epoch milliseconds; wins over lookback"),
    _param("end", "RFC 3339 or epoch milliseconds (default now)"),
    _param("environment", "deployment.environment of the traces' roots"),
]
LIMIT = _param("limit", "most rows returned", {"type": "integer", "minimum": 1, "maximum": 500})
ERRORS = {
    "400": {"description": "a bad parameter, named in error.parameter", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
    "401": {"description": "no session or API token (and SIGHTLINE_PUBLIC_READ is off)", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
}


def _get(summary, parameters, schema, not_found=False):
    responses = {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}, **ERRORS}
    if not_found:
        responses["404"] = {"description": "not found", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {"get": {"summary": summary, "parameters": parameters, "responses": responses}}


RANGE_ECHO = {"start": TIME, "end": TIME}

PATHS = {
    "/api/v1/services": _get("RED figures per service: requests are spans where a request entered it",
                             TIME_RANGE, _list_of("Service", RANGE_ECHO)),
    "/api/v1/services/{service}/operations": _get(
        "RED figures per operation and span kind of one service",
        [_param("service", "service name", where="path", required=True), *TIME_RANGE,
         _param("span_kind", "only this kind", {"type": "string", "enum": [
             "unspecified", "internal", "server", "client", "producer", "consumer"]})],
        _list_of("Operation", RANGE_ECHO)),
    "/api/v1/dependencies": _get(
        "the service graph: calls, errors and latency per edge",
        [*TIME_RANGE, _param("service", "only edges from or to this service")], _list_of("Dependency", RANGE_ECHO)),
    "/api/v1/hotspots": _get(
        "operations ranked by their share of critical-path time, over all traces and over slow ones "
        "(at or above the p95 of their root operation)",
        [*TIME_RANGE, _param("service", "only traces with a span in this service"),
         _param("root_service", "only traces whose root is in this service"), LIMIT],
        _list_of("Hotspot", RANGE_ECHO)),
    "/api/v1/traces": _get(
        "trace search, newest first; attribute filters as attr.KEY=VALUE (span or resource attributes)",
        [*TIME_RANGE, _param("service", "a span of the trace is in this service"),
         _param("operation", "a span of the trace (in service, when given) has this name"),
         _param("min_duration", "e.g. 250ms, 1.5s, or milliseconds"),
         _param("max_duration", "e.g. 2s, or milliseconds"),
         _param("status", "error: some span failed; ok: none did", {"type": "string", "enum": ["error", "ok"]}),
         _param("limit", "traces per page (default 20)", {"type": "integer", "minimum": 1, "maximum": 1000}),
         _param("cursor", "next_cursor of the previous page")],
        _list_of("TraceItem", {"next_cursor": _nullable(TEXT)})),
    "/api/v1/metrics": _get(
        "metric names with points in the range: type, unit, services, attribute keys",
        [*TIME_RANGE, _param("service", "only metrics this service reports")], _list_of("Metric", RANGE_ECHO)),
    "/api/v1/metrics/{name}/series": _get(
        "one metric over time: a rate for counters and delta sums, p50/p95/p99 (and rate) for histograms, "
        "the value for gauges and up-down counters; attribute filters as attr.KEY=VALUE",
        [_param("name", "metric name", where="path", required=True), *TIME_RANGE,
         _param("service", "only this service's points"),
         _param("group_by", "comma-separated attribute keys (service.name allowed), at most 5"),
         _param("step", "bucket width: 30s, 1m, 5m, or seconds (default: at most 120 points)")],
        _list_of("Series", {**RANGE_ECHO, "metric": {"type": "object", "properties": {
            "name": TEXT, "type": _nullable(TEXT), "unit": TEXT}, "required": ["name", "type", "unit"]},
            "step_seconds": {"type": "integer", "minimum": 1}, "truncated": {"type": "boolean"}}),
        not_found=True),
    "/api/v1/traces/{trace_id}": _get(
        "one trace: its summary and every span with critical-path flags and self times",
        [_param("trace_id", "1 to 32 hex digits", {"type": "string", "pattern": "^[0-9a-fA-F]{1,32}$"},
                where="path", required=True)],
        {"type": "object", "properties": {"data": {"$ref": "#/components/schemas/Trace"}}, "required": ["data"]},
        not_found=True),
}

DOCUMENT = {
    "openapi": "3.0.3",
    "info": {"title": "Sightline API", "version": "1",
             "description": "Read the service map, RED figures, latency hotspots, traces and metrics that "
                            "Sightline computed from OpenTelemetry data. Authenticate with a browser session or "
                            "'Authorization: Bearer <token>' (manage.py create_api_token USERNAME)."},
    "servers": [{"url": "/"}],
    "security": [{"bearerAuth": []}],
    "paths": PATHS,
    "components": {"schemas": SCHEMAS,
                   "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
}


def openapi_json(request):
    """GET /api/v1/openapi.json: open to all, like any API's published description."""
    return JsonResponse(DOCUMENT)

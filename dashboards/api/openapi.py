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

# ---- SLOs, channels and alerts (dashboards/api/slos.py): reads and writes

SEVERITY = {"type": "string", "enum": ["page", "ticket"]}
DURATION = {"type": "string", "pattern": r"^[0-9]{1,5}[smhdw]$", "description": "5m, 1h, 3d, ..."}
CONDITION = _object({"severity": SEVERITY, "long": DURATION, "short": DURATION,
                     "burn_rate": {"type": "number", "exclusiveMinimum": True, "minimum": 0}})
EDGE = _nullable(_object({"parent": TEXT, "child": TEXT}))
RATE_BY_WINDOW = {"type": "object", "additionalProperties": _nullable(NUMBER),
                  "description": "window label (1h, 5m, ...) -> burn rate; null without traffic"}
SLO_DEFINITION = {
    "name": {"type": "string", "minLength": 1, "maxLength": 100}, "description": TEXT, "service": TEXT,
    "operation": _nullable(TEXT), "edge": EDGE,
    "objective": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "exclusiveMaximum": True, "maximum": 1},
    "window": {"type": "string", "pattern": r"^[0-9]{1,3}[dw]$", "description": "whole days: 7d, 28d, 30d"},
    "channels": {"type": "array", "items": TEXT},
    "conditions": {"type": "array", "items": CONDITION, "description": "empty: the SRE-workbook defaults"},
}
SCHEMAS.update({
    "Channel": _object({"name": TEXT, "type": {"type": "string", "enum": ["webhook", "slack", "email"]},
                        "url": _nullable({**TEXT, "description": "webhook and slack; masked for anonymous reads"}),
                        "to": {"type": "array", "items": TEXT}, "created_at": TIME}),
    "ChannelInput": _object({"name": {"type": "string", "minLength": 1, "maxLength": 100},
                             "type": {"type": "string", "enum": ["webhook", "slack", "email"]},
                             "url": {"type": "string", "description": "http or https; webhook and slack only"},
                             "to": {"type": "array", "items": {"type": "string", "format": "email"},
                                    "description": "email only"}}, ["name", "type"]),
    "SLO": _object({**SLO_DEFINITION,
                    "sli": _object({"type": {"type": "string", "enum": ["availability", "latency"]},
                                    "threshold_ms": _nullable(NUMBER),
                                    "value": _nullable({**NUMBER, "description": "the last evaluation's SLI"})}),
                    "effective_conditions": {"type": "array", "items": CONDITION},
                    "budget_remaining": _nullable(NUMBER), "burn_rates": RATE_BY_WINDOW,
                    "state": {"type": "string", "enum": ["ok", "ticket", "page"]},
                    "evaluated_at": _nullable(TIME), "created_at": TIME, "updated_at": TIME}),
    "SLOInput": {**_object({**SLO_DEFINITION,
                            "sli": _object({"type": {"type": "string", "enum": ["availability", "latency"]},
                                            "threshold_ms": _nullable({"type": "number", "exclusiveMinimum": True,
                                                                       "minimum": 0})}, ["type"])},
                           ["name", "service", "sli", "objective"]),
                 "additionalProperties": True,
                 "description": "the SLO's read-only fields (sli.value, state, ...) are ignored, so a GET's "
                                "answer can be sent back"},
    "Alert": _object({"id": {"type": "integer"}, "slo": TEXT, "severity": SEVERITY,
                      "state": {"type": "string", "enum": ["firing", "resolved"]}, "started_at": TIME,
                      "resolved_at": _nullable(TIME), "burn_rates": RATE_BY_WINDOW,
                      "budget_remaining": _nullable(NUMBER), "summary": TEXT,
                      "details": {"type": "object", "additionalProperties": True}}),
})


def _json(ref, description="OK"):
    return {"description": description, "content": {"application/json": {"schema": {
        "$ref": f"#/components/schemas/{ref}"}}}}


WRITE_ERRORS = {**ERRORS, "403": _json("Error", "a session write without the CSRF token")}
NOT_FOUND = {"404": _json("Error", "not found")}
CONFLICT = {"409": _json("Error", "the name is taken")}
NAME = {"channel": _param("name", "channel name", where="path", required=True),
        "slo": _param("name", "SLO name", where="path", required=True)}


def _write(summary, responses, body=None, parameters=()):
    operation = {"summary": summary, "parameters": list(parameters), "responses": {**responses, **WRITE_ERRORS}}
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
            "$ref": f"#/components/schemas/{body}"}}}}
    return operation


PATHS.update({
    "/api/v1/channels": {
        **_get("notification channels (a Slack URL and e-mail addresses only to signed-in readers)", [],
               _list_of("Channel")),
        "post": _write("create a channel", {"201": _json("Channel", "created"), **CONFLICT}, "ChannelInput")},
    "/api/v1/channels/{name}": {
        **_get("one channel", [NAME["channel"]], {"$ref": "#/components/schemas/Channel"}, not_found=True),
        "delete": _write("delete a channel", {"204": {"description": "deleted"}, **NOT_FOUND},
                         parameters=[NAME["channel"]])},
    "/api/v1/slos": {
        **_get("every SLO with its last evaluation: SLI, budget left, burn rate per window, state", [],
               _list_of("SLO")),
        "post": _write("create an SLO", {"201": _json("SLO", "created"), **CONFLICT}, "SLOInput")},
    "/api/v1/slos/{name}": {
        **_get("one SLO with its last evaluation", [NAME["slo"]], {"$ref": "#/components/schemas/SLO"},
               not_found=True),
        "put": _write("replace an SLO's definition (a new name renames it)",
                      {"200": _json("SLO"), **NOT_FOUND, **CONFLICT}, "SLOInput", [NAME["slo"]]),
        "delete": _write("delete an SLO and its alerts", {"204": {"description": "deleted"}, **NOT_FOUND},
                         parameters=[NAME["slo"]])},
    "/api/v1/alerts": _get(
        "SLO alerts, newest first",
        [_param("state", "only firing or only resolved alerts", {"type": "string", "enum": ["firing", "resolved"]}),
         _param("slo", "only this SLO's alerts"),
         _param("limit", "most alerts returned (default 100)", {"type": "integer", "minimum": 1, "maximum": 1000})],
        _list_of("Alert")),
})

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

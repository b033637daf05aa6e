"""OTLP protobuf -> rows, a pure module: no Django, no database.

convert_traces() and convert_metrics() take the decoded Export*ServiceRequest and return
a Batch: the rows to write, the resources and scopes they reference, the trace ids seen,
and how many items were invalid (with the first reason), for OTLP partial_success.

Telemetry is untrusted: strings are cut to the limits below and NUL characters (which
PostgreSQL cannot store) are replaced, so a hostile or broken exporter cannot make a
batch fail as a whole.
"""

import base64
import hashlib
import json
import math
import time
from dataclasses import dataclass, field

MAX_NAME = 1024  # span names, metric names, event names, attribute keys
MAX_STRING = 16 * 1024  # attribute string values
MAX_DEPTH = 8  # nesting of array / kvlist attribute values
ZERO_TRACE_ID = bytes(16)
ZERO_SPAN_ID = bytes(8)
NS_PER_DAY = 86_400 * 1_000_000_000
MAX_TIME_NS = 2**63 - 1  # uint64 times are stored in bigint columns; later than 2262 is refused
MAX_COUNT = 2**31 - 1  # uint32 dropped counts are stored in integer columns, capped here
UNKNOWN_SERVICE = "unknown_service"

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def text(value, limit=MAX_STRING):
    if len(value) > limit:
        value = value[:limit]
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value


_seconds_text = {}


def timestamp_text(ns):
    """Nanoseconds since the epoch as PostgreSQL timestamptz text, to the microsecond."""
    seconds, rest = divmod(ns, 1_000_000_000)
    prefix = _seconds_text.get(seconds)
    if prefix is None:  # spans of one batch mostly share their second: format it once
        if len(_seconds_text) > 4096:
            _seconds_text.clear()
        prefix = _seconds_text[seconds] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
    return f"{prefix}.{rest // 1000:06d}+00"


def content_id(data: bytes) -> int:
    """A stable signed 64-bit id for content (resources, scopes, metrics, series)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big", signed=True)


def any_value(value, depth=0):
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return text(value.string_value)
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else {"doubleValue": str(number).replace("inf", "Infinity").replace("nan", "NaN")}
    if depth >= MAX_DEPTH:
        return None
    if kind == "array_value":
        return [any_value(item, depth + 1) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {"kvlistValue": attributes(value.kvlist_value.values, depth + 1)}
    if kind == "bytes_value":
        return {"bytesValue": base64.b64encode(value.bytes_value).decode()}
    return None  # an empty AnyValue


def attributes(key_values, depth=0):
    result = {}
    for kv in key_values:
        key, value = kv.key, kv.value
        kind = value.WhichOneof("value")
        if kind == "string_value":  # by far the most common: no function call
            item = value.string_value
            if len(item) > MAX_STRING or "\x00" in item:
                item = text(item)
        elif kind == "int_value":
            item = value.int_value
        else:
            item = any_value(value, depth)
        if len(key) > MAX_NAME or "\x00" in key:
            key = text(key, MAX_NAME)
        result[key] = item
    return result


def attributes_json(key_values):
    return _dumps(attributes(key_values)) if key_values else "{}"


@dataclass
class Batch:
    rows: list = field(default_factory=list)
    resources: dict = field(default_factory=dict)  # id -> row
    scopes: dict = field(default_factory=dict)  # id -> row
    metrics: dict = field(default_factory=dict)  # id -> row (metric descriptors)
    trace_ids: set = field(default_factory=set)
    days: set = field(default_factory=set)  # days (since the epoch) the rows fall in
    rejected: int = 0
    error: str = ""

    def reject(self, reason, count=1):
        self.rejected += count
        if not self.error:
            self.error = reason


def _resource(batch, resource_msg, schema_url):
    data = resource_msg.SerializeToString(deterministic=True) + schema_url.encode()
    rid = content_id(data)
    if rid not in batch.resources:
        attrs = attributes(resource_msg.attributes)
        service = attrs.get("service.name")
        if not isinstance(service, str) or not service:
            service = UNKNOWN_SERVICE
        batch.resources[rid] = (rid, service, _dumps(attrs), min(resource_msg.dropped_attributes_count, MAX_COUNT),
                                text(schema_url))
    return rid, batch.resources[rid][1]


def _scope(batch, scope_msg, schema_url):
    data = scope_msg.SerializeToString(deterministic=True) + schema_url.encode()
    sid = content_id(data)
    if sid not in batch.scopes:
        batch.scopes[sid] = (sid, text(scope_msg.name, MAX_NAME), text(scope_msg.version, MAX_NAME),
                             attributes_json(scope_msg.attributes), min(scope_msg.dropped_attributes_count, MAX_COUNT),
                             text(schema_url))
    return sid


def _events(span):
    return _dumps([
        {"time_unix_nano": event.time_unix_nano, "name": text(event.name, MAX_NAME),
         "attributes": attributes(event.attributes), "dropped_attributes_count": event.dropped_attributes_count}
        for event in span.events
    ])


def _links(span):
    return _dumps([
        {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(), "trace_state": text(link.trace_state),
         "attributes": attributes(link.attributes), "dropped_attributes_count": link.dropped_attributes_count,
         "flags": link.flags}
        for link in span.links
    ])


def _span_problem(trace_id, span_id, parent, start, end):
    if len(trace_id) != 16 or trace_id == ZERO_TRACE_ID:
        return "invalid trace_id: must be 16 bytes, not all zero"
    if len(span_id) != 8 or span_id == ZERO_SPAN_ID:
        return "invalid span_id: must be 8 bytes, not all zero"
    if len(parent) not in (0, 8):
        return "invalid parent_span_id: must be empty or 8 bytes"
    if start == 0:
        return "start_time_unix_nano is required"
    if start > MAX_TIME_NS or end > MAX_TIME_NS:
        return "span times must be before the year 2262"
    return None


def convert_traces(request) -> Batch:
    """ExportTraceServiceRequest -> span rows in the column order of writer.SPAN_COLUMNS."""
    batch = Batch()
    append, trace_ids, days = batch.rows.append, batch.trace_ids, batch.days
    for resource_spans in request.resource_spans:
        rid, service = _resource(batch, resource_spans.resource, resource_spans.schema_url)
        for scope_spans in resource_spans.scope_spans:
            sid = _scope(batch, scope_spans.scope, scope_spans.schema_url)
            for span in scope_spans.spans:
                trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                problem = _span_problem(trace_id, span_id, parent, start, end)
                if problem:
                    batch.reject(problem)
                    continue
                status = span.status
                message, state = status.message, span.trace_state  # usually empty: no call then
                append((
                    trace_id, span_id, parent if parent and parent != ZERO_SPAN_ID else None,
                    start, end, end - start if end > start else 0,
                    text(span.name, MAX_NAME), span.kind, status.code, text(message) if message else "",
                    text(state) if state else "", span.flags, service, rid, sid,
                    attributes_json(span.attributes),
                    _events(span) if span.events else "[]",
                    _links(span) if span.links else "[]",
                    min(span.dropped_attributes_count, MAX_COUNT), min(span.dropped_events_count, MAX_COUNT),
                    min(span.dropped_links_count, MAX_COUNT), timestamp_text(start),
                ))
                trace_ids.add(trace_id)
                days.add(start // NS_PER_DAY)
    return batch


# --- Metrics ----------------------------------------------------------------------

GAUGE, SUM, HISTOGRAM, EXPONENTIAL_HISTOGRAM, SUMMARY = 1, 2, 3, 4, 5
_TYPES = {"gauge": GAUGE, "sum": SUM, "histogram": HISTOGRAM,
          "exponential_histogram": EXPONENTIAL_HISTOGRAM, "summary": SUMMARY}


def _exemplars(point):
    if not point.exemplars:
        return "[]"
    result = []
    for ex in point.exemplars:
        kind = ex.WhichOneof("value")
        result.append({
            "time_unix_nano": ex.time_unix_nano,
            "value": ex.as_int if kind == "as_int" else _finite(ex.as_double),
            "trace_id": ex.trace_id.hex(), "span_id": ex.span_id.hex(),
            "filtered_attributes": attributes(ex.filtered_attributes),
        })
    return _dumps(result)


def _finite(number):
    """JSON and PostgreSQL jsonb have no NaN/Infinity; keep them as OTLP/JSON spells them."""
    return number if math.isfinite(number) else str(number).replace("inf", "Infinity").replace("nan", "NaN")


def _float_or_none(point, name):
    return getattr(point, name) if point.HasField(name) else None


def _point_row(metric_id, point, mtype):
    """A metric point in the column order of writer.POINT_COLUMNS (less metric_id and series_id)."""
    attrs = attributes(point.attributes)
    attrs_json = _dumps(attrs)
    row = [metric_id, content_id(attrs_json.encode()), point.time_unix_nano, point.start_time_unix_nano,
           attrs_json, point.flags, None, None, None, None, None, None, None, None, None, None, None, None, None, None,
           _exemplars(point) if mtype != SUMMARY else "[]", timestamp_text(point.time_unix_nano)]
    # indexes into row: 6 value_int, 7 value_double, 8 count, 9 sum, 10 min, 11 max, 12 bucket_counts,
    # 13 explicit_bounds, 14 scale, 15 zero_count, 16 zero_threshold, 17 positive, 18 negative, 19 quantiles
    if mtype in (GAUGE, SUM):
        if point.WhichOneof("value") == "as_int":
            row[6] = point.as_int
        else:
            row[7] = point.as_double
        return row
    row[8] = point.count
    row[9] = point.sum if mtype == SUMMARY or point.HasField("sum") else None
    if mtype == HISTOGRAM:
        row[10], row[11] = _float_or_none(point, "min"), _float_or_none(point, "max")
        row[12] = _dumps(list(point.bucket_counts))
        row[13] = _dumps([_finite(bound) for bound in point.explicit_bounds])
    elif mtype == EXPONENTIAL_HISTOGRAM:
        row[10], row[11] = _float_or_none(point, "min"), _float_or_none(point, "max")
        row[14], row[15], row[16] = point.scale, point.zero_count, point.zero_threshold
        row[17] = _dumps({"offset": point.positive.offset, "bucket_counts": list(point.positive.bucket_counts)})
        row[18] = _dumps({"offset": point.negative.offset, "bucket_counts": list(point.negative.bucket_counts)})
    else:
        row[19] = _dumps([{"quantile": q.quantile, "value": _finite(q.value)} for q in point.quantile_values])
    return row


def _metric_descriptor(batch, metric, kind, rid, sid, service):
    data = getattr(metric, kind)
    temporality = getattr(data, "aggregation_temporality", 0)
    monotonic = getattr(data, "is_monotonic", False)
    name = text(metric.name, MAX_NAME)
    key = _dumps([rid, sid, name, _TYPES[kind], metric.unit, metric.description, temporality, monotonic])
    mid = content_id(key.encode())
    if mid not in batch.metrics:
        batch.metrics[mid] = (mid, name, text(metric.description), text(metric.unit, MAX_NAME), _TYPES[kind],
                              temporality, monotonic, attributes_json(metric.metadata), service, rid, sid)
    return mid, data


def convert_metrics(request) -> Batch:
    """ExportMetricsServiceRequest -> metric descriptors and point rows."""
    batch = Batch()
    for resource_metrics in request.resource_metrics:
        rid, service = _resource(batch, resource_metrics.resource, resource_metrics.schema_url)
        for scope_metrics in resource_metrics.scope_metrics:
            sid = _scope(batch, scope_metrics.scope, scope_metrics.schema_url)
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    batch.reject(f"metric {metric.name!r} has no data")
                    continue
                if not metric.name:
                    batch.reject("a metric name is required", len(getattr(metric, kind).data_points))
                    continue
                mid, data = _metric_descriptor(batch, metric, kind, rid, sid, service)
                for point in data.data_points:
                    if point.time_unix_nano == 0:
                        batch.reject("time_unix_nano is required")
                        continue
                    if point.time_unix_nano > MAX_TIME_NS or point.start_time_unix_nano > MAX_TIME_NS:
                        batch.reject("point times must be before the year 2262")
                        continue
                    batch.rows.append(_point_row(mid, point, _TYPES[kind]))
                    batch.days.add(point.time_unix_nano // NS_PER_DAY)
    return batch

"""Read-model queries shared by the APIs and the dashboards (never raw spans for a chart).

RED and edge figures come from the rollups: whole hours from the hourly tables, the
minutes before the first and after the last whole hour from the per-minute tables, so a
24-hour range reads about 24 rows per key instead of 1,440. Latency quantiles come from
the merged log-bucket histograms (traces.analysis: within 3.9 % of the exact value).

Filters are bound parameters; the only text put into SQL is column names from this module.
"""

import datetime as dt
import json

from django.db import connection, transaction

from traces import analysis
from traces.correlate import lookups_by_trace_id

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
KIND_NUMBERS = {name: number for number, name in KINDS.items()}


def _floor(moment, step):
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return epoch + (moment - epoch) // step * step


def _ceil(moment, step):
    floor = _floor(moment, step)
    return floor if floor == moment else floor + step


def split_range(start, end):
    """[start, end) as (minute ranges, hour range or None): whole hours from the hourly table."""
    start, end = _floor(start, MINUTE), _ceil(end, MINUTE)
    first_hour, last_hour = _ceil(start, HOUR), _floor(end, HOUR)
    if first_hour >= last_hour:
        return [(start, end)], None
    minutes = [(a, b) for a, b in ((start, first_hour), (last_hour, end)) if a < b]
    return minutes, (first_hour, last_hour)


def rollup_rows(table, columns, start, end, where, params):
    """SQL (and its params) selecting `columns` of table's minute and hour rows for [start, end)."""
    minutes, hours = split_range(start, end)
    parts, values = [], []
    for bucket_table, ranges in ((table, minutes), (table + "_hour", [hours] if hours else [])):
        for low, high in ranges:
            parts.append(f"SELECT {columns} FROM {bucket_table} WHERE minute >= %s AND minute < %s{where}")
            values += [low, high, *params]
    return " UNION ALL ".join(parts), values


def _filters(conditions):
    """[(sql, value)] with value None = no filter -> (' AND ...', [values])."""
    sql, values = "", []
    for clause, value in conditions:
        if value is not None:
            sql += f" AND {clause}"
            values.append(value)
    return sql, values


def _figures(count, errors, hist, seconds):
    hist, count, errors = hist or {}, int(count), int(errors)  # sum(bigint) comes back as Decimal
    figures = {"requests": count, "rate": count / seconds if seconds else 0.0, "errors": errors,
               "error_rate": errors / count if count else 0.0}
    for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        value = analysis.quantile(hist, q)
        figures[name] = None if value is None else round(value / 1e6, 3)
    return figures


def _loads(value):
    """Django's cursors hand JSONB over as text."""
    return json.loads(value) if isinstance(value, str) else value


def services(start, end, environment=None, service=None):
    """Per service: requests (spans where a request entered it), rate/s, errors, error_rate, p50/p95/p99 ms."""
    where, params = _filters([("environment = %s", environment), ("service = %s", service)])
    rows, values = rollup_rows("sightline_red_rollup", "service, count, errors, histogram",
                                start, end, where + " AND entry", params)
    seconds = (end - start).total_seconds()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT service, sum(count), sum(errors), sightline_hist_sum(histogram) FROM ({rows}) AS r "
                       "GROUP BY service ORDER BY service", values)
        return [{"service": name, **_figures(count, errors, _loads(hist) or {}, seconds)}
                for name, count, errors, hist in cursor.fetchall()]


def operations(start, end, service, environment=None, kind=None):
    """Per (operation, span kind) of one service: the same figures over every span."""
    where, params = _filters([("environment = %s", environment), ("service = %s", service),
                              ("kind = %s", kind)])
    rows, values = rollup_rows("sightline_red_rollup", "operation, kind, count, errors, histogram",
                                start, end, where, params)
    seconds = (end - start).total_seconds()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT operation, kind, sum(count), sum(errors), sightline_hist_sum(histogram) "
                       f"FROM ({rows}) AS r GROUP BY operation, kind ORDER BY operation, kind", values)
        return [{"service": service, "operation": operation, "span_kind": KINDS.get(kind, "unspecified"),
                 **_figures(count, errors, _loads(hist) or {}, seconds)}
                for operation, kind, count, errors, hist in cursor.fetchall()]


def dependencies(start, end, environment=None, service=None):
    """Per service-graph edge: calls, errors, error_rate, p50/p95/p99 ms (service: edges touching it)."""
    where, params = _filters([("environment = %s", environment)])
    if service is not None:
        where += " AND (parent = %s OR child = %s)"
        params += [service, service]
    rows, values = rollup_rows("sightline_edge_rollup", "parent, child, child_type, calls, errors, histogram",
                                start, end, where, params)
    seconds = (end - start).total_seconds()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT parent, child, child_type, sum(calls), sum(errors), sightline_hist_sum(histogram) "
                       f"FROM ({rows}) AS r GROUP BY parent, child, child_type ORDER BY parent, child, child_type",
                       values)
        result = []
        for parent, child, child_type, calls, errors, hist in cursor.fetchall():
            figures = _figures(calls, errors, _loads(hist) or {}, seconds)
            result.append({"parent": parent, "child": child, "child_type": child_type, "calls": figures["requests"],
                           "rate": figures["rate"], "errors": figures["errors"],
                           "error_rate": figures["error_rate"], "p50_ms": figures["p50_ms"],
                           "p95_ms": figures["p95_ms"], "p99_ms": figures["p99_ms"]})
        return result


def environments(start, end):
    """The environments that sent traces in [start, end), for the environment picker."""
    rows, values = rollup_rows("sightline_red_rollup", "environment", start, end, "", [])
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT environment FROM ({rows}) AS r ORDER BY 1", values)
        return [row[0] for row in cursor.fetchall()]


# --- Traces ------------------------------------------------------------------------------

_SUMMARY_COLUMNS = ("trace_id, root_service, root_operation, root_missing, environment, start_time, start_ns, "
                    "duration_ns, span_count, error_count, services")


def _attribute_match(filters):
    """SQL matching spans (or their resource) carrying every key=value of filters; a value given
    as text also matches the number or boolean it spells ("500" matches 500)."""
    clauses, values = [], []
    for key, value in filters.items():
        candidates = [value]
        for convert in (int, float):
            try:
                candidates.append(convert(value))
                break
            except ValueError:
                pass
        if value in ("true", "false"):
            candidates.append(value == "true")
        options = []
        for candidate in candidates:
            options.append("s.attributes @> %s::jsonb")
            values.append(json.dumps({key: candidate}))
            options.append("r.attributes @> %s::jsonb")
            values.append(json.dumps({key: candidate}))
        clauses.append("(" + " OR ".join(options) + ")")
    return " AND ".join(clauses), values


# Conditions on the one matching span of a trace search (column text only; values are bound).
SPAN_FILTERS = {
    "kind": "s.kind = %s", "status_code": "s.status_code = %s", "status_message": "s.status_message = %s",
    "trace_state": "s.trace_state = %s", "scope_name": "sc.name = %s", "scope_version": "sc.version = %s",
    "min_duration_ns": "s.duration_ns >= %s", "max_duration_ns": "s.duration_ns <= %s",
}


def search_traces(start, end, *, service=None, operation=None, attributes=None, min_duration_ns=None,
                  max_duration_ns=None, status=None, environment=None, limit=20, before=None, span=None):
    """Trace summaries that started in [start, end), newest first.

    service: any span of the trace is in it; operation and attributes: one span of the
    trace (in that service, when given) has that name and all those attributes (span or
    resource attributes). status: "error" (some span failed) or "ok". before: a keyset
    cursor (start_time, trace_id) to continue after. span: more conditions on that same
    span, {field: value} with the fields of SPAN_FILTERS (kind, status, duration, scope...).
    Returns up to limit + 1 rows so the caller knows whether there is a next page.
    """
    conditions = [("t.start_time >= %s", start), ("t.start_time < %s", end),
                  ("t.services @> %s::jsonb", json.dumps([service]) if service is not None else None),
                  ("t.duration_ns >= %s", min_duration_ns), ("t.duration_ns <= %s", max_duration_ns),
                  ("t.environment = %s", environment)]
    where, values = _filters(conditions)
    if status == "error":
        where += " AND t.error_count > 0"
    elif status == "ok":
        where += " AND t.error_count = 0"
    if before is not None:
        where += " AND (t.start_time, t.trace_id) < (%s, %s)"
        values += [before[0], before[1]]
    span = {key: value for key, value in (span or {}).items() if value is not None}
    unknown = set(span) - set(SPAN_FILTERS)
    if unknown:
        raise ValueError(f"unknown span filters {sorted(unknown)}")
    if operation is not None or attributes or span:
        span_where, span_values = _filters([("s.service_name = %s", service), ("s.name = %s", operation),
                                            *((SPAN_FILTERS[key], value) for key, value in sorted(span.items()))])
        if attributes:
            match, match_values = _attribute_match(attributes)
            span_where += " AND " + match
            span_values += match_values
        # Spans of a trace start at or after the trace (skew aside): the same time range
        # prunes the span partitions and lets the BRIN index skip the rest.
        where += (" AND t.trace_id IN (SELECT s.trace_id FROM sightline_span s "
                  "JOIN sightline_resource r ON r.id = s.resource_id JOIN sightline_scope sc ON sc.id = s.scope_id "
                  f"WHERE s.start_time >= %s AND s.start_time < %s{span_where})")
        values += [start, end + HOUR, *span_values]
    sql = (f"SELECT {_SUMMARY_COLUMNS} FROM sightline_trace_summary t WHERE true{where} "
           "ORDER BY t.start_time DESC, t.trace_id DESC LIMIT %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, values + [limit + 1])
        return [_summary(row) for row in cursor.fetchall()]


def _summary(row):
    (trace_id, root_service, root_operation, root_missing, environment, start_time, start_ns, duration_ns,
     span_count, error_count, services) = row
    return {"trace_id": bytes(trace_id).hex(), "root_service": root_service, "root_operation": root_operation,
            "root_missing": root_missing, "environment": environment, "start_time": start_time,
            "start_ns": start_ns, "duration_ns": duration_ns, "span_count": span_count,
            "error_count": error_count, "services": _loads(services)}


def trace_summary(trace_id: bytes):
    """The stored summary of one trace with its per-span analysis, or None."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_SUMMARY_COLUMNS}, root_span_id, end_ns, orphan_span_ids, skew_ns, span_stats "
                       "FROM sightline_trace_summary WHERE trace_id = %s", [trace_id])
        row = cursor.fetchone()
    if row is None:
        return None
    summary = _summary(row[:11])
    root_span_id, end_ns, orphans, skew, stats = row[11:]
    summary.update(root_span_id=bytes(root_span_id).hex(), end_ns=end_ns, orphan_span_ids=_loads(orphans),
                   skew_ns=_loads(skew), span_stats=_loads(stats))
    return summary


SPAN_COLUMNS = ("s.span_id, s.parent_span_id, s.service_name, s.name, s.kind, s.start_ns, s.end_ns, s.status_code, "
                "s.status_message, s.trace_state, s.flags, s.attributes, s.events, s.links, "
                "s.dropped_attributes_count, s.dropped_events_count, s.dropped_links_count, "
                "s.resource_id, s.scope_id")


def trace_spans(trace_id: bytes, limit=100_000):
    """Every stored span of one trace (start order), with the resources and scopes they refer to."""
    spans, resources, scopes = traces_spans([trace_id], limit)
    return spans.get(trace_id, []), resources, scopes


def traces_spans(trace_ids, limit=100_000):
    """{trace id: [span dicts in start order]} for several traces in three queries, and the
    resources and scopes they refer to. At most `limit` spans a trace."""
    by_trace = {}
    with transaction.atomic(), connection.cursor() as cursor:
        lookups_by_trace_id(cursor)
        cursor.execute(f"SELECT s.trace_id, {SPAN_COLUMNS} FROM sightline_span s "
                       "WHERE s.trace_id = ANY(ARRAY(SELECT decode(id, 'hex') FROM unnest(%s::text[]) AS id)) "
                       "ORDER BY s.trace_id, s.start_ns, s.span_id", [[bytes(t).hex() for t in trace_ids]])
        for row in cursor.fetchall():
            (trace_id, span_id, parent, service, name, kind, start_ns, end_ns, status_code, status_message,
             trace_state, flags, attributes, events, links, dropped_attributes, dropped_events, dropped_links,
             resource_id, scope_id) = row
            spans = by_trace.setdefault(bytes(trace_id), [])
            if len(spans) >= limit:
                continue
            spans.append({"span_id": bytes(span_id).hex(), "parent_span_id": bytes(parent).hex() if parent else None,
                          "service": service, "name": name, "kind": kind, "start_ns": start_ns, "end_ns": end_ns,
                          "status_code": status_code, "status_message": status_message, "trace_state": trace_state,
                          "flags": flags, "attributes": _loads(attributes), "events": _loads(events),
                          "links": _loads(links), "dropped_attributes_count": dropped_attributes,
                          "dropped_events_count": dropped_events, "dropped_links_count": dropped_links,
                          "resource_id": resource_id, "scope_id": scope_id})
        spans = [span for group in by_trace.values() for span in group]
        resource_ids = sorted({span["resource_id"] for span in spans})
        scope_ids = sorted({span["scope_id"] for span in spans})
        cursor.execute("SELECT id, service_name, attributes FROM sightline_resource WHERE id = ANY(%s)", [resource_ids])
        resources = {row[0]: {"service": row[1], "attributes": _loads(row[2])} for row in cursor.fetchall()}
        cursor.execute("SELECT id, name, version, attributes FROM sightline_scope WHERE id = ANY(%s)", [scope_ids])
        scopes = {row[0]: {"name": row[1], "version": row[2], "attributes": _loads(row[3])}
                  for row in cursor.fetchall()}
    return by_trace, resources, scopes


# --- Time series (charts) -----------------------------------------------------------------

STEPS = [dt.timedelta(minutes=m) for m in (1, 2, 5, 10, 15, 30)] + [dt.timedelta(hours=h) for h in (1, 2, 3, 6, 12, 24)]


def choose_step(start, end, points=60):
    """The smallest step from STEPS giving at most `points` buckets (whole hours for ranges
    over 6 hours); a step of an hour or more reads the hourly rollups."""
    for step in STEPS:
        if (end - start) / step <= points and (step >= HOUR or end - start <= 6 * HOUR):
            return step  # above 6 hours, whole hours: the hourly rollups, a row an hour per key
    return STEPS[-1]


def buckets(start, end, step):
    """Bucket starts covering [start, end), aligned on the epoch."""
    first, result = _floor(start, step), []
    while first < end:
        result.append(first)
        first += step
    return result


def rollup_series(table, keys, counted, start, end, step, where, values):
    """{key: {bucket start: (count, errors, histogram)}} from a rollup table (its hourly twin
    for steps of an hour or more); key = the value of the `keys` columns (a tuple for
    several; None when keys is empty: every row of a bucket added up)."""
    table += "_hour" if step >= HOUR else ""
    selected, grouped = (f"{keys}, ", f"{keys}, bucket") if keys else ("", "bucket")
    sql = (f"SELECT {selected}to_timestamp(floor(extract(epoch FROM minute) / %s) * %s) AS bucket, "
           f"sum({counted}), sum(errors), sightline_hist_sum(histogram) FROM {table} "
           f"WHERE minute >= %s AND minute < %s{where} GROUP BY {grouped}")
    seconds = step.total_seconds()
    with connection.cursor() as cursor:
        cursor.execute(sql, [seconds, seconds, _floor(start, step), end, *values])
        result = {}
        for *names, bucket, count, errors, hist in cursor.fetchall():
            name = (names[0] if len(names) == 1 else tuple(names)) if names else None
            result.setdefault(name, {})[bucket] = (int(count), int(errors), _loads(hist) or {})
        return result


def red_series(start, end, step, *, group="service", service=None, environment=None, entry=None):
    """{group value: {bucket start: (count, errors, histogram)}} for RED charts.

    group: "service" or "operation" (with kind); entry=True counts only spans where
    requests entered their service (a service's own traffic)."""
    keys = {"service": "service", "operation": "operation, kind"}[group]
    where, values = _filters([("environment = %s", environment), ("service = %s", service)])
    if entry:
        where += " AND entry"
    return rollup_series("sightline_red_rollup", keys, "count", start, end, step, where, values)


def edge_series(start, end, step, *, service=None, environment=None):
    """{(parent, child, child_type): {bucket: (calls, errors, histogram)}}."""
    where, values = _filters([("environment = %s", environment)])
    if service is not None:
        where += " AND (parent = %s OR child = %s)"
        values += [service, service]
    return rollup_series("sightline_edge_rollup", "parent, child, child_type", "calls", start, end, step, where, values)

"""Trace search (a scatter of durations and a result table) and the trace view (a waterfall).

The waterfall is server-made HTML, one small row a span, so a trace of thousands of spans
stays quick to render and to scroll; the details of every span travel once, in a JSON block
that static/sightline/trace.js reads to fill the side panel (with textContent only).
"""

import contextlib
import gc
from html import escape
from urllib.parse import parse_qsl

from django.shortcuts import render
from django.urls import reverse
from django.utils.safestring import mark_safe

from dashboards import queries
from dashboards.api import params
from dashboards.api.http import BadParameter
from dashboards.api.v1 import decode_cursor, encode_cursor, parse_trace_id, trace_document
from dashboards.pages import figure, label, page, search_url, service_url, trace_url

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
MAX_INDENT = 40  # deeper spans are indented like depth 40 (their depth is still shown)
MAX_ATTRIBUTE_FILTERS = 20


# --- Trace search --------------------------------------------------------------------------


def attribute_lines(value):
    """{key: value} from the attributes text field: one `key=value` a line."""
    filters = {}
    for number, line in enumerate((value or "").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        key, sep, wanted = line.partition("=")
        if not sep or not key.strip():
            raise BadParameter("attributes", f"line {number} is not key=value: {line[:40]!r}")
        filters[key.strip()] = wanted.strip()
    return filters


def _filters(query):
    """The validated search filters of the form (and attr.KEY=VALUE parameters from links)."""
    attributes = {**attribute_lines(params.text(query, "attributes", max_length=20_000)),
                  **params.attribute_filters(query)}
    if len(attributes) > MAX_ATTRIBUTE_FILTERS:
        raise BadParameter("attributes", f"at most {MAX_ATTRIBUTE_FILTERS} attribute filters")
    min_ns = params.duration_ns(query, "min_duration")
    max_ns = params.duration_ns(query, "max_duration")
    if min_ns is not None and max_ns is not None and min_ns > max_ns:
        raise BadParameter("min_duration", "is larger than max_duration")
    errors = params.choice(query, "errors", ("1", "on"))
    return {"service": params.text(query, "service"), "operation": params.text(query, "operation"),
            "attributes": attributes, "min_duration_ns": min_ns, "max_duration_ns": max_ns,
            "status": "error" if errors else None,
            "limit": params.integer(query, "limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)}


def _form_values(query, filters):
    """What the form shows and what links keep: the search as the user typed it."""
    values = {key: query.get(key, "") for key in ("service", "operation", "min_duration", "max_duration")}
    values["attributes"] = "\n".join(f"{key}={value}" for key, value in filters["attributes"].items())
    values["errors"] = "1" if filters["status"] == "error" else ""
    values["limit"] = str(filters["limit"]) if filters["limit"] != DEFAULT_LIMIT else ""
    return values


def _hover(row):
    return (f"{label(row['root_service'] or '(root missing)')}<br>{label(row['root_operation'])}<br>"
            f"{row['duration_ms']:.2f} ms · {row['span_count']} spans"
            + (f" · {row['error_count']} errors" if row["error_count"] else ""))


def scatter(rows):
    """Duration over start time, a point a trace; traces with errors in their own trace."""
    data = []
    for name, chosen, marker in (
            ("ok", [r for r in rows if not r["error_count"]], {"color": "#5b8def", "symbol": "circle", "size": 8}),
            ("with errors", [r for r in rows if r["error_count"]],
             {"color": "#d1242f", "symbol": "x", "size": 10})):
        if not chosen:
            continue
        data.append({"type": "scatter", "mode": "markers", "name": name, "marker": marker,
                     "x": [r["start_time"].isoformat() for r in chosen], "y": [r["duration_ms"] for r in chosen],
                     "text": [_hover(r) for r in chosen], "hoverinfo": "text",
                     "customdata": [r["url"] for r in chosen]})
    return figure(data, {"xaxis": {"type": "date", "title": {"text": "start (UTC)"}},
                         "yaxis": {"title": {"text": "duration (ms)"}, "rangemode": "tozero"},
                         "legend": {"orientation": "h", "y": 1.12}}, height=300)


@page("dashboards/trace_search.html")
def trace_search(request, window):
    filters = _filters(request.GET)
    cursor = params.text(request.GET, "before")
    rows = queries.search_traces(
        window.start, window.end, service=filters["service"], operation=filters["operation"],
        attributes=filters["attributes"], min_duration_ns=filters["min_duration_ns"],
        max_duration_ns=filters["max_duration_ns"], status=filters["status"], environment=window.environment,
        limit=filters["limit"], before=decode_cursor(cursor) if cursor else None)
    found = rows[:filters["limit"]]
    for row in found:
        row["duration_ms"] = row["duration_ns"] / 1e6
        row["url"] = trace_url(row["trace_id"], window)
        row["service_url"] = service_url(row["root_service"], window) if row["root_service"] else None
    form = _form_values(request.GET, filters)
    search = {key: value for key, value in form.items() if value}
    more = window.query(**search, before=encode_cursor(found[-1])) if len(rows) > filters["limit"] else None
    return {"rows": found, "form": form, "figure": scatter(found), "more": more,
            "first_page": window.query(**search) if cursor else None, "continued": bool(cursor),
            "window_fields": parse_qsl(window.query())}


# --- Trace view ----------------------------------------------------------------------------


def tree_order(spans):
    """Spans depth first, children in start order: [(span, depth, child count)].

    1. A span whose parent is not in the trace (the root, an orphan) starts a tree.
    2. Children keep the start order the spans came in; a stack, not recursion, so a chain
       of thousands of spans is fine; a parent cycle cannot loop (every span is placed once).
    """
    ids = {span["span_id"] for span in spans}
    children = {}
    starts = []
    for span in spans:
        parent = span["parent_span_id"]
        if parent is None or parent not in ids or parent == span["span_id"]:
            starts.append(span)
        else:
            children.setdefault(parent, []).append(span)
    ordered, placed = [], set()
    pending = [(span, 0) for span in reversed(starts)]
    while True:
        while pending:
            span, depth = pending.pop()
            if span["span_id"] in placed:
                continue
            placed.add(span["span_id"])
            kids = children.get(span["span_id"], [])
            ordered.append((span, depth, len(kids)))
            pending.extend((kid, depth + 1) for kid in reversed(kids))
        rest = [span for span in spans if span["span_id"] not in placed]  # only in a parent cycle
        if not rest:
            return ordered
        pending = [(rest[0], 0)]


def _percent(value, total):
    return min(max(value / total * 100, 0.0), 100.0) if total > 0 else 0.0


def waterfall_rows(ordered, duration_ms):
    """The HTML of the waterfall rows: small, every telemetry string escaped.

    Made here rather than in a template loop: a 5,000-span trace renders in milliseconds.
    """
    out = []
    for index, (span, depth, kids) in enumerate(ordered):
        classes = ["span"] + (["crit"] if span["on_critical_path"] else []) + (["err"] if span["error"] else [])
        left = _percent(span["offset_ms"], duration_ms)
        width = max(min(_percent(span["duration_ms"], duration_ms), 100.0 - left), 0.15)
        toggle = (f'<button type="button" class="toggle" aria-expanded="true" aria-label="collapse {kids} '
                  f'child span{"s" if kids != 1 else ""}">▾</button>' if kids else '<span class="leaf"></span>')
        marks = ('<abbr class="mark cp" title="on the critical path">CP</abbr>' if span["on_critical_path"] else "") \
            + ('<abbr class="mark bad" title="error">ERR</abbr>' if span["error"] else "")
        out.append(
            f'<div class="{" ".join(classes)}" role="row" data-i="{index}" data-depth="{depth}" '
            f'id="span-{escape(span["span_id"])}">'
            f'<div class="name" role="gridcell" style="--d:{min(depth, MAX_INDENT)}">{toggle}'
            f'<button type="button" class="open" title="depth {depth}">'
            f'<span class="svc">{escape(span["service"])}</span> {escape(span["name"])}</button>{marks}</div>'
            f'<div class="num" role="gridcell">{span["duration_ms"]:.2f}</div>'
            f'<div class="num self" role="gridcell">{span["self_time_ms"]:.2f}</div>'
            f'<div class="lane" role="gridcell"><div class="bar" style="left:{left:.3f}%;width:{width:.3f}%">'
            f'</div></div></div>')
    return mark_safe("".join(out))


def _details(ordered):
    """What the side panel shows: the spans in row order (the rows carry the index), each
    naming its resource by index in a list, as the spans of one process share theirs."""
    keys = ("span_id", "parent_span_id", "service", "name", "kind", "start_time", "offset_ms", "duration_ms",
            "self_time_ms", "critical_path_ms", "on_critical_path", "skew_ms", "orphan", "error", "status",
            "trace_state", "flags", "attributes", "events", "links", "scope", "dropped")
    resources, seen, spans = [], {}, []
    for span, depth, _ in ordered:
        resource = id(span["resource"])  # trace_document hands the spans of a resource one dict
        if resource not in seen:
            seen[resource] = len(resources)
            resources.append(span["resource"])
        spans.append({**{key: span[key] for key in keys}, "depth": depth, "resource": seen[resource]})
    return {"spans": spans, "resources": resources}


@contextlib.contextmanager
def collector_paused():
    """Building a big trace allocates hundreds of thousands of small dicts that all live until
    the response: the cyclic collector would walk them again and again for nothing (about
    40 % of the time of a 5,000-span trace). Reference counting still frees everything."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _ticks(duration_ms):
    return [{"left": f * 25, "ms": f"{duration_ms * f / 4:.2f}"} for f in range(5)]


@page("dashboards/trace.html")
def trace(request, window, trace_id):
    trace_bytes = parse_trace_id(trace_id)
    with collector_paused():
        return _trace_page(request, window, trace_bytes)


def _trace_page(request, window, trace_bytes):
    document = trace_document(trace_bytes)
    if document is None:
        return render(request, "dashboards/trace.html",
                      {"missing": trace_bytes.hex(), "error": f"No trace {trace_bytes.hex()} is stored."}, status=404)
    ordered = tree_order(document["spans"])
    spans = document["spans"]
    summary = {key: value for key, value in document.items() if key != "spans"}
    summary.update(
        orphans=sum(1 for span in spans if span["orphan"]),
        skewed=sum(1 for span in spans if span["skew_ms"]),
        critical=sum(1 for span in spans if span["on_critical_path"]),
        max_depth=max(depth for _, depth, _ in ordered))
    return render(request, "dashboards/trace.html", {
        "trace": summary, "rows": waterfall_rows(ordered, document["duration_ms"]),
        "details": _details(ordered), "ticks": _ticks(document["duration_ms"]),
        "root_url": service_url(document["root_service"], window) if document["root_service"] else None,
        "search_url": search_url(window),
        "api_url": reverse("api-v1-trace", args=[trace_bytes.hex()]), "window": window})

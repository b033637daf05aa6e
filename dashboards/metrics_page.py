"""Metrics explorer: one metric of the catalogue, filtered by attributes, grouped, charted.

    /explore/metrics/?metric=NAME&group=KEY&group=KEY&attr.KEY=VALUE&service=NAME

What is charted follows the metric's type, as the series API computes it: a rate per
second for counters and delta sums, p50/p95/p99 for histograms and summaries, the value
for gauges and up-down counters. One line per group (and quantile). An `attr.KEY` left
empty in the form is no filter; `add_key`/`add_value` (the form's "add a filter" row)
redirect to the same page with that filter as `attr.KEY`.
"""

from urllib.parse import parse_qsl, urlencode

from django.http import HttpResponseRedirect

from dashboards.api import metrics
from dashboards.api import params
from dashboards.api.http import BadParameter, NotFound
from dashboards.pages import figure, label, page

QUANTILE_STATS = ("p50", "p95", "p99")
DASHES = {"p50": "solid", "p95": "dash", "p99": "dot"}
STAT_TEXT = {"rate": "rate per second", "value": "value", "p50": "p50", "p95": "p95", "p99": "p99"}


def kind(entry):
    """A catalogue entry's type as people say it."""
    if entry["type"] == "sum":
        if entry["temporality"] == "delta":
            return "delta sum"
        return "counter" if entry["monotonic"] else "up-down counter"
    return entry["type"].replace("_", " ")


def _filters(query):
    """attr.KEY=VALUE filters of the page; an empty value is no filter."""
    return {key: value for key, value in params.attribute_filters(query).items() if value != ""}


def _group_keys(query):
    keys = []
    for value in query.getlist("group"):
        if len(value) > params.MAX_TEXT or "\x00" in value or not value.strip():
            raise BadParameter("group", "an attribute key must be 1 to 1024 characters without NUL")
        if value not in keys:
            keys.append(value)
    if len(keys) > metrics.MAX_GROUP_KEYS:
        raise BadParameter("group", f"at most {metrics.MAX_GROUP_KEYS} keys, got {len(keys)}")
    return keys


def _with_added_filter(request):
    """The page's URL with add_key/add_value turned into attr.KEY=VALUE."""
    key = params.text(request.GET, "add_key")
    value = params.text(request.GET, "add_value", default="")
    kept = [(name, item) for name, values in request.GET.lists() for item in values
            if name not in ("add_key", "add_value") and not (name.startswith("attr.") and item == "")]
    if key and value:
        kept = [(name, item) for name, item in kept if name != f"attr.{key}"] + [(f"attr.{key}", value)]
    return HttpResponseRedirect(f"{request.path}?{urlencode(kept)}")


def _legend(labels):
    return ", ".join(f"{key}={'(none)' if value is None else value}" for key, value in labels.items()) or "all"


def chart(body):
    """The plotly figure of a series answer: one line per group and shown stat."""
    stats = {entry["stat"] for entry in body["data"]}
    shown = [stat for stat in QUANTILE_STATS if stat in stats] or sorted(stats)
    unit = body["metric"].get("unit") or ""
    data = []
    for entry in body["data"]:
        if entry["stat"] not in shown:
            continue
        group = _legend(entry["labels"])
        name = group if len(shown) == 1 else f"{group} {entry['stat']}"
        data.append({
            "type": "scatter", "mode": "lines+markers", "name": label(name), "legendgroup": label(group),
            "x": [at for at, _ in entry["points"]], "y": [value for _, value in entry["points"]],
            "line": {"dash": DASHES.get(entry["stat"], "solid"), "width": 1.5}, "marker": {"size": 4},
            "connectgaps": False,
        })
    title = " / ".join(STAT_TEXT.get(stat, stat) for stat in shown)
    if unit:
        title += f" ({unit}/s)" if shown == ["rate"] and body["metric"].get("type") == "sum" else f" ({unit})"
    layout = {"xaxis": {"type": "date", "title": {"text": "time (UTC)"}},
              "yaxis": {"title": {"text": label(title)}, "rangemode": "tozero"},
              "showlegend": True}
    return figure(data, layout, height=380), shown


def _rows(body, shown):
    """One table row per group: its labels and the last value of each shown stat."""
    rows = {}
    for entry in body["data"]:
        if entry["stat"] not in shown:
            continue
        key = tuple(entry["labels"].items())
        row = rows.setdefault(key, {"labels": entry["labels"], "last": {}})
        values = [value for _, value in entry["points"] if value is not None]
        row["last"][entry["stat"]] = values[-1] if values else None
    return [{"labels": row["labels"], "last": [row["last"].get(stat) for stat in shown]} for row in rows.values()]


@page("dashboards/metrics.html")
def metrics_explorer(request, window):
    if "add_key" in request.GET or "add_value" in request.GET:
        return _with_added_filter(request)
    name = params.text(request.GET, "metric")
    service = params.text(request.GET, "service")
    group_keys = _group_keys(request.GET)
    filters = _filters(request.GET)
    available = metrics.catalogue(window.start, window.end, environment=window.environment)["data"]
    for entry in available:
        entry["kind"] = kind(entry)
    chosen = next((entry for entry in available if entry["name"] == name), None)
    context = {"catalogue": available, "name": name, "chosen": chosen, "service": service,
               "group_keys": group_keys, "filters": sorted(filters.items()),
               "window_fields": parse_qsl(window.query()), "figure": None, "rows": [], "stats": [],
               "missing": False, "truncated": False}
    keys = sorted(set(chosen["attribute_keys"] if chosen else []) | set(group_keys) | set(filters))
    context["attribute_keys"] = keys
    context["group_choices"] = ["service.name"] + [key for key in keys if key != "service.name"]
    if not name:
        return context
    try:
        body = metrics.series(name, window.start, window.end, None, group_keys, filters, service,
                              window.environment)
    except NotFound:
        context["missing"] = True
        return context
    context["metric"] = body["metric"]
    context["step_seconds"] = body["step_seconds"]
    context["truncated"] = body["truncated"]
    if body["data"]:
        context["figure"], context["stats"] = chart(body)
        context["rows"] = _rows(body, context["stats"])
    return context

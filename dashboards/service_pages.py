"""The service map (every service, database, queue and external peer, and the calls
between them) and the service page (one service's RED charts, operations, latency
heatmap, hotspots, neighbours and recent errors).

Both read the rollups through dashboards.queries and traces.hotspots: a fixed number of
queries per page, none per row. Telemetry strings that go into a figure pass through
label(); the templates auto-escape the rest.
"""

import math

from psycopg.errors import QueryCanceled

from django.db import OperationalError, connection, transaction

from dashboards import queries
from dashboards.pages import figure, health, label, page, page_url, search_url, service_url, stamp, trace_url
from traces import analysis
from traces.hotspots import hotspots

# Node colours by health (pages.health thresholds), readable on the light and dark themes.
STATE_COLOURS = {"ok": "#2da44e", "degraded": "#d4a72c", "failing": "#cf222e", "idle": "#8c959f"}
STATE_NAMES = {"ok": "ok (< 1 % errors)", "degraded": "degraded (1–5 % errors)", "failing": "failing (≥ 5 % errors)",
               "idle": "no requests"}
SYMBOLS = {"service": "circle", "database": "square", "messaging": "diamond", "external": "triangle-up"}
TYPE_NAMES = {"service": "service", "database": "database", "messaging": "queue", "external": "external peer"}
EDGE_LABELS_UP_TO = 40  # more edges than this: figures on hover only (and in the table), not drawn
HEATMAP_BANDS = 24
# Hotspots read a sample of about 2,000 traces of the range (traces.hotspots); as a guard,
# the page gives up on them (saying so) rather than hold past HOTSPOTS_TIMEOUT_MS.
HOTSPOTS_TIMEOUT_MS = 2000


# --- Links ----------------------------------------------------------------------------------


# --- The graph layout ----------------------------------------------------------------------


def _acyclic(nodes, edges):
    """The edges with those closing a cycle reversed, found by depth-first search from the
    roots (no incoming edge) first, then from any node not reached yet."""
    out = {node: [] for node in nodes}
    incoming = {node: 0 for node in nodes}
    for a, b in edges:
        out[a].append(b)
        incoming[b] += 1
    state = {}  # node -> 1 on the DFS stack, 2 done
    back = set()
    starts = [n for n in nodes if not incoming[n]] + [n for n in nodes if incoming[n]]
    for start in starts:
        if start in state:
            continue
        state[start] = 1
        stack = [(start, iter(out[start]))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                back.add((node, child))
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(out[child])))
    return [(b, a) if (a, b) in back else (a, b) for a, b in edges], back


def _layers(nodes, dag):
    """Longest-path layering: roots in layer 0, every other node one right of its deepest caller."""
    incoming = {node: 0 for node in nodes}
    out = {node: [] for node in nodes}
    for a, b in dag:
        out[a].append(b)
        incoming[b] += 1
    layer = {node: 0 for node in nodes}
    ready = [node for node in nodes if not incoming[node]]
    while ready:
        node = ready.pop()
        for child in out[node]:
            layer[child] = max(layer[child], layer[node] + 1)
            incoming[child] -= 1
            if not incoming[child]:
                ready.append(child)
    return layer


def _crossings(upper, lower, links):
    """Edge crossings between two adjacent layers (positions in each, links upper -> lower)."""
    pos_u = {node: i for i, node in enumerate(upper)}
    pos_l = {node: i for i, node in enumerate(lower)}
    pairs = sorted((pos_u[a], pos_l[b]) for a, b in links if a in pos_u and b in pos_l)
    return sum(1 for i, (u1, l1) in enumerate(pairs) for u2, l2 in pairs[i + 1:] if u1 < u2 and l1 > l2)


def _order(rows, links, passes=12):
    """Barycenter ordering: sweep right then left, each layer sorted by the mean position of
    its neighbours in the layer before; keep the order with the fewest crossings."""
    right, left = {}, {}
    for a, b in links:
        right.setdefault(a, []).append(b)
        left.setdefault(b, []).append(a)

    def total(order):
        return sum(_crossings(order[i], order[i + 1], links) for i in range(len(order) - 1))

    def sweep(order, indices, neighbours, before):
        for i in indices:
            position = {node: p for p, node in enumerate(order[before(i)])}
            current = {node: p for p, node in enumerate(order[i])}

            def centre(node):
                found = [position[n] for n in neighbours.get(node, ()) if n in position]
                return sum(found) / len(found) if found else current[node]

            order[i] = sorted(order[i], key=lambda node: (centre(node), current[node]))

    order = [list(row) for row in rows]
    best, best_crossings = [list(row) for row in order], total(order)
    for n in range(passes):
        if n % 2 == 0:
            sweep(order, range(1, len(order)), left, lambda i: i - 1)
        else:
            sweep(order, range(len(order) - 2, -1, -1), right, lambda i: i + 1)
        crossings = total(order)
        if crossings < best_crossings:
            best, best_crossings = [list(row) for row in order], crossings
        if not best_crossings:
            break
    return best


def layout(nodes, edges):
    """Positions for a left-to-right layered drawing of a directed graph.

    1. Drop self calls; reverse the edges that close a cycle (DFS back edges from the roots).
    2. Longest-path layering of the acyclic graph: x = layer.
    3. An edge spanning several layers gets a dummy point in each layer it crosses, so it
       takes part in the ordering and is drawn around the nodes, not through them.
    4. Within each layer, order nodes (and dummies) by barycenter sweeps to reduce crossings.
    5. y = position in the layer, centred on 0.

    Returns ({node: (x, y)}, {edge: [(x, y) points from the caller to the callee]}).
    nodes: a list of hashable ids (sorted: the initial order); edges: (caller, callee) pairs.
    """
    edges = [(a, b) for a, b in dict.fromkeys(edges) if a != b]
    dag, back = _acyclic(nodes, edges)
    layer = _layers(nodes, dag)
    rows = [[] for _ in range(max(layer.values(), default=0) + 1)]
    for node in nodes:
        rows[layer[node]].append(node)
    links, chains = [], {}
    for (a, b), original in zip(dag, edges):
        chain = [a]
        for step in range(layer[a] + 1, layer[b]):
            dummy = ("dummy", original, step)
            rows[step].append(dummy)
            chain.append(dummy)
        chain.append(b)
        links += list(zip(chain, chain[1:]))
        chains[original] = chain if original not in back else chain[::-1]
    rows = _order(rows, links)
    position = {}
    for x, row in enumerate(rows):
        for i, node in enumerate(row):
            position[node] = (float(x), (len(row) - 1) / 2 - i)
    paths = {}
    for edge, chain in chains.items():
        points = [position[point] for point in chain]
        if edge in back:  # bend a returning call away from the call it answers (a -> b -> a)
            k = (len(points) - 1) // 2
            (x0, y0), (x1, y1) = points[k], points[k + 1]
            points.insert(k + 1, ((x0 + x1) / 2, (y0 + y1) / 2 - 0.3))
        paths[edge] = points
    return {node: position[node] for node in nodes}, paths


# --- The service map -----------------------------------------------------------------------


def _ms(value):
    if value is None:
        return "–"
    return f"{value:.3g} ms" if value < 100 else f"{value:,.0f} ms"


def _pct(rate):
    return f"{rate * 100:.2f} %"


def _rate(value):
    return f"{value:.3g}/s" if value >= 0.01 else f"{value * 60:.3g}/min"


def map_nodes(service_rows, edges):
    """{(type, name): node figures}: services from their entry requests, the rest from the calls in."""
    nodes = {}
    for row in service_rows:
        nodes[("service", row["service"])] = {"name": row["service"], "type": "service", "requests": row["requests"],
                                              "rate": row["rate"], "errors": row["errors"],
                                              "error_rate": row["error_rate"], "p95_ms": row["p95_ms"], "calls_in": 0}
    for edge in edges:
        for name, kind in ((edge["parent"], "service"), (edge["child"], edge["child_type"])):
            nodes.setdefault((kind, name), {"name": name, "type": kind, "requests": 0, "rate": 0.0, "errors": 0,
                                            "error_rate": 0.0, "p95_ms": None, "calls_in": 0, "calls_errors": 0})
        child = nodes[(edge["child_type"], edge["child"])]
        child["calls_in"] += edge["calls"]
        child["calls_errors"] = child.get("calls_errors", 0) + edge["errors"]
        child["calls_rate"] = child.get("calls_rate", 0.0) + edge["rate"]
        if child["type"] != "service" or not child["requests"]:  # p95 of the calls in, for nodes without own spans
            child["p95_ms"] = max(child["p95_ms"] or 0, edge["p95_ms"] or 0) or None
    for node in nodes.values():
        if node["type"] != "service" or not node["requests"]:
            # a virtual node, or a service seen only as a callee: judged by the calls into it
            node["requests"], node["errors"] = node["calls_in"], node.get("calls_errors", 0)
            node["rate"] = node.get("calls_rate", 0.0)
            node["error_rate"] = node["errors"] / node["requests"] if node["requests"] else 0.0
        # entry requests of a service already hold the calls from other services: the larger of the two
        node["traffic"] = max(node["requests"], node["calls_in"])
        node["state"] = health(node["error_rate"], node["traffic"])
    return nodes


def map_figure(nodes, edges, window):
    keys = sorted(nodes, key=lambda key: (key[0] != "service", key[1], key[0]))
    positions, paths = layout(keys, [(("service", e["parent"]), (e["child_type"], e["child"])) for e in edges])
    top = max((node["traffic"] for node in nodes.values()), default=0) or 1
    sizes = {key: 16 + 30 * math.sqrt(nodes[key]["traffic"] / top) for key in keys}
    data, annotations = [], []
    label_x, label_y, label_text, label_hover = [], [], [], []
    for edge in edges:
        key = (("service", edge["parent"]), (edge["child_type"], edge["child"]))
        if key[0] == key[1]:
            continue  # a service calling itself through another instance: in the table only
        points = paths[key]
        colour = STATE_COLOURS[health(edge["error_rate"], edge["calls"])]
        data.append({"type": "scatter", "mode": "lines", "x": [p[0] for p in points], "y": [p[1] for p in points],
                     "line": {"width": 1 + 3 * math.sqrt(edge["calls"] / top), "color": colour},
                     "hoverinfo": "skip", "showlegend": False})
        (x0, y0), (x1, y1) = points[-2], points[-1]
        annotations.append({"x": x1, "y": y1, "ax": x0, "ay": y0, "xref": "x", "yref": "y", "axref": "x",
                            "ayref": "y", "showarrow": True, "arrowhead": 2, "arrowsize": 1.2, "arrowwidth": 1.5,
                            "arrowcolor": colour, "standoff": sizes[key[1]] / 2 + 2, "text": ""})
        middle = points[len(points) // 2 - 1: len(points) // 2 + 1] if len(points) % 2 == 0 else [points[len(points) // 2]] * 2
        label_x.append((middle[0][0] + middle[1][0]) / 2)
        label_y.append((middle[0][1] + middle[1][1]) / 2)
        label_text.append(f"{_rate(edge['rate'])} · {_pct(edge['error_rate'])} · p95 {_ms(edge['p95_ms'])}")
        label_hover.append(f"{label(edge['parent'])} → {label(edge['child'])} ({TYPE_NAMES[edge['child_type']]})<br>"
                           f"{edge['calls']} calls, {_rate(edge['rate'])}<br>errors {edge['errors']} "
                           f"({_pct(edge['error_rate'])})<br>p50 {_ms(edge['p50_ms'])} · p95 {_ms(edge['p95_ms'])}"
                           f" · p99 {_ms(edge['p99_ms'])}")
    if label_x:
        data.append({"type": "scatter", "mode": "markers+text" if len(label_x) <= EDGE_LABELS_UP_TO else "markers",
                     "name": "calls", "x": label_x, "y": label_y, "text": label_text, "hovertext": label_hover,
                     "hoverinfo": "text", "textposition": "top center", "textfont": {"size": 10},
                     "marker": {"size": 6, "color": "rgba(128,128,128,0.5)"}, "showlegend": False})
    for state in ("ok", "degraded", "failing", "idle"):
        group = [key for key in keys if nodes[key]["state"] == state]
        if not group:
            continue
        data.append({"type": "scatter", "mode": "markers+text", "name": STATE_NAMES[state],
                     "x": [positions[key][0] for key in group], "y": [positions[key][1] for key in group],
                     "text": [label(_short(key[1])) for key in group], "textposition": "bottom center",
                     "hovertext": [_node_hover(nodes[key]) for key in group], "hoverinfo": "text",
                     "customdata": [service_url(key[1], window) if key[0] == "service" else "" for key in group],
                     "marker": {"color": STATE_COLOURS[state], "size": [round(sizes[key], 1) for key in group],
                                "symbol": [SYMBOLS[key[0]] for key in group],
                                "line": {"width": 1, "color": "#57606a"}},
                     "meta": {"names": [label(key[1]) for key in group], "types": [key[0] for key in group]}})
    for kind in ("service", "database", "messaging", "external"):  # a legend of the marker shapes
        if any(key[0] == kind for key in keys):
            data.append({"type": "scatter", "mode": "markers", "x": [None], "y": [None], "name": TYPE_NAMES[kind],
                         "marker": {"symbol": SYMBOLS[kind], "color": "#8c959f", "size": 12}, "hoverinfo": "skip"})
    # the extent of nodes and of the bends of long edges (layers may be wider with those)
    points = list(positions.values()) + [point for path in paths.values() for point in path]
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    layers = max(p[0] for p in points)
    hidden = {"visible": False, "showgrid": False, "zeroline": False, "fixedrange": False}
    return figure(data, {"xaxis": dict(hidden, range=[-0.5, layers + 0.5]),
                         "yaxis": dict(hidden, range=[low - 0.6, high + 0.4]),
                         "annotations": annotations, "dragmode": "pan", "margin": {"l": 20, "r": 20, "t": 40, "b": 10},
                         "legend": {"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom"}},
                  height=max(360, min(1600, round(80 * (high - low + 1) + 100))))


def _short(name, limit=32):
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _node_hover(node):
    lines = [f"<b>{label(node['name'])}</b> ({TYPE_NAMES[node['type']]})"]
    if node["type"] == "service" and node["requests"] and node["requests"] >= node["calls_in"]:
        lines.append(f"{node['requests']} requests, {_rate(node['rate'])}")
    else:
        lines.append(f"{node['calls_in']} calls in, {_rate(node['rate'])}")
    lines.append(f"errors {node['errors']} ({_pct(node['error_rate'])})")
    lines.append(f"p95 {_ms(node['p95_ms'])}")
    if node["type"] == "service":
        lines.append("click to open")
    return "<br>".join(lines)


@page("dashboards/service_map.html")
def service_map(request, window):
    edges = queries.dependencies(window.start, window.end, environment=window.environment)
    service_rows = queries.services(window.start, window.end, environment=window.environment)
    nodes = map_nodes(service_rows, edges)
    for edge in edges:
        edge["state"] = health(edge["error_rate"], edge["calls"])
        edge["parent_url"] = service_url(edge["parent"], window)
        edge["child_url"] = service_url(edge["child"], window) if edge["child_type"] == "service" else ""
        edge["type_name"] = TYPE_NAMES[edge["child_type"]]
        edge["error_pct"] = _pct(edge["error_rate"])
    return {"window": window, "edges": edges, "node_count": len(nodes),
            "map": map_figure(nodes, edges, window) if nodes else None}


# --- The service page ----------------------------------------------------------------------


def _duration(step):
    minutes = int(step.total_seconds() // 60)
    return f"{minutes // 60} h" if minutes >= 60 and not minutes % 60 else f"{minutes} min"


def red_figures(points, buckets, step):
    """Rate, errors and latency charts from one service's {bucket: (count, errors, histogram)}."""
    seconds = step.total_seconds()
    x = [stamp(bucket) for bucket in buckets]
    empty = (0, 0, {})
    rate = [round(points.get(b, empty)[0] / seconds, 6) for b in buckets]
    errors = [round(points.get(b, empty)[1] / seconds, 6) for b in buckets]
    time_axis = {"xaxis": {"type": "date"}}
    latency = []
    for name, q, dash in (("p50", 0.5, "solid"), ("p95", 0.95, "dash"), ("p99", 0.99, "dot")):
        values = []
        for bucket in buckets:
            value = analysis.quantile(points.get(bucket, empty)[2], q)
            values.append(None if value is None else round(value / 1e6, 3))
        latency.append({"type": "scatter", "mode": "lines+markers", "name": name, "x": x, "y": values,
                        "line": {"dash": dash}, "marker": {"size": 4}, "connectgaps": False})
    return {
        "rate": figure([{"type": "scatter", "mode": "lines", "name": "requests/s", "x": x, "y": rate,
                         "fill": "tozeroy", "line": {"color": "#0b5cad"}}],
                       dict(time_axis, yaxis={"title": {"text": "requests/s"}, "rangemode": "tozero"})),
        "errors": figure([{"type": "scatter", "mode": "lines", "name": "errors/s", "x": x, "y": errors,
                           "fill": "tozeroy", "line": {"color": "#cf222e"}}],
                         dict(time_axis, yaxis={"title": {"text": "errors/s"}, "rangemode": "tozero"})),
        "latency": figure(latency, dict(time_axis, yaxis={"title": {"text": "ms"}, "rangemode": "tozero"})),
    }


def _band_name(low_ns, high_ns):
    def ms(ns):
        value = ns / 1e6
        return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"

    return f"{ms(low_ns)}–{ms(high_ns)} ms"


def heatmap_figure(points, buckets, bands=HEATMAP_BANDS):
    """Latency over time: x = time buckets, y = latency bands (the log buckets of the merged
    histograms taken `width` at a time, so the whole range seen fits in about `bands` rows),
    z = number of requests. None without any request."""
    indices = {int(index) for bucket in buckets for index, count in points.get(bucket, (0, 0, {}))[2].items()
               if count}
    if not indices:
        return None
    low, high = min(indices), max(indices)
    width = max(1, math.ceil((high - low + 1) / bands))
    rows = (high - low) // width + 1
    z = [[0] * len(buckets) for _ in range(rows)]
    for column, bucket in enumerate(buckets):
        for index, count in points.get(bucket, (0, 0, {}))[2].items():
            z[(int(index) - low) // width][column] += count
    names = [_band_name(analysis.bucket_bounds(low + row * width)[0],
                        analysis.bucket_bounds(low + row * width + width - 1)[1]) for row in range(rows)]
    z = [[count or None for count in row] for row in z]  # empty cells stay transparent
    data = [{"type": "heatmap", "x": [stamp(b) for b in buckets], "y": names, "z": z, "colorscale": "YlOrRd",
             "reversescale": True, "colorbar": {"title": {"text": "requests"}}, "hoverongaps": False,
             "hovertemplate": "%{x}<br>%{y}<br>%{z} requests<extra></extra>"}]
    return figure(data, {"xaxis": {"type": "date"},
                         "yaxis": {"type": "category", "title": {"text": "latency"}}, "margin": {"l": 110, "r": 20,
                                                                                                 "t": 20, "b": 40}},
                  height=max(300, 14 * rows + 100))


def neighbours(edges, service, window):
    """(upstream, downstream) edges of one service, with links to the services at the other end."""
    upstream, downstream = [], []
    for edge in edges:
        edge = dict(edge, state=health(edge["error_rate"], edge["calls"]), type_name=TYPE_NAMES[edge["child_type"]],
                    error_pct=_pct(edge["error_rate"]))
        if edge["child"] == service and edge["child_type"] == "service":
            upstream.append(dict(edge, peer=edge["parent"], peer_type="service",
                                 peer_url=service_url(edge["parent"], window)))
        if edge["parent"] == service:
            downstream.append(dict(edge, peer=edge["child"], peer_type=edge["type_name"],
                                   peer_url=service_url(edge["child"], window) if edge["child_type"] == "service"
                                   else ""))
    key = lambda edge: (-edge["calls"], edge["peer"])  # noqa: E731
    return sorted(upstream, key=key), sorted(downstream, key=key)


def hotspot_rows(start, end, service, environment):
    """Hotspot rows, or None when the query ran past HOTSPOTS_TIMEOUT_MS (the page must not
    hang on them)."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(HOTSPOTS_TIMEOUT_MS)])
            rows = hotspots(start, end, through=service, environment=environment)
    except OperationalError as exc:
        if not isinstance(exc.__cause__, QueryCanceled):
            raise
        return None
    for row in rows:
        row["own"] = row["service"] == service
        row["share_pct"] = f"{(row['critical_path_share'] or 0) * 100:.1f} %"
        row["slow_share_pct"] = f"{(row['slow_critical_path_share'] or 0) * 100:.1f} %"
        row["self_p95_ms"] = None if row["self_time_p95_ns"] is None else round(row["self_time_p95_ns"] / 1e6, 3)
        row["exemplars"] = [(trace_id, trace_url(trace_id)) for trace_id in row["exemplar_trace_ids"] or []]
    return rows


@page("dashboards/service.html")
def service(request, window, service):
    start, end, environment = window.start, window.end, window.environment
    summary = queries.services(start, end, environment=environment, service=service)
    operations = queries.operations(start, end, service, environment=environment)
    edges = queries.dependencies(start, end, environment=environment, service=service)
    context = {"window": window, "service": service, "summary": summary[0] if summary else None,
               "operations": operations, "map_url": page_url("service-map", window)}
    if not summary and not operations and not edges:
        return dict(context, empty=True)
    for row in operations:
        row["state"] = health(row["error_rate"], row["requests"])
        row["error_pct"] = _pct(row["error_rate"])
        row["search_url"] = search_url(window, service=service, operation=row["operation"])
    step = window.step
    buckets = queries.buckets(start, end, step)
    points = queries.red_series(start, end, step, service=service, environment=environment, entry=True).get(service, {})
    upstream, downstream = neighbours(edges, service, window)
    errors = queries.search_traces(start, end, service=service, status="error", environment=environment, limit=10)[:10]
    for row in errors:
        row["url"] = trace_url(row["trace_id"])
        row["duration_ms"] = round(row["duration_ns"] / 1e6, 3)
    sides = [{"title": "Upstream (callers)", "id": "upstream-table", "peer": "Caller", "rows": upstream,
              "none": "No instrumented service called it in this range: its requests came from outside."},
             {"title": "Downstream (callees)", "id": "downstream-table", "peer": "Callee", "rows": downstream,
              "none": "It called no other service, database, queue or external peer in this range."}]
    if summary:
        context.update(summary_state=health(summary[0]["error_rate"], summary[0]["requests"]),
                       summary_error_pct=_pct(summary[0]["error_rate"]))
    return dict(context, charts=red_figures(points, buckets, step), heatmap=heatmap_figure(points, buckets),
                hotspots=hotspot_rows(start, end, service, environment), sides=sides, upstream=upstream,
                downstream=downstream, errors=errors, errors_url=search_url(window, service=service, status="error"),
                step=_duration(step))

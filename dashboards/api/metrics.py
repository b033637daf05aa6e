"""The metrics part of the v1 API: the metric catalogue and time series per step.

    GET /api/v1/metrics                   metric names with type, unit, services, attribute keys
    GET /api/v1/metrics/{name}/series     one metric as series per step and group

The views parse; `catalogue()` and `series()` answer, also for the metrics explorer page.

Series are cut into steps aligned on the epoch (a 1m step starts on the minute), so the
same range asked twice gives the same buckets. What a step holds depends on the type:

- gauge: the average of the points in the step (stat "value");
- sum, cumulative and monotonic (a counter): per series the increase between consecutive
  points (a decrease, or a new start time, is a reset: the increase is the new value),
  summed over the group and divided by the step (stat "rate", per second);
- sum, delta: the sum of the values in the step divided by the step (stat "rate");
- sum, cumulative and not monotonic (an up-down counter): the last value of each series
  in the step, summed over the group (stat "value");
- histogram and exponential histogram: per series the bucket counts added in the step
  (cumulative: the difference to the previous point, a reset takes the new counts; delta:
  the counts themselves), added up over the group, then p50/p95/p99 by linear
  interpolation inside the bucket, and "rate" (observations per second);
- summary: the average of each reported quantile (p50, p95, p99).

For cumulative metrics the point just before the first step is read too, so the first
step has an increase. Everything user-given reaches SQL as a bound parameter.
"""

import datetime as dt
import json
import math
import re
from collections import Counter, defaultdict

from django.db import connection

from dashboards.api import params
from dashboards.api.http import BadParameter, NotFound, api_view

TYPE_NAMES = {1: "gauge", 2: "sum", 3: "histogram", 4: "exponential_histogram", 5: "summary"}
TEMPORALITY_NAMES = {1: "delta", 2: "cumulative"}
DELTA = 1
MAX_NAME = 1024
MAX_GROUP_KEYS = 5
MAX_GROUPS = 500
MAX_CELLS = 1_000_000  # groups x steps: fewer groups are kept for long series
MAX_POINTS = 11_000  # steps per series
MAX_RAW_POINTS = 200_000  # histogram points read into Python for one request
MIN_DEFAULT_STEP = 10
MAX_ATTRIBUTE_KEYS = 100
SAMPLE_SERIES = 20  # series per metric row whose attribute keys the catalogue lists
SAMPLE_METRICS = 5  # metric rows per name sampled for attribute keys
QUANTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
NICE_STEPS = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800,
              604800, 1209600, 2592000)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
MIN_SCALE, MAX_SCALE = -10, 20  # what OTLP exponential histograms may use
_STEP_NUMBER = re.compile(r"^\d{1,9}$")

# Families: how a metric row's points turn into a step's value.
GAUGE, COUNTER, DELTA_SUM, UPDOWN, HISTOGRAM, EXPONENTIAL, SUMMARY = (
    "gauge", "counter", "delta_sum", "updown", "histogram", "exponential", "summary")


def _family(mtype, temporality, monotonic):
    if mtype == 1:
        return GAUGE
    if mtype == 2:
        if temporality == DELTA:
            return DELTA_SUM
        return COUNTER if monotonic else UPDOWN
    return {3: HISTOGRAM, 4: EXPONENTIAL, 5: SUMMARY}.get(mtype)


def _json(value):
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _time_range(request):
    """params.time_range, with a range running off the calendar (end in year 1 minus a
    lookback) as a 400 rather than an OverflowError."""
    try:
        return params.time_range(request.GET, "1h")
    except OverflowError:
        raise BadParameter("end" if request.GET.get("end") else "start", "out of range") from None


def _environment_sql(environment):
    if not environment:
        return "", []
    return (" AND (r.attributes ->> 'deployment.environment.name' = %s"
            " OR r.attributes ->> 'deployment.environment' = %s)", [environment, environment])


# --- GET /api/v1/metrics --------------------------------------------------------------------


@api_view()
def metric_list(request):
    """Metric names with points in the range (default the last hour)."""
    start, end = _time_range(request)
    return catalogue(start, end, params.text(request.GET, "service"), params.text(request.GET, "environment"))


def catalogue(start, end, service=None, environment=None):
    """{"data": [metric name, type, unit, description, temporality, monotonic, services,
    attribute keys], "start", "end"}: the metrics with points in [start, end)."""
    sql = ("SELECT m.id, m.name, m.type, m.unit, m.description, m.temporality, m.is_monotonic, m.service_name"
           " FROM sightline_metric m JOIN sightline_resource r ON r.id = m.resource_id"
           " WHERE EXISTS (SELECT 1 FROM sightline_metric_point p"
           "               WHERE p.metric_id = m.id AND p.time >= %s AND p.time < %s)")
    values = [start, end]
    if service:
        sql += " AND m.service_name = %s"
        values.append(service)
    environment_sql, environment_values = _environment_sql(environment)
    sql += environment_sql + " ORDER BY m.name, m.id"
    values += environment_values
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        rows = cursor.fetchall()

    by_name = defaultdict(list)
    for row in rows:
        by_name[row[1]].append(row)
    sampled = [row[0] for group in by_name.values() for row in group[:SAMPLE_METRICS]]
    keys = _attribute_keys(sampled, start, end)

    data = []
    for name in sorted(by_name):
        group = by_name[name]
        mtype = Counter(row[2] for row in group).most_common(1)[0][0]
        typed = [row for row in group if row[2] == mtype]
        temporality = Counter(row[5] for row in typed).most_common(1)[0][0] if mtype in (2, 3, 4) else 0
        name_keys = set()
        for row in group[:SAMPLE_METRICS]:
            name_keys.update(keys.get(row[0], ()))
        data.append({
            "name": name,
            "type": TYPE_NAMES.get(mtype, str(mtype)),
            "unit": next((row[3] for row in typed if row[3]), ""),
            "description": next((row[4] for row in typed if row[4]), ""),
            "temporality": TEMPORALITY_NAMES.get(temporality),
            "monotonic": any(row[6] for row in typed) if mtype == 2 else False,
            "services": sorted({row[7] for row in group}),
            "attribute_keys": sorted(name_keys)[:MAX_ATTRIBUTE_KEYS],
        })
    return {"data": data, "start": start, "end": end}


def _attribute_keys(metric_ids, start, end):
    """{metric id: attribute keys} from up to SAMPLE_SERIES distinct series of each metric in
    the range: a skip scan over the primary key (metric_id, series_id, time), so a metric with
    many points costs no more than one with a few."""
    if not metric_ids:
        return {}
    sql = """
        SELECT ids.id, keys.key
        FROM unnest(%s::bigint[]) AS ids(id)
        CROSS JOIN LATERAL (
            WITH RECURSIVE s(series_id, attributes, n) AS (
                (SELECT p.series_id, p.attributes, 1 FROM sightline_metric_point p
                 WHERE p.metric_id = ids.id AND p.time >= %s AND p.time < %s
                 ORDER BY p.series_id LIMIT 1)
                UNION ALL
                (SELECT q.series_id, q.attributes, s.n + 1 FROM s CROSS JOIN LATERAL (
                    SELECT p.series_id, p.attributes FROM sightline_metric_point p
                    WHERE p.metric_id = ids.id AND p.series_id > s.series_id AND p.time >= %s AND p.time < %s
                    ORDER BY p.series_id LIMIT 1) q
                 WHERE s.n < %s)
            )
            SELECT DISTINCT jsonb_object_keys(s.attributes) AS key FROM s
            WHERE jsonb_typeof(s.attributes) = 'object'
        ) keys
    """
    result = defaultdict(set)
    with connection.cursor() as cursor:
        cursor.execute(sql, [list(metric_ids), start, end, start, end, SAMPLE_SERIES])
        for metric_id, key in cursor.fetchall():
            if len(result[metric_id]) < MAX_ATTRIBUTE_KEYS:
                result[metric_id].add(key)
    return result


# --- GET /api/v1/metrics/{name}/series ------------------------------------------------------


def default_step(start, end):
    """The nice step that gives at most 120 points over the range."""
    span = (end - start).total_seconds()
    for step in NICE_STEPS:
        if span / step <= 120:
            return step
    return NICE_STEPS[-1]


def _step_seconds(request, start, end):
    value = request.GET.get("step")
    if value is None or value.strip() == "":
        return default_step(start, end)
    value = value.strip()
    if _STEP_NUMBER.match(value):  # a bare number is seconds, as in PromQL
        nanoseconds = int(value) * 1_000_000_000
    else:
        nanoseconds = params.duration_ns(request.GET, "step")
    if nanoseconds % 1_000_000_000:
        raise BadParameter("step", f"must be a whole number of seconds, got {value[:40]!r}")
    seconds = nanoseconds // 1_000_000_000
    if seconds < 1:
        raise BadParameter("step", "must be at least 1s")
    return seconds


def _group_keys(request):
    value = params.text(request.GET, "group_by")
    if value is None:
        return []
    keys = []
    for part in value.split(","):
        key = part.strip()
        if not key:
            raise BadParameter("group_by", "an empty attribute key; give keys separated by commas")
        if key not in keys:
            keys.append(key)
    if len(keys) > MAX_GROUP_KEYS:
        raise BadParameter("group_by", f"at most {MAX_GROUP_KEYS} keys, got {len(keys)}")
    return keys


def _filters(request):
    filters = params.attribute_filters(request.GET)
    for key in filters:
        if len(key) > MAX_NAME or "\x00" in key:
            raise BadParameter(f"attr.{key[:40]}", "the attribute key is too long or contains a NUL character")
    return filters


def _choose_metrics(name, service, environment):
    """The metric rows of this name (and service), of the most common family."""
    if len(name) > MAX_NAME or "\x00" in name:
        raise NotFound(f"no metric named {name[:80]!r}")
    sql = ("SELECT m.id, m.type, m.temporality, m.is_monotonic, m.unit, m.description, m.service_name"
           " FROM sightline_metric m JOIN sightline_resource r ON r.id = m.resource_id WHERE m.name = %s")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM sightline_metric WHERE name = %s LIMIT 1", [name])
        if cursor.fetchone() is None:
            raise NotFound(f"no metric named {name[:80]!r}")
        values = [name]
        if service:
            sql += " AND m.service_name = %s"
            values.append(service)
        environment_sql, environment_values = _environment_sql(environment)
        cursor.execute(sql + environment_sql + " ORDER BY m.id", values + environment_values)
        rows = cursor.fetchall()
    if not rows:
        return None, [], ""
    families = Counter(_family(row[1], row[2], row[3]) for row in rows)
    rank = {family: i for i, family in enumerate((GAUGE, COUNTER, DELTA_SUM, UPDOWN, HISTOGRAM, EXPONENTIAL,
                                                 SUMMARY))}
    family = min(families, key=lambda f: (-families[f], rank.get(f, 99)))
    # Counters and delta sums both give a rate: series of either kind add up.
    compatible = {COUNTER, DELTA_SUM} if family in (COUNTER, DELTA_SUM) else {family}
    chosen = [row for row in rows if _family(row[1], row[2], row[3]) in compatible]
    unit = next((row[4] for row in chosen if row[4]), "")
    return family, chosen, unit


class _Query:
    """The shared FROM/WHERE of a series query, with its bound values in order."""

    def __init__(self, metric_ids, group_keys, filters, step, read_from, end):
        self.group_sql, self.group_values = [], []
        for i, key in enumerate(group_keys):
            if key == "service.name":
                self.group_sql.append(f"m.service_name AS g{i}")
            else:
                self.group_sql.append(f"coalesce(p.attributes ->> %s, r.attributes ->> %s) AS g{i}")
                self.group_values += [key, key]
        self.groups = [f"g{i}" for i in range(len(group_keys))]
        where = ["p.metric_id = ANY(%s)", "p.time >= %s", "p.time < %s"]
        where_values = [list(metric_ids), read_from, end]
        for key, value in filters.items():
            if key == "service.name":
                where.append("m.service_name = %s")
                where_values.append(value)
            else:
                where.append("(p.attributes ->> %s = %s OR r.attributes ->> %s = %s)")
                where_values += [key, value, key, value]
        self.where, self.where_values = " AND ".join(where), where_values
        self.step = dt.timedelta(seconds=step)

    def base(self, columns):
        """SELECT the group columns, the step bucket b and `columns` of every point read."""
        select = ", ".join(["p.metric_id", "p.series_id", "p.time"] + self.group_sql
                           + ["date_bin(%s::interval, p.time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS b"] + columns)
        sql = ("SELECT " + select + " FROM sightline_metric_point p JOIN sightline_metric m ON m.id = p.metric_id"
               " JOIN sightline_resource r ON r.id = m.resource_id WHERE " + self.where)
        return sql, self.group_values + [self.step] + self.where_values

    def group_list(self, extra=""):
        return ", ".join(self.groups + ([extra] if extra else []))


_VALUE = "coalesce(p.value_double, p.value_int::float8) AS v"
_FINITE = "v NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)"


def _scalar_sql(family, query, first_bucket):
    """SQL giving (group values..., b, value) per group and step for gauges and sums."""
    base, values = query.base([_VALUE, "p.start_time_ns AS st"])
    groups = query.group_list()
    g = (groups + ", ") if groups else ""
    if family == GAUGE:
        sql = f"SELECT {g}b, avg(v) AS value FROM ({base}) pts WHERE {_FINITE} GROUP BY {g}b"
    elif family == DELTA_SUM:
        sql = f"SELECT {g}b, sum(v) AS value FROM ({base}) pts WHERE {_FINITE} GROUP BY {g}b"
    elif family == UPDOWN:
        sql = (f"SELECT {g}b, sum(v) AS value FROM ("
               f" SELECT DISTINCT ON (metric_id, series_id, b) * FROM ({base}) pts WHERE {_FINITE}"
               f" ORDER BY metric_id, series_id, b, time DESC) last GROUP BY {g}b")
    else:  # COUNTER
        sql = (f"SELECT {g}b, sum(CASE WHEN v < pv OR (st <> pst AND st <> 0 AND pst <> 0) THEN v ELSE v - pv END)"
               f" FILTER (WHERE pv IS NOT NULL) AS value FROM ("
               f" SELECT *, lag(v) OVER w AS pv, lag(st) OVER w AS pst FROM ({base}) pts WHERE {_FINITE}"
               f" WINDOW w AS (PARTITION BY metric_id, series_id ORDER BY time)) d"
               f" WHERE b >= %s GROUP BY {g}b")
        values = values + [first_bucket]
    return sql, values


def _summary_sql(query):
    base, values = query.base(["p.quantile_values AS qv"])
    groups = query.group_list()
    g = (groups + ", ") if groups else ""
    sql = (f"SELECT {g}b, (e ->> 'quantile')::float8 AS q, avg((e ->> 'value')::float8) AS value"
           f" FROM ({base}) pts CROSS JOIN LATERAL jsonb_array_elements("
           f"   CASE WHEN jsonb_typeof(qv) = 'array' THEN qv ELSE '[]'::jsonb END) e"
           f" WHERE jsonb_typeof(e -> 'quantile') = 'number' AND jsonb_typeof(e -> 'value') = 'number'"
           f"   AND (e ->> 'quantile')::float8 = ANY(%s::float8[])"
           f" GROUP BY {g}b, q")
    return sql, values + [[q for q, _ in QUANTILES]]


def _ranked(sql, values, ngroups, max_groups):
    """Keep the first max_groups groups (by their values): dense_rank over the aggregated rows."""
    order = ", ".join(f"g{i}" for i in range(ngroups)) or "1"
    wrapped = (f"SELECT * FROM (SELECT agg.*, dense_rank() OVER (ORDER BY {order}) AS gr FROM ({sql}) agg) x"
               f" WHERE gr <= %s")
    with connection.cursor() as cursor:
        cursor.execute(wrapped, values + [max_groups + 1])
        rows = cursor.fetchall()
    truncated = any(row[-1] > max_groups for row in rows)
    return [row[:-1] for row in rows if row[-1] <= max_groups], truncated


# --- Histograms -------------------------------------------------------------------------------


def histogram_quantile(q, bounds, counts, minimum=None):
    """The q-quantile of explicit-bound buckets (counts has len(bounds) + 1 entries, the last
    one +Inf), by linear interpolation inside the bucket the rank falls in. The +Inf bucket
    gives the highest finite bound; the first bucket interpolates from the minimum when it
    is known, else from 0 (or gives its bound when that is not above 0)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cumulative = 0
    for i, count in enumerate(counts):
        if count > 0 and cumulative + count >= rank:
            if i >= len(bounds):
                return bounds[-1] if bounds else minimum
            upper = bounds[i]
            if i == 0:
                if minimum is not None and minimum <= upper:
                    lower = minimum
                elif upper > 0:
                    lower = 0.0
                else:
                    return upper
            else:
                lower = bounds[i - 1]
            return lower + (upper - lower) * (rank - cumulative) / count
        cumulative += count
    return bounds[-1] if bounds else None


def _exp_bound(base_exponent, index):
    """base**index where base = 2**(2**-scale): 2**(index * 2**-scale)."""
    try:
        return 2.0 ** (index * base_exponent)
    except OverflowError:
        return math.inf


def exponential_quantile(q, scale, zero_count, positive, negative):
    """The q-quantile of an exponential histogram: positive index i covers
    (base**i, base**(i+1)], negative index i covers [-base**(i+1), -base**i), the zero bucket
    counts as 0; linear interpolation inside the bucket."""
    buckets = []  # (lower, upper, count) in ascending order of value
    exponent = 2.0 ** -scale
    for index in sorted(negative, reverse=True):
        if negative[index] > 0:
            buckets.append((-_exp_bound(exponent, index + 1), -_exp_bound(exponent, index), negative[index]))
    if zero_count > 0:
        buckets.append((0.0, 0.0, zero_count))
    for index in sorted(positive):
        if positive[index] > 0:
            buckets.append((_exp_bound(exponent, index), _exp_bound(exponent, index + 1), positive[index]))
    total = sum(count for _, _, count in buckets)
    if total <= 0:
        return None
    rank = q * total
    cumulative = 0
    for lower, upper, count in buckets:
        if cumulative + count >= rank:
            return lower + (upper - lower) * (rank - cumulative) / count
        cumulative += count
    return buckets[-1][1]


def _downscale(buckets, by):
    if by <= 0:
        return dict(buckets)
    result = defaultdict(int)
    for index, count in buckets.items():
        result[index >> by] += count  # floor division by 2**by, also for negative indexes
    return result


def _dense(spec):
    """{"offset", "bucket_counts"} -> {index: count}."""
    spec = _json(spec) or {}
    offset = spec.get("offset", 0) if isinstance(spec, dict) else 0
    counts = spec.get("bucket_counts", []) if isinstance(spec, dict) else []
    if not isinstance(offset, int):
        return None
    result = {}
    for i, count in enumerate(counts):
        if not isinstance(count, int) or count < 0:
            return None
        if count:
            result[offset + i] = count
    return result


class _ExplicitPoint:
    __slots__ = ("bounds", "counts", "count", "minimum", "start")

    def __init__(self, bounds, counts, count, minimum, start):
        self.bounds, self.counts, self.count, self.minimum, self.start = bounds, counts, count, minimum, start

    def minus(self, prev):
        """The counts added since prev, or None when this is a reset."""
        if prev.bounds != self.bounds or (self.start and prev.start and self.start != prev.start) \
                or self.count < prev.count:
            return None
        diff = [a - b for a, b in zip(self.counts, prev.counts)]
        if any(d < 0 for d in diff):
            return None
        return _ExplicitPoint(self.bounds, diff, self.count - prev.count, self.minimum, self.start)


class _ExponentialPoint:
    __slots__ = ("scale", "zero", "positive", "negative", "count", "start")

    def __init__(self, scale, zero, positive, negative, count, start):
        self.scale, self.zero, self.positive, self.negative = scale, zero, positive, negative
        self.count, self.start = count, start

    def at_scale(self, scale):
        by = self.scale - scale
        return _ExponentialPoint(scale, self.zero, _downscale(self.positive, by), _downscale(self.negative, by),
                                 self.count, self.start)

    def minus(self, prev):
        if (self.start and prev.start and self.start != prev.start) or self.count < prev.count \
                or self.zero < prev.zero:
            return None
        scale = min(self.scale, prev.scale)
        now, before = self.at_scale(scale), prev.at_scale(scale)
        result = []
        for mine, theirs in ((now.positive, before.positive), (now.negative, before.negative)):
            diff = {}
            for index in set(mine) | set(theirs):
                d = mine.get(index, 0) - theirs.get(index, 0)
                if d < 0:
                    return None
                if d:
                    diff[index] = d
            result.append(diff)
        return _ExponentialPoint(scale, self.zero - prev.zero, result[0], result[1], self.count - prev.count,
                                 self.start)


def _explicit_point(row):
    bounds, counts = _json(row["bounds"]), _json(row["counts"])
    if not isinstance(bounds, list) or not isinstance(counts, list) or len(counts) != len(bounds) + 1:
        return None
    if not all(isinstance(b, (int, float)) for b in bounds) or any(b >= a for a, b in zip(bounds[1:], bounds)):
        return None
    if not all(isinstance(c, int) and c >= 0 for c in counts):
        return None
    return _ExplicitPoint(tuple(float(b) for b in bounds), counts, sum(counts), row["min"], row["st"])


def _exponential_point(row):
    scale = row["scale"]
    if scale is None or not MIN_SCALE <= scale <= MAX_SCALE:
        return None
    positive, negative = _dense(row["positive"]), _dense(row["negative"])
    if positive is None or negative is None:
        return None
    zero = int(row["zero"] or 0)
    count = zero + sum(positive.values()) + sum(negative.values())
    return _ExponentialPoint(scale, zero, positive, negative, count, row["st"])


def _histogram_cells(family, query, first_bucket, max_groups):
    """{(group values, bucket): [point deltas]}, truncated: read the points, difference
    cumulative series, keep what falls in the range."""
    if family == HISTOGRAM:
        columns = ["m.temporality AS temporality", "p.start_time_ns AS st", "p.bucket_counts AS counts",
                   "p.explicit_bounds AS bounds", "p.min AS min"]
        build = _explicit_point
    else:
        columns = ["m.temporality AS temporality", "p.start_time_ns AS st", "p.scale AS scale",
                   "p.zero_count AS zero", "p.positive AS positive", "p.negative AS negative"]
        build = _exponential_point
    base, values = query.base(columns)
    sql = base + " ORDER BY p.metric_id, p.series_id, p.time LIMIT %s"
    with connection.cursor() as cursor:
        cursor.execute(sql, values + [MAX_RAW_POINTS + 1])
        names = [column.name for column in cursor.description]
        rows = cursor.fetchall()
    if len(rows) > MAX_RAW_POINTS:
        raise BadParameter("start", f"more than {MAX_RAW_POINTS} histogram points in the range: narrow the range "
                                    "or add attr.* / service filters")
    ngroups = len(query.groups)
    cells = defaultdict(list)
    series, prev = None, None
    for raw in rows:
        row = dict(zip(names, raw))
        key = (row["metric_id"], row["series_id"])
        if key != series:
            series, prev = key, None
        point = build(row)
        if point is None:
            continue
        if row["temporality"] == DELTA:
            delta = point
        elif prev is None:
            delta = None  # the first point of a cumulative series: nothing to difference against
        else:
            delta = point.minus(prev)
            if delta is None:
                delta = point  # a reset: everything counted since the new start
        prev = point
        if delta is not None and row["b"] >= first_bucket:
            labels = tuple(row[f"g{i}"] for i in range(ngroups))
            cells[(labels, row["b"])].append(delta)
    groups = sorted({labels for labels, _ in cells}, key=_label_order)
    truncated = len(groups) > max_groups
    if truncated:
        keep = set(groups[:max_groups])
        cells = {cell: items for cell, items in cells.items() if cell[0] in keep}
    return cells, truncated


def _merge_explicit(points):
    """Several bucket layouts in one step: every bucket goes to the bucket of the union of
    bounds that ends where it ends."""
    layouts = {point.bounds for point in points}
    bounds = sorted(set().union(*layouts)) if len(layouts) > 1 else list(next(iter(layouts)))
    position = {bound: i for i, bound in enumerate(bounds)}
    counts = [0] * (len(bounds) + 1)
    for point in points:
        for i, count in enumerate(point.counts):
            counts[position[point.bounds[i]] if i < len(point.bounds) else len(bounds)] += count
    minima = [point.minimum for point in points]
    minimum = min(minima) if minima and all(m is not None for m in minima) else None
    return bounds, counts, sum(point.count for point in points), minimum


def _merge_exponential(points):
    scale = min(point.scale for point in points)
    positive, negative, zero, count = defaultdict(int), defaultdict(int), 0, 0
    for point in points:
        point = point.at_scale(scale)
        for index, value in point.positive.items():
            positive[index] += value
        for index, value in point.negative.items():
            negative[index] += value
        zero += point.zero
        count += point.count
    return scale, zero, positive, negative, count


def _histogram_values(family, cells, step):
    """{(labels, bucket): {stat: value}}."""
    result = {}
    for cell, points in cells.items():
        if family == HISTOGRAM:
            bounds, counts, count, minimum = _merge_explicit(points)
            stats = {name: histogram_quantile(q, bounds, counts, minimum) for q, name in QUANTILES}
        else:
            scale, zero, positive, negative, count = _merge_exponential(points)
            stats = {name: exponential_quantile(q, scale, zero, positive, negative) for q, name in QUANTILES}
        stats["rate"] = count / step
        result[cell] = stats
    return result


# --- The view -----------------------------------------------------------------------------------


def _label_order(labels):
    return tuple((value is None, value or "") for value in labels)


def _epoch_ms(moment):
    return int((moment - EPOCH).total_seconds() * 1000)


@api_view()
def metric_series(request, name):
    """One metric as series per step: {"data": [{"labels", "stat", "points"}], "metric", "step_seconds"}."""
    start, end = _time_range(request)
    service = params.text(request.GET, "service")
    environment = params.text(request.GET, "environment")
    group_keys = _group_keys(request)
    filters = _filters(request)
    step = _step_seconds(request, start, end)
    return series(name, start, end, step, group_keys, filters, service, environment)


def series(name, start, end, step=None, group_keys=(), filters=None, service=None, environment=None):
    """One metric as series per step (seconds; None: the default step): {"data": [{"labels",
    "stat", "points"}], "metric", "step_seconds", "start", "end", "truncated"}. Raises
    NotFound for an unknown name, BadParameter for a step or range that cannot be served."""
    step = step or default_step(start, end)
    group_keys, filters = list(group_keys), dict(filters or {})
    epoch_start = math.floor((start - EPOCH).total_seconds() / step) * step
    try:
        first_bucket = EPOCH + dt.timedelta(seconds=epoch_start)
        first_bucket - dt.timedelta(seconds=step)  # where cumulative series are read from
    except OverflowError:
        raise BadParameter("start", "too early") from None
    steps = math.ceil((end - first_bucket).total_seconds() / step)
    if steps > MAX_POINTS:
        raise BadParameter("step", f"{step}s gives {steps} points per series; at most {MAX_POINTS}: use a longer "
                                   "step or a shorter range")
    max_groups = max(1, min(MAX_GROUPS, MAX_CELLS // max(steps, 1)))

    family, rows, unit = _choose_metrics(name, service, environment)
    if rows:
        mtype = TYPE_NAMES.get(rows[0][1])
    else:  # the name exists, not for this service or environment: an empty answer
        with connection.cursor() as cursor:
            cursor.execute("SELECT type, unit FROM sightline_metric WHERE name = %s ORDER BY id LIMIT 1", [name])
            found = cursor.fetchone()
        mtype, unit = TYPE_NAMES.get(found[0]), found[1]
    metric = {"name": name, "type": mtype, "unit": unit}
    response = {"data": [], "metric": metric, "step_seconds": step, "start": start, "end": end,
                "truncated": False}
    if not rows:
        return response
    if family in (COUNTER, DELTA_SUM):
        metric["temporality"] = "cumulative" if family == COUNTER else "delta"
        metric["monotonic"] = True

    cumulative = family in (COUNTER, HISTOGRAM, EXPONENTIAL)
    read_from = first_bucket - dt.timedelta(seconds=step) if cumulative else first_bucket
    query = _Query([row[0] for row in rows], group_keys, filters, step, read_from, end)
    ngroups = len(group_keys)

    cells = {}  # (labels, bucket) -> {stat: value}
    if family in (GAUGE, COUNTER, DELTA_SUM, UPDOWN):
        sql, values = _scalar_sql(family, query, first_bucket)
        found, truncated = _ranked(sql, values, ngroups, max_groups)
        rate = family in (COUNTER, DELTA_SUM)
        stat = "rate" if rate else "value"
        for row in found:
            value = row[ngroups + 1]
            if value is not None and rate:
                value = value / step
            cells[(tuple(row[:ngroups]), row[ngroups])] = {stat: value}
        stats = [stat]
    elif family == SUMMARY:
        sql, values = _summary_sql(query)
        found, truncated = _ranked(sql, values, ngroups, max_groups)
        names = dict(QUANTILES)
        present = set()
        for row in found:
            stat = names.get(row[ngroups + 1])
            if stat:
                present.add(stat)
                cells.setdefault((tuple(row[:ngroups]), row[ngroups]), {})[stat] = row[ngroups + 2]
        stats = [stat for _, stat in QUANTILES if stat in present]
    else:
        raw, truncated = _histogram_cells(family, query, first_bucket, max_groups)
        cells = _histogram_values(family, raw, step)
        stats = ["p50", "p95", "p99", "rate"]

    buckets = [first_bucket + dt.timedelta(seconds=step * i) for i in range(steps)]
    times = [_epoch_ms(bucket) for bucket in buckets]
    by_group = defaultdict(dict)
    for (labels, bucket), values in cells.items():
        by_group[labels][bucket] = values
    data = []
    for labels in sorted(by_group, key=_label_order):
        per_bucket = by_group[labels]
        label_dict = dict(zip(group_keys, labels))
        for stat in stats:
            points = [[ms, per_bucket.get(bucket, {}).get(stat)] for ms, bucket in zip(times, buckets)]
            data.append({"labels": label_dict, "stat": stat, "points": points})
    response["data"] = data
    response["truncated"] = truncated
    return response

"""/api/v1/metrics and /api/v1/metrics/{name}/series against real PostgreSQL: points are
built as OTLP protobufs, stored through the real ingest path (convert + writer), and the
answers are checked against values computed by hand."""

import math
import os
import time

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from dashboards.api.metrics import exponential_quantile, histogram_quantile
from ingest import convert, writer

pytestmark = pytest.mark.django_db(transaction=True)

S = 1_000_000_000
MINUTE = 60 * S
DELTA, CUMULATIVE = 1, 2
T0 = (time.time_ns() // (10 * MINUTE) - 3) * 10 * MINUTE  # on a 10-minute boundary, 20-30 minutes ago
RANGE = {"start": str(T0 // 1_000_000), "end": str((T0 + 5 * MINUTE) // 1_000_000), "step": "60"}
BUCKET_MS = [(T0 + i * MINUTE) // 1_000_000 for i in range(5)]


@pytest.fixture(autouse=True)
def public_read(settings):
    settings.PUBLIC_READ = True


def unique(prefix):
    return f"{prefix}-{os.urandom(4).hex()}"


def kvs(attrs):
    result = []
    for key, value in (attrs or {}).items():
        if isinstance(value, bool):
            any_value = AnyValue(bool_value=value)
        elif isinstance(value, int):
            any_value = AnyValue(int_value=value)
        else:
            any_value = AnyValue(string_value=value)
        result.append(KeyValue(key=key, value=any_value))
    return result


class Export:
    """One ExportMetricsServiceRequest; .metric() adds a metric to a resource of a service."""

    def __init__(self):
        self.request = ExportMetricsServiceRequest()
        self.scopes = {}

    def metric(self, service, name, unit="", description="", resource=None):
        key = (service, tuple(sorted((resource or {}).items())))
        if key not in self.scopes:
            resource_metrics = self.request.resource_metrics.add()
            resource_metrics.resource.attributes.extend(kvs({"service.name": service, **(resource or {})}))
            scope_metrics = resource_metrics.scope_metrics.add()
            scope_metrics.scope.name = "tests"
            self.scopes[key] = scope_metrics
        return self.scopes[key].metrics.add(name=name, unit=unit, description=description)

    def store(self):
        batch = convert.convert_metrics(self.request)
        assert batch.rejected == 0, batch.error
        writer.write_metrics(batch)


def number_points(data, points):
    """points: (time_ns, value, attrs[, start_ns])."""
    for point in points:
        at, value, attrs = point[:3]
        data_point = data.data_points.add(time_unix_nano=at, start_time_unix_nano=point[3] if len(point) > 3 else 0)
        if isinstance(value, int):
            data_point.as_int = value
        else:
            data_point.as_double = value
        data_point.attributes.extend(kvs(attrs))


def series(client, name, **query):
    response = client.get(f"/api/v1/metrics/{name}/series", {**RANGE, **query})
    assert response.status_code == 200, response.content
    return response.json()


def values(entry):
    return [value for _, value in entry["points"]]


def by_stat(body):
    return {entry["stat"]: values(entry) for entry in body["data"]}


def close(actual, expected):
    assert len(actual) == len(expected), (actual, expected)
    for a, e in zip(actual, expected):
        assert (a is None and e is None) or (a is not None and e is not None and math.isclose(a, e, rel_tol=1e-9)), \
            (actual, expected)


# --- Gauges, groups, filters --------------------------------------------------------------------


def store_gauge(name, service, other_service):
    export = Export()
    metric = export.metric(service, name, unit="1", description="queue depth",
                           resource={"deployment.environment": "prod"})
    number_points(metric.gauge, [
        (T0 + 10 * S, 10.0, {"host": "a", "method": "GET"}),
        (T0 + 40 * S, 20, {"host": "a", "method": "GET"}),
        (T0 + 70 * S, 30.0, {"host": "a", "method": "GET"}),
        (T0 + 20 * S, 40.0, {"host": "b", "method": "POST"}),
        (T0 + 25 * S, float("nan"), {"host": "b", "method": "POST"}),  # not a number: left out
        (T0 - 5 * S, 1000.0, {"host": "a", "method": "GET"}),  # before the range
    ])
    metric = export.metric(other_service, name, unit="1", resource={"deployment.environment": "staging"})
    number_points(metric.gauge, [(T0 + 15 * S, 60.0, {"host": "a", "method": "GET"})])
    export.store()


def test_a_gauge_is_averaged_per_step_and_group(client):
    name, service, other = unique("gauge"), unique("svc"), unique("svc")
    store_gauge(name, service, other)

    body = series(client, name)
    assert body["metric"] == {"name": name, "type": "gauge", "unit": "1"}
    assert body["step_seconds"] == 60 and body["truncated"] is False
    [entry] = body["data"]
    assert entry["labels"] == {} and entry["stat"] == "value"
    assert [at for at, _ in entry["points"]] == BUCKET_MS
    close(values(entry), [(10 + 20 + 40 + 60) / 4, 30, None, None, None])

    body = series(client, name, group_by="host,method")
    got = {tuple(sorted(e["labels"].items())): values(e) for e in body["data"]}
    assert got == {(("host", "a"), ("method", "GET")): [(10 + 20 + 60) / 3, 30, None, None, None],
                   (("host", "b"), ("method", "POST")): [40, None, None, None, None]}

    body = series(client, name, group_by="service.name")
    got = {e["labels"]["service.name"]: values(e) for e in body["data"]}
    assert got == {service: [70 / 3, 30, None, None, None], other: [60, None, None, None, None]}

    # point attribute filter, resource attribute filter, service filter
    close(values(series(client, name, **{"attr.host": "a"})["data"][0]), [30, 30, None, None, None])
    close(values(series(client, name, **{"attr.deployment.environment": "staging"})["data"][0]),
          [60, None, None, None, None])
    close(values(series(client, name, service=service, **{"attr.method": "POST"})["data"][0]),
          [40, None, None, None, None])
    assert series(client, name, **{"attr.host": "nowhere"})["data"] == []
    close(values(series(client, name, environment="prod")["data"][0]), [70 / 3, 30, None, None, None])


def test_too_many_groups_are_cut_and_flagged(client, monkeypatch):
    from dashboards.api import metrics

    name, service = unique("gauge"), unique("svc")
    store_gauge(name, service, unique("svc"))
    monkeypatch.setattr(metrics, "MAX_GROUPS", 1)
    body = series(client, name, group_by="host")
    assert body["truncated"] is True and [e["labels"] for e in body["data"]] == [{"host": "a"}]
    body = series(client, name, group_by="host", **{"attr.host": "b"})
    assert body["truncated"] is False and [e["labels"] for e in body["data"]] == [{"host": "b"}]


# --- Sums ---------------------------------------------------------------------------------------


def test_a_counter_becomes_a_rate_and_a_reset_counts_the_new_value(client):
    name, service = unique("requests"), unique("svc")
    export = Export()
    metric = export.metric(service, name, unit="{request}")
    metric.sum.aggregation_temporality, metric.sum.is_monotonic = CUMULATIVE, True
    first, second = T0 - 10 * MINUTE, T0 + 80 * S
    number_points(metric.sum, [
        (T0 - 30 * S, 100, {"k": "a"}, first),  # before the range: only the base of the first increase
        (T0 + 30 * S, 160, {"k": "a"}, first),  # +60 in step 0
        (T0 + 90 * S, 40, {"k": "a"}, second),  # reset: +40 in step 1
        (T0 + 150 * S, 100, {"k": "a"}, second),  # +60 in step 2
        (T0 + 30 * S, 5, {"k": "b"}, first),  # first point of the series: no increase yet
        (T0 + 90 * S, 35, {"k": "b"}, first),  # +30 in step 1
    ])
    export.store()

    body = series(client, name)
    assert body["metric"]["type"] == "sum"
    [entry] = body["data"]
    assert entry["stat"] == "rate"
    close(values(entry), [60 / 60, 70 / 60, 60 / 60, None, None])
    got = {e["labels"]["k"]: values(e) for e in series(client, name, group_by="k")["data"]}
    close(got["a"], [1.0, 40 / 60, 1.0, None, None])
    close(got["b"], [None, 0.5, None, None, None])


def test_delta_sums_and_up_down_counters(client):
    delta_name, updown_name, service = unique("bytes"), unique("inflight"), unique("svc")
    export = Export()
    metric = export.metric(service, delta_name, unit="By")
    metric.sum.aggregation_temporality, metric.sum.is_monotonic = DELTA, True
    number_points(metric.sum, [(T0 + 10 * S, 30, {}), (T0 + 50 * S, 90.0, {}), (T0 + 70 * S, 6, {"x": "y"})])
    metric = export.metric(service, updown_name)
    metric.sum.aggregation_temporality, metric.sum.is_monotonic = CUMULATIVE, False
    number_points(metric.sum, [(T0 + 10 * S, 5, {"k": "a"}), (T0 + 50 * S, 7, {"k": "a"}),
                               (T0 + 20 * S, 3, {"k": "b"}), (T0 + 130 * S, -2, {"k": "b"})])
    export.store()

    [entry] = series(client, delta_name)["data"]
    assert entry["stat"] == "rate"
    close(values(entry), [2.0, 0.1, None, None, None])
    [entry] = series(client, updown_name)["data"]
    assert entry["stat"] == "value"
    close(values(entry), [10, None, -2, None, None])


# --- Histograms -------------------------------------------------------------------------------


def histogram_points(data, points):
    """points: (time_ns, start_ns, bounds, counts, attrs, min or None)."""
    for at, start, bounds, counts, attrs, minimum in points:
        point = data.data_points.add(time_unix_nano=at, start_time_unix_nano=start, count=sum(counts))
        point.explicit_bounds.extend(bounds)
        point.bucket_counts.extend(counts)
        point.attributes.extend(kvs(attrs))
        if minimum is not None:
            point.min = minimum


def test_histogram_quantiles_interpolate_inside_the_bucket(client):
    name, delta_name, service = unique("latency"), unique("latency-delta"), unique("svc")
    export = Export()
    metric = export.metric(service, name, unit="ms")
    metric.histogram.aggregation_temporality = CUMULATIVE
    bounds, first, second = [1.0, 5.0, 10.0], T0 - MINUTE, T0 + 140 * S
    histogram_points(metric.histogram, [
        (T0 - 30 * S, first, bounds, [0, 0, 0, 0], {}, None),
        (T0 + 30 * S, first, bounds, [10, 20, 60, 10], {}, None),
        (T0 + 90 * S, first, bounds, [12, 22, 70, 10], {}, None),
        (T0 + 150 * S, second, bounds, [4, 0, 0, 0], {}, 0.5),  # a reset
    ])
    metric = export.metric(service, delta_name, unit="ms")
    metric.histogram.aggregation_temporality = DELTA
    histogram_points(metric.histogram, [
        (T0 + 10 * S, 0, [1.0, 2.0, 4.0], [1, 1, 0, 0], {"r": "x"}, None),
        (T0 + 40 * S, 0, [1.0, 2.0, 4.0], [0, 1, 1, 0], {"r": "y"}, None),
    ])
    export.store()

    body = series(client, name)
    assert body["metric"] == {"name": name, "type": "histogram", "unit": "ms"}
    stats = by_stat(body)
    assert sorted(stats) == ["p50", "p95", "p99", "rate"]
    # step 0: [10, 20, 60, 10]: rank 50 falls in (5, 10] after 30; ranks 95 and 99 in +Inf -> 10
    # step 1: [2, 2, 10, 0]: ranks 7, 13.3, 13.86 in (5, 10] after 4
    # step 2: reset to [4, 0, 0, 0] with min 0.5: rank 2 of 4 in (0.5, 1]
    close(stats["p50"], [5 + 5 * 20 / 60, 5 + 5 * 3 / 10, 0.5 + 0.5 * 2 / 4, None, None])
    close(stats["p95"], [10, 5 + 5 * 9.3 / 10, 0.5 + 0.5 * 3.8 / 4, None, None])
    close(stats["p99"], [10, 5 + 5 * 9.86 / 10, 0.5 + 0.5 * 3.96 / 4, None, None])
    close(stats["rate"], [100 / 60, 14 / 60, 4 / 60, None, None])

    stats = by_stat(series(client, delta_name))  # both series added up: [1, 2, 1, 0]
    close(stats["p50"], [1 + 1 * (2 - 1) / 2, None, None, None, None])
    close(stats["p99"], [2 + 2 * (3.96 - 3) / 1, None, None, None, None])
    close(stats["rate"], [4 / 60, None, None, None, None])


def test_exponential_histograms_merge_scales(client):
    name, cumulative_name, service = unique("exp"), unique("exp-cum"), unique("svc")
    export = Export()
    metric = export.metric(service, name, unit="s")
    metric.exponential_histogram.aggregation_temporality = DELTA
    data = metric.exponential_histogram.data_points
    point = data.add(time_unix_nano=T0 + 10 * S, scale=0, zero_count=1, count=5)
    point.positive.offset = 0
    point.positive.bucket_counts.extend([1, 2, 1])  # (1, 2]: 1, (2, 4]: 2, (4, 8]: 1
    point = data.add(time_unix_nano=T0 + 20 * S, scale=1, count=3)
    point.positive.offset = 2
    point.positive.bucket_counts.extend([3])  # (2, 2.83] at scale 1 -> (2, 4] at scale 0
    point.attributes.extend(kvs({"other": "series"}))

    metric = export.metric(service, cumulative_name, unit="s")
    metric.exponential_histogram.aggregation_temporality = CUMULATIVE
    data = metric.exponential_histogram.data_points
    point = data.add(time_unix_nano=T0 - 30 * S, start_time_unix_nano=T0 - MINUTE, scale=1, count=2)
    point.positive.offset = 2
    point.positive.bucket_counts.extend([1, 1])  # (2, 2.83]: 1, (2.83, 4]: 1
    point = data.add(time_unix_nano=T0 + 30 * S, start_time_unix_nano=T0 - MINUTE, scale=0, count=4)
    point.positive.offset = 1
    point.positive.bucket_counts.extend([4])  # the SDK downscaled: (2, 4]: 4, so +2 since the last point
    export.store()

    stats = by_stat(series(client, name))
    # merged at scale 0: zero: 1, (1, 2]: 1, (2, 4]: 5, (4, 8]: 1; 8 in all
    close(stats["p50"], [2 + 2 * (4 - 2) / 5, None, None, None, None])
    close(stats["p95"], [4 + 4 * (7.6 - 7) / 1, None, None, None, None])
    close(stats["p99"], [4 + 4 * (7.92 - 7) / 1, None, None, None, None])
    close(stats["rate"], [8 / 60, None, None, None, None])

    stats = by_stat(series(client, cumulative_name))
    close(stats["p50"], [2 + 2 * 1 / 2, None, None, None, None])
    close(stats["rate"], [2 / 60, None, None, None, None])


def test_quantile_functions():
    assert histogram_quantile(0.5, [1.0, 2.0], [0, 0, 0]) is None
    assert histogram_quantile(0.5, [1.0, 2.0], [0, 0, 4]) == 2.0  # +Inf: the highest finite bound
    assert histogram_quantile(0.5, [1.0, 2.0], [4, 0, 0]) == 0.5  # from 0
    assert histogram_quantile(0.5, [-1.0, 2.0], [4, 0, 0]) == -1.0  # a bound not above 0
    assert exponential_quantile(0.5, -1, 0, {0: 2}, {}) == 2.5  # base 4: (1, 4]
    assert exponential_quantile(0.25, 0, 0, {}, {0: 2, 1: 2}) == -3.0  # [-4, -2) first
    assert exponential_quantile(0.5, 0, 2, {}, {}) == 0.0


def test_summaries_average_each_quantile(client):
    name, service = unique("summary"), unique("svc")
    export = Export()
    metric = export.metric(service, name, unit="ms")
    for at, quantiles in ((T0 + 10 * S, (10, 20, 30)), (T0 + 50 * S, (14, 40, 50)), (T0 + 70 * S, (1, 2, 3))):
        point = metric.summary.data_points.add(time_unix_nano=at, count=10, sum=100)
        for q, value in zip((0.5, 0.95, 0.99), quantiles):
            point.quantile_values.add(quantile=q, value=value)
        point.quantile_values.add(quantile=0.75, value=999)  # not one of the stats
    export.store()

    body = series(client, name)
    assert body["metric"]["type"] == "summary"
    stats = by_stat(body)
    assert list(stats) == ["p50", "p95", "p99"]
    close(stats["p50"], [12, 1, None, None, None])
    close(stats["p95"], [30, 2, None, None, None])
    close(stats["p99"], [40, 3, None, None, None])


# --- Steps, errors, the catalogue ------------------------------------------------------------------


def test_the_default_step_gives_60_to_120_points(client):
    name, service = unique("recent"), unique("svc")
    export = Export()
    number_points(export.metric(service, name).gauge, [(time.time_ns() - 5 * S, 1.0, {})])
    export.store()
    for lookback, step in (("15m", 10), ("1h", 30), ("6h", 300), ("1d", 900), ("7d", 7200)):
        body = series(client, name, start="", end="", step="", lookback=lookback)
        assert body["step_seconds"] == step
        [entry] = body["data"]
        assert 60 <= len(entry["points"]) <= 121
        assert 1.0 in values(entry)[-2:] and values(entry)[0] is None  # 5 s ago: the last step or the one before
    assert series(client, name, step="5m")["step_seconds"] == 300
    assert series(client, name, step="120")["step_seconds"] == 120
    body = series(client, name, start=str(T0 // 1_000_000), end=str(T0 // 1_000_000 + 5 * 86400_000), step="")
    assert body["step_seconds"] == 3600 and len(body["data"][0]["points"]) in (120, 121)  # steps on the hour


def test_bad_parameters_are_400_naming_them_and_unknown_metrics_404(client):
    name, service = unique("gauge"), unique("svc")
    store_gauge(name, service, unique("svc"))
    url = f"/api/v1/metrics/{name}/series"
    for query, parameter in (
        ({"group_by": "a,b,c,d,e,f"}, "group_by"),
        ({"group_by": "a,,b"}, "group_by"),
        ({"step": "abc"}, "step"),
        ({"step": "0"}, "step"),
        ({"step": "1.5s"}, "step"),
        ({"step": "1s", "start": "", "end": "", "lookback": "7d"}, "step"),
        ({"start": "yesterday"}, "start"),
        ({"start": "-62135596700000", "end": "-62135596000000", "step": "1000"}, "start"),
        ({"start": "", "end": "-62135596800000", "lookback": "1h"}, "end"),
        ({"lookback": "forever", "start": "", "end": ""}, "lookback"),
        ({"attr.": "x"}, "attr."),
        ({"attr.k": "x" * 2000}, "attr.k"),
        ({"service": "\x00"}, "service"),
    ):
        response = client.get(url, {**RANGE, **query})
        assert response.status_code == 400, (query, response.content)
        assert response.json()["error"]["parameter"] == parameter, query
    response = client.get(f"/api/v1/metrics/{unique('missing')}/series", RANGE)
    assert response.status_code == 404 and response.json()["error"]["status"] == 404
    response = client.get("/api/v1/metrics/bad\x00name/series", RANGE)
    assert response.status_code == 404
    response = client.get("/api/v1/metrics", {"lookback": "nope"})
    assert response.status_code == 400 and response.json()["error"]["parameter"] == "lookback"


def test_reads_need_authentication_unless_public(client, settings, django_user_model):
    from dashboards.models import ApiToken

    settings.PUBLIC_READ = False
    assert client.get("/api/v1/metrics").status_code == 401
    user = django_user_model.objects.create_user(unique("user"))
    _, token = ApiToken.objects.issue(user)
    response = client.get("/api/v1/metrics", {"lookback": "1m"}, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200 and "data" in response.json()


def test_the_metric_list_has_types_units_services_and_attribute_keys(client):
    service, other = unique("svc"), unique("svc")
    gauge, counter, histogram = unique("a-gauge"), unique("b-counter"), unique("c-hist")
    store_gauge(gauge, service, other)
    export = Export()
    metric = export.metric(service, counter, unit="{request}", description="requests served")
    metric.sum.aggregation_temporality, metric.sum.is_monotonic = CUMULATIVE, True
    number_points(metric.sum, [(T0 + 10 * S, 1, {"route": "/a", "code": 200})])
    metric = export.metric(other, histogram, unit="ms")
    metric.histogram.aggregation_temporality = DELTA
    histogram_points(metric.histogram, [(T0 + 10 * S, 0, [1.0], [1, 0], {"route": "/b"}, None)])
    old_name = unique("old")
    old = export.metric(service, old_name)
    number_points(old.gauge, [(T0 - 20 * MINUTE, 1.0, {})])  # outside the range
    export.store()

    response = client.get("/api/v1/metrics", RANGE)
    assert response.status_code == 200
    found = {item["name"]: item for item in response.json()["data"] if item["name"] in (gauge, counter, histogram)}
    assert list(found) == [gauge, counter, histogram]  # sorted by name
    assert found[gauge] == {"name": gauge, "type": "gauge", "unit": "1", "description": "queue depth",
                            "temporality": None, "monotonic": False, "services": sorted([service, other]),
                            "attribute_keys": ["host", "method"]}
    assert found[counter] == {"name": counter, "type": "sum", "unit": "{request}", "description": "requests served",
                              "temporality": "cumulative", "monotonic": True, "services": [service],
                              "attribute_keys": ["code", "route"]}
    assert found[histogram]["type"] == "histogram" and found[histogram]["temporality"] == "delta"
    names = [item["name"] for item in response.json()["data"]]
    assert names == sorted(names) and old_name not in names

    listed = client.get("/api/v1/metrics", {**RANGE, "service": other}).json()["data"]
    assert {item["name"] for item in listed} == {gauge, histogram}
    listed = client.get("/api/v1/metrics", {**RANGE, "service": other, "environment": "staging"}).json()["data"]
    assert {item["name"] for item in listed} == {gauge}  # the histogram's resource has no environment
    listed = client.get("/api/v1/metrics", {**RANGE, "service": other, "environment": "prod"}).json()["data"]
    assert listed == []

"""ingest.convert: OTLP protobuf -> rows, without a server or a database."""

import json

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ingest import convert
from ingest.writer import SPAN_COLUMNS

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")


def request_with(*spans, service="svc"):
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "lib"
    for fields in spans:
        span = scope_spans.spans.add()
        span.trace_id = fields.get("trace_id", TRACE_ID)
        span.span_id = fields.get("span_id", SPAN_ID)
        span.parent_span_id = fields.get("parent_span_id", b"")
        span.name = fields.get("name", "op")
        span.start_time_unix_nano = fields.get("start", 1_700_000_000_123_456_789)
        span.end_time_unix_nano = fields.get("end", 1_700_000_000_223_456_789)
        for key, value in fields.get("attributes", {}).items():
            span.attributes.add(key=key, value=value)
    return request


def row_of(batch, index=0):
    return dict(zip(SPAN_COLUMNS, batch.rows[index]))


def test_every_anyvalue_type_keeps_its_type():
    values = {
        "s": AnyValue(string_value="text"), "b": AnyValue(bool_value=True), "i": AnyValue(int_value=-(2**63)),
        "d": AnyValue(double_value=3.0), "bytes": AnyValue(bytes_value=b"\x00\xff"),
        "nan": AnyValue(double_value=float("nan")), "inf": AnyValue(double_value=float("-inf")), "empty": AnyValue(),
    }
    values["arr"] = AnyValue()
    values["arr"].array_value.values.add(int_value=1)
    values["arr"].array_value.values.add(string_value="x")
    values["kv"] = AnyValue()
    values["kv"].kvlist_value.values.add(key="inner", value=AnyValue(double_value=0.5))
    encoded = row_of(convert.convert_traces(request_with({"attributes": values})))["attributes"]
    assert '"d":3.0' in encoded  # a double stays a double, even when whole
    assert json.loads(encoded) == {
        "s": "text", "b": True, "i": -(2**63), "d": 3.0, "bytes": {"bytesValue": "AP8="},
        "nan": {"doubleValue": "NaN"}, "inf": {"doubleValue": "-Infinity"}, "empty": None,
        "arr": [1, "x"], "kv": {"kvlistValue": {"inner": 0.5}},
    }


def test_times_are_kept_in_nanoseconds_and_duration_derived():
    row = row_of(convert.convert_traces(request_with({})))
    assert row["start_ns"] == 1_700_000_000_123_456_789
    assert row["end_ns"] == 1_700_000_000_223_456_789
    assert row["duration_ns"] == 100_000_000


def test_invalid_spans_are_counted_and_the_valid_ones_kept():
    batch = convert.convert_traces(request_with(
        {"trace_id": bytes(16)}, {"trace_id": b"\x01" * 15}, {"span_id": bytes(8)},
        {"parent_span_id": b"\x01\x02"}, {"start": 0}, {"name": "good"},
    ))
    assert batch.rejected == 5
    assert batch.error == "invalid trace_id: must be 16 bytes, not all zero"
    assert [row_of(batch, i)["name"] for i in range(len(batch.rows))] == ["good"]
    assert batch.trace_ids == {TRACE_ID}


def test_an_all_zero_parent_means_a_root_span():
    assert row_of(convert.convert_traces(request_with({"parent_span_id": bytes(8)})))["parent_span_id"] is None


def test_strings_are_bounded_and_nul_characters_replaced():
    long_value = AnyValue(string_value="v" * (convert.MAX_STRING + 10))
    batch = convert.convert_traces(request_with({"name": "a\x00b" + "n" * 5000, "attributes": {"k\x00": long_value}}))
    row = row_of(batch)
    assert row["name"] == ("a\ufffdb" + "n" * 5000)[: convert.MAX_NAME]
    attrs = json.loads(row["attributes"])
    assert attrs == {"k\ufffd": "v" * convert.MAX_STRING}


def test_deeply_nested_values_are_cut_not_recursed_forever():
    value = AnyValue(string_value="leaf")
    for _ in range(40):  # protobuf itself refuses about 100 levels
        outer = AnyValue()
        outer.array_value.values.append(value)
        value = outer
    attrs = json.loads(row_of(convert.convert_traces(request_with({"attributes": {"deep": value}})))["attributes"])
    depth = 0
    node = attrs["deep"]
    while isinstance(node, list):
        node, depth = node[0], depth + 1
    assert node is None and depth == convert.MAX_DEPTH


def test_the_service_name_comes_from_the_resource_or_is_unknown():
    batch = convert.convert_traces(request_with({}, service=""))
    assert row_of(batch)["service_name"] == convert.UNKNOWN_SERVICE
    assert row_of(convert.convert_traces(request_with({}, service="cart")))["service_name"] == "cart"


def test_identical_resources_share_one_id():
    request = request_with({}, service="a")
    request.resource_spans.append(request.resource_spans[0])
    batch = convert.convert_traces(request)
    assert len(batch.resources) == 1 and len(batch.rows) == 2


def test_metric_points_of_every_type_become_rows():
    request = ExportMetricsServiceRequest()
    scope_metrics = request.resource_metrics.add().scope_metrics.add()
    gauge = scope_metrics.metrics.add(name="g", unit="1")
    gauge.gauge.data_points.add(time_unix_nano=10, as_double=1.5)
    counter = scope_metrics.metrics.add(name="c")
    counter.sum.aggregation_temporality = 2
    counter.sum.is_monotonic = True
    counter.sum.data_points.add(time_unix_nano=10, as_int=7, attributes=[KeyValue(key="k", value=AnyValue(string_value="v"))])
    histogram = scope_metrics.metrics.add(name="h")
    histogram.histogram.data_points.add(time_unix_nano=10, count=3, sum=6.0, bucket_counts=[1, 2], explicit_bounds=[5.0])
    exponential = scope_metrics.metrics.add(name="e")
    point = exponential.exponential_histogram.data_points.add(time_unix_nano=10, count=2, scale=3, zero_count=1)
    point.positive.offset = 4
    point.positive.bucket_counts.extend([1])
    summary = scope_metrics.metrics.add(name="s")
    summary.summary.data_points.add(time_unix_nano=10, count=4, sum=2.0).quantile_values.add(quantile=0.5, value=0.4)
    scope_metrics.metrics.add(name="nodata")
    batch = convert.convert_metrics(request)
    assert batch.rejected == 1
    assert len(batch.rows) == 5 and len(batch.metrics) == 5
    by_type = {descriptor[4]: descriptor for descriptor in batch.metrics.values()}
    assert by_type[convert.SUM][5:7] == (2, True)
    gauge_row, sum_row, hist_row, exp_row, summary_row = batch.rows
    assert gauge_row[7] == 1.5 and sum_row[6] == 7 and json.loads(sum_row[4]) == {"k": "v"}
    assert (hist_row[8], hist_row[9], json.loads(hist_row[12]), json.loads(hist_row[13])) == (3, 6.0, [1, 2], [5.0])
    assert (exp_row[14], exp_row[15], json.loads(exp_row[17])) == (3, 1, {"offset": 4, "bucket_counts": [1]})
    assert json.loads(summary_row[19]) == [{"quantile": 0.5, "value": 0.4}]

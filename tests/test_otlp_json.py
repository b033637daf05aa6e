"""The OTLP/JSON codec on its own: no server, no database."""

import json
import math

import pytest
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from ingest import convert, otlp_json
from ingest.errors import InvalidArgument
from tests.conftest import SHARED_DATA

EXAMPLES = SHARED_DATA / "otlp-examples"


def one_span(**span_json):
    """A trace request body with one span (and its JSON fields as given)."""
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "s",
            "startTimeUnixNano": "1", **span_json}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def decoded_span(**span_json):
    return otlp_json.decode_traces(one_span(**span_json)).resource_spans[0].scope_spans[0].spans[0]


def attribute_body(value_json):
    return json.dumps({"resourceSpans": [{"resource": {"attributes": [{"key": "k", "value": value_json}]}}]}).encode()


def decoded_attribute(value_json):
    return otlp_json.decode_traces(attribute_body(value_json)).resource_spans[0].resource.attributes[0].value


def test_the_published_trace_example_decodes_to_the_request_it_describes():
    request = otlp_json.decode_traces((EXAMPLES / "trace.json").read_bytes())

    expected = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="my.service"))]),
        scope_spans=[ScopeSpans(
            scope=InstrumentationScope(name="my.library", version="1.0.0", attributes=[
                KeyValue(key="my.scope.attribute", value=AnyValue(string_value="some scope attribute"))]),
            spans=[Span(
                trace_id=bytes.fromhex("5B8EFFF798038103D269B633813FC60C"),
                span_id=bytes.fromhex("EEE19B7EC3C1B174"), parent_span_id=bytes.fromhex("EEE19B7EC3C1B173"),
                name="I'm a server span", kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=1544712660000000000, end_time_unix_nano=1544712661000000000,
                attributes=[KeyValue(key="my.span.attr", value=AnyValue(string_value="some value"))])])])])
    assert request == expected


def test_the_published_metrics_example_decodes_every_metric_type():
    request = otlp_json.decode_metrics((EXAMPLES / "metrics.json").read_bytes())

    [resource_metrics] = request.resource_metrics
    assert resource_metrics.resource.attributes[0].value.string_value == "my.service"
    [scope_metrics] = resource_metrics.scope_metrics
    assert (scope_metrics.scope.name, scope_metrics.scope.version) == ("my.library", "1.0.0")
    counter, gauge, histogram, exponential = scope_metrics.metrics
    assert (counter.name, counter.unit, counter.description) == ("my.counter", "1", "I am a Counter")
    assert counter.sum.aggregation_temporality == 1 and counter.sum.is_monotonic
    [point] = counter.sum.data_points
    assert point.WhichOneof("value") == "as_double" and point.as_double == 5.0
    assert point.start_time_unix_nano == point.time_unix_nano == 1544712660300000000
    assert point.attributes[0].key == "my.counter.attr"
    assert gauge.WhichOneof("data") == "gauge" and gauge.gauge.data_points[0].as_double == 10.0

    [hist] = histogram.histogram.data_points
    assert (hist.count, hist.sum, list(hist.bucket_counts), list(hist.explicit_bounds)) == (2, 2.0, [1, 1], [1.0])
    assert hist.HasField("min") and hist.min == 0.0 and hist.max == 2.0  # an explicit 0 is present, not unset

    [exp] = exponential.exponential_histogram.data_points
    assert (exp.count, exp.sum, exp.scale, exp.zero_count, exp.zero_threshold) == (3, 10.0, 0, 1, 0.0)
    assert (exp.positive.offset, list(exp.positive.bucket_counts)) == (1, [0, 2])
    assert (exp.min, exp.max) == (0.0, 5.0)


def test_snake_case_field_names_decode_like_camel_case():
    camel = (EXAMPLES / "trace.json").read_text()
    snake = (camel.replace("resourceSpans", "resource_spans").replace("scopeSpans", "scope_spans")
             .replace("traceId", "trace_id").replace("spanId", "span_id").replace("parentSpanId", "parent_span_id")
             .replace("startTimeUnixNano", "start_time_unix_nano").replace("endTimeUnixNano", "end_time_unix_nano")
             .replace("stringValue", "string_value"))
    assert "Span" not in snake.replace("I'm a server span", "")
    assert otlp_json.decode_traces(snake.encode()) == otlp_json.decode_traces(camel.encode())


def test_enum_names_decode_like_their_numbers():
    by_name = decoded_span(kind="SPAN_KIND_CLIENT", status={"code": "STATUS_CODE_ERROR", "message": "boom"})
    by_number = decoded_span(kind=3, status={"code": 2, "message": "boom"})
    assert by_name == by_number
    assert (by_name.kind, by_name.status.code) == (Span.SPAN_KIND_CLIENT, Status.STATUS_CODE_ERROR)


def test_hex_ids_decode_in_either_case():
    upper = decoded_span(traceId="5B8EFFF798038103D269B633813FC60C", spanId="EEE19B7EC3C1B174")
    lower = decoded_span(traceId="5b8efff798038103d269b633813fc60c", spanId="eee19b7ec3c1b174")
    assert upper.trace_id == lower.trace_id == bytes.fromhex("5b8efff798038103d269b633813fc60c")
    assert upper.span_id == lower.span_id == bytes.fromhex("eee19b7ec3c1b174")


def test_an_id_of_the_wrong_length_decodes_and_only_that_span_is_then_rejected():
    body = json.loads(one_span())
    good = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    short = dict(good, traceId="5b8efff798038103d269b633813fc6", spanId="eee19b7ec3c1b175")
    body["resourceSpans"][0]["scopeSpans"][0]["spans"].append(short)

    request = otlp_json.decode_traces(json.dumps(body).encode())

    assert len(request.resource_spans[0].scope_spans[0].spans[1].trace_id) == 15
    batch = convert.convert_traces(request)
    assert (len(batch.rows), batch.rejected) == (1, 1)
    assert "trace_id" in batch.error


@pytest.mark.parametrize("bad_id", ["zz8efff798038103d269b633813fc60c", "5b8efff798038103d269b633813fc60",
                                    "0x8efff798038103d269b633813fc60c", "5b 8e ff f7 98 03 81 03 d2 69 b6 33",
                                    "W46P95gDgQPSabYzgT/GDA=="])
def test_an_id_that_is_not_hex_is_invalid_argument_naming_the_field(bad_id):
    with pytest.raises(InvalidArgument, match=r"spans\[0\]\.traceId"):
        otlp_json.decode_traces(one_span(traceId=bad_id))


def test_64_bit_integers_decode_from_strings_and_numbers():
    as_string = decoded_span(startTimeUnixNano="18446744073709551615", endTimeUnixNano="1544712661000000000")
    as_number = decoded_span(startTimeUnixNano=18446744073709551615, endTimeUnixNano=1544712661000000000)
    as_float = decoded_span(startTimeUnixNano=18446744073709551615, endTimeUnixNano=1.544712661e18)
    assert as_string.start_time_unix_nano == as_number.start_time_unix_nano == 2**64 - 1
    assert as_string.end_time_unix_nano == as_float.end_time_unix_nano == 1544712661000000000
    assert decoded_attribute({"intValue": "-9223372036854775808"}).int_value == -2**63


@pytest.mark.parametrize("field, value", [
    ("startTimeUnixNano", "18446744073709551616"), ("startTimeUnixNano", -1), ("startTimeUnixNano", "1.5"),
    ("startTimeUnixNano", 1.5), ("startTimeUnixNano", "12abc"), ("startTimeUnixNano", True),
    ("droppedAttributesCount", 2**32), ("kind", 2**31), ("name", 3), ("name", ["a"]), ("attributes", {}),
    ("attributes", [3]), ("status", "ok"), ("status", []), ("kind", "SERVER"), ("kind", 1.5),
])
def test_a_value_of_the_wrong_type_or_range_is_invalid_argument_naming_the_field(field, value):
    with pytest.raises(InvalidArgument, match=rf"spans\[0\]\.{field}"):
        otlp_json.decode_traces(one_span(**{field: value}))


def test_doubles_decode_from_numbers_and_the_nan_and_infinity_strings():
    assert decoded_attribute({"doubleValue": 2.5}).double_value == 2.5
    assert decoded_attribute({"doubleValue": 3}).double_value == 3.0
    assert decoded_attribute({"doubleValue": "1e3"}).double_value == 1000.0
    assert math.isnan(decoded_attribute({"doubleValue": "NaN"}).double_value)
    assert decoded_attribute({"doubleValue": "Infinity"}).double_value == math.inf
    assert decoded_attribute({"doubleValue": "-Infinity"}).double_value == -math.inf
    with pytest.raises(InvalidArgument, match="doubleValue"):
        decoded_attribute({"doubleValue": "lots"})


def test_bytes_values_decode_from_standard_and_url_safe_base64():
    assert decoded_attribute({"bytesValue": "3q2+7w=="}).bytes_value == bytes.fromhex("deadbeef")
    assert decoded_attribute({"bytesValue": "3q2-7w"}).bytes_value == bytes.fromhex("deadbeef")
    with pytest.raises(InvalidArgument, match="bytesValue"):
        decoded_attribute({"bytesValue": "not base64!"})


def test_every_attribute_value_kind_decodes():
    value = decoded_attribute({"arrayValue": {"values": [
        {"stringValue": "s"}, {"boolValue": True}, {"intValue": "7"}, {"doubleValue": 0.5},
        {"kvlistValue": {"values": [{"key": "inner", "value": {"boolValue": False}}]}}, {}]}})
    items = value.array_value.values
    assert [item.WhichOneof("value") for item in items] == [
        "string_value", "bool_value", "int_value", "double_value", "kvlist_value", None]
    assert (items[0].string_value, items[1].bool_value) == ("s", True)
    assert (items[2].int_value, items[3].double_value) == (7, 0.5)
    assert items[4].kvlist_value.values[0].key == "inner"


def test_an_empty_kvlist_still_says_which_kind_it_is():
    assert decoded_attribute({"kvlistValue": {}}).WhichOneof("value") == "kvlist_value"


def test_two_kinds_in_one_attribute_value_are_invalid_argument():
    with pytest.raises(InvalidArgument, match="only one"):
        decoded_attribute({"stringValue": "a", "intValue": "1"})


def test_unknown_fields_and_nulls_are_ignored():
    span = decoded_span(somethingNew={"deep": [1, 2]}, status=None, name="kept")
    assert span.name == "kept" and not span.HasField("status")


def nested(depth):
    value = {"stringValue": "bottom"}
    for _ in range(depth - 1):
        value = {"arrayValue": {"values": [value]}}
    return value


def test_attribute_values_nest_up_to_32_levels_and_no_deeper():
    value = decoded_attribute(nested(32))
    for _ in range(31):
        value = value.array_value.values[0]
    assert value.string_value == "bottom"
    with pytest.raises(InvalidArgument, match="nested more than 32"):
        otlp_json.decode_traces(attribute_body(nested(33)))


def test_json_nested_far_too_deep_is_invalid_argument_not_a_recursion_error():
    with pytest.raises(InvalidArgument):
        otlp_json.decode_traces(b'{"resourceSpans":' + b"[" * 200_000 + b"]" * 200_000 + b"}")


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b"null", b'"text"', b"\xff\xfe\x00", b'{"resourceSpans": {}}',
                                  b'{"resourceSpans": [null]}', b"{}{}", b'{"a": 1' + b"0" * 5000 + b"}"])
def test_a_body_that_is_not_an_otlp_json_object_is_invalid_argument(body):
    with pytest.raises(InvalidArgument):
        otlp_json.decode_traces(body)


def test_an_empty_object_is_an_empty_request():
    assert otlp_json.decode_traces(b"{}") == ExportTraceServiceRequest()
    assert otlp_json.decode_metrics(b" { } ").ByteSize() == 0


def test_a_response_encodes_as_otlp_json():
    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = 2
    response.partial_success.error_message = "invalid trace_id"
    assert json.loads(otlp_json.encode(response)) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "invalid trace_id"}}
    assert json.loads(otlp_json.encode(status_pb2.Status(code=3, message="bad"))) == {"code": 3, "message": "bad"}


# --- properties ----------------------------------------------------------------------

any_values = st.recursive(
    st.one_of(
        st.builds(AnyValue, string_value=st.text(max_size=20)),
        st.builds(AnyValue, bool_value=st.booleans()),
        st.builds(AnyValue, int_value=st.integers(-2**63, 2**63 - 1)),
        st.builds(AnyValue, double_value=st.floats(allow_nan=False)),  # NaN != NaN would fail the comparison
        st.builds(AnyValue, bytes_value=st.binary(max_size=20)),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda values: AnyValue(array_value={"values": values})),
        st.lists(st.tuples(st.text(max_size=5), children), max_size=3).map(
            lambda pairs: AnyValue(kvlist_value={"values": [KeyValue(key=k, value=v) for k, v in pairs]})),
    ),
    max_leaves=10,
)

spans = st.builds(
    Span, trace_id=st.binary(min_size=16, max_size=16), span_id=st.binary(min_size=8, max_size=8),
    parent_span_id=st.sampled_from([b"", b"\x01" * 8]), name=st.text(max_size=20),
    kind=st.integers(0, 5), start_time_unix_nano=st.integers(0, 2**64 - 1),
    end_time_unix_nano=st.integers(0, 2**64 - 1),
    flags=st.integers(0, 2**32 - 1),
    attributes=st.lists(st.builds(KeyValue, key=st.text(max_size=10), value=any_values), max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(spans, min_size=1, max_size=3))
def test_a_request_encoded_as_otlp_json_decodes_back_to_itself(span_list):
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=span_list)])])
    assert otlp_json.decode_traces(otlp_json.encode(request)) == request


def decode_or_invalid(body):
    """Decode as traces and as metrics: each either works or raises InvalidArgument."""
    for decode in (otlp_json.decode_traces, otlp_json.decode_metrics):
        try:
            decode(body)
        except InvalidArgument as error:
            assert error.message  # a reason for the sender, never empty


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_nothing_but_invalid_argument(body):
    decode_or_invalid(body)


FIELD_NAMES = ["resourceSpans", "resourceMetrics", "scopeSpans", "scopeMetrics", "spans", "metrics", "resource",
               "attributes", "key", "value", "traceId", "spanId", "kind", "startTimeUnixNano", "sum", "gauge",
               "dataPoints", "asInt", "asDouble", "arrayValue", "values", "kvlistValue", "bytesValue", "intValue",
               "histogram", "bucketCounts", "status", "code", "events", "links", "x"]
json_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
    | st.sampled_from(["NaN", "Infinity", "00", "abcd", "SPAN_KIND_SERVER", "-1", "1e400"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(FIELD_NAMES), children,
                                                                         max_size=4),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_documents)
def test_random_otlp_shaped_json_raises_nothing_but_invalid_argument(document):
    decode_or_invalid(json.dumps(document).encode())


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["trace.json", "metrics.json"]), st.data())
def test_mutated_example_bodies_raise_nothing_but_invalid_argument(name, data):
    body = bytearray((EXAMPLES / name).read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(body) - 1))
        body[position] = data.draw(st.integers(0, 255))
    decode_or_invalid(bytes(body))

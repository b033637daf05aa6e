"""Hotspots over hand-built traces, through the real correlation and one SQL query."""

import datetime as dt
import os
import time

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ingest import convert, writer
from traces.correlate import correlate_traces
from traces.hotspots import hotspots

pytestmark = pytest.mark.django_db(transaction=True)
MS = 1_000_000


def trace(start, root_service, spans):
    """spans: (service, name, kind, start offset ms, duration ms, parent index or None)."""
    request = ExportTraceServiceRequest()
    trace_id = os.urandom(16)
    ids = [os.urandom(8) for _ in spans]
    for index, (service, name, kind, offset, duration, parent) in enumerate(spans):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
        span = resource_spans.scope_spans.add().spans.add(
            trace_id=trace_id, span_id=ids[index], name=name, kind=kind,
            parent_span_id=ids[parent] if parent is not None else b"",
            start_time_unix_nano=start + offset * MS, end_time_unix_nano=start + (offset + duration) * MS)
        if kind == 3 and service == root_service and name.startswith("SELECT"):
            span.attributes.add(key="db.system", value=AnyValue(string_value="postgresql"))
    writer.write_spans(convert.convert_traces(request))
    return trace_id


def test_hotspots_rank_operations_by_critical_path_share_in_all_and_in_slow_traces():
    api = f"api-{os.urandom(3).hex()}"
    payments = f"payments-{os.urandom(3).hex()}"
    start = time.time_ns() - 60 * 10**9
    ids = []
    for index in range(19):  # fast: 2 ms in the api, 8 ms in the database
        ids.append(trace(start + index * MS, api, [
            (api, "GET /buy", 2, 0, 10, None),
            (api, "SELECT orders", 3, 1, 8, 0),
        ]))
    slow = trace(start + 50 * MS, api, [  # slow: 98 ms waiting for payments
        (api, "GET /buy", 2, 0, 100, None),
        (api, "POST /pay", 3, 1, 98, 0),
        (payments, "POST /pay", 2, 1, 98, 1),
    ])
    correlate_traces(ids + [slow])
    window = (dt.datetime.fromtimestamp(start / 1e9 - 1, dt.timezone.utc), dt.datetime.now(dt.timezone.utc))
    rows = {(row["service"], row["operation"]): row for row in hotspots(*window, root_service=api)}

    # all traces: 19 x 10 ms + 100 ms = 290 ms of critical path
    assert rows[(api, "SELECT orders")]["critical_path_share"] == pytest.approx(19 * 8 / 290)
    assert rows[(payments, "POST /pay")]["critical_path_share"] == pytest.approx(98 / 290)
    assert rows[(api, "GET /buy")]["critical_path_share"] == pytest.approx((19 * 2 + 2) / 290)
    # slow traces (at or above p95 of GET /buy = 14.5 ms): only the 100 ms one
    assert rows[(payments, "POST /pay")]["slow_critical_path_share"] == pytest.approx(98 / 100)
    assert rows[(api, "SELECT orders")]["slow_critical_path_share"] == 0
    assert rows[(payments, "POST /pay")]["exemplar_trace_ids"] == [slow.hex()]
    assert rows[(api, "SELECT orders")]["self_time_p95_ns"] == pytest.approx(8 * MS)
    hottest = hotspots(*window, root_service=api)[0]
    assert (hottest["service"], hottest["operation"]) == (payments, "POST /pay")  # where the time goes when slow


def test_a_busy_window_is_read_from_a_uniform_sample_of_its_traces(monkeypatch):
    """Above SAMPLE_TRACES traces, hotspots read a sample chosen by trace id: the shares stay
    close to the exact ones and the exemplars are traces of the window."""
    from traces import hotspots as module

    api = f"busy-{os.urandom(3).hex()}"
    start = time.time_ns() - 5 * 60 * 10**9
    ids = set()
    for index in range(300):
        db = 10 + index % 30  # the database takes 10..39 ms of a 100 ms request
        ids.add(trace(start + index * MS, api, [
            (api, "GET /items", 2, 0, 100, None),
            (api, "SELECT items", 3, 5, db, 0),
        ]).hex())
    correlate_traces([bytes.fromhex(i) for i in ids])
    window = (dt.datetime.fromtimestamp(start / 1e9 - 60, dt.timezone.utc),
              dt.datetime.fromtimestamp(start / 1e9 + 60, dt.timezone.utc))
    exact = {row["operation"]: row for row in hotspots(*window, root_service=api)}
    monkeypatch.setattr(module, "SAMPLE_TRACES", 60)
    monkeypatch.setattr(module, "PROBE", dt.timedelta(hours=1))  # the whole window is the probe
    sampled = {row["operation"]: row for row in hotspots(*window, root_service=api)}
    assert exact["SELECT items"]["critical_path_share"] == pytest.approx(sum(10 + i % 30 for i in range(300)) / 30000)
    for operation in ("GET /items", "SELECT items"):
        assert sampled[operation]["critical_path_share"] == pytest.approx(
            exact[operation]["critical_path_share"], abs=0.03)
        assert set(sampled[operation]["exemplar_trace_ids"]) <= ids

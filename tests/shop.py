"""A small shop's traces for the API, page and SLO tests: known durations, known errors."""

import os
import time

from ingest import convert, writer
from tests.otlp_builders import spans_request
from traces.correlate import correlate_traces

MS = 1_000_000
SERVER, CLIENT = 2, 3


def checkout_trace(prefix, index, start_ns, error=False):
    """frontend GET /checkout (SERVER) -> frontend POST /pay (CLIENT) -> payment POST /pay (SERVER)
    -> payment SELECT (CLIENT, postgresql). The root lasts 100 + index ms."""
    trace_id = os.urandom(16)
    ids = [os.urandom(8) for _ in range(4)]
    front, pay = f"{prefix}-frontend", f"{prefix}-payment"
    total = (100 + index) * MS
    server_attributes = {"http.route": "/pay", "tenant": f"t-{index % 2}",
                         "http.response.status_code": 500 if error else 200}
    return trace_id, [
        dict(service=front, name="GET /checkout", kind=SERVER, trace_id=trace_id, span_id=ids[0],
             start_ns=start_ns, end_ns=start_ns + total, resource={"deployment.environment.name": "prod"}),
        dict(service=front, name="POST /pay", kind=CLIENT, trace_id=trace_id, span_id=ids[1], parent=ids[0],
             start_ns=start_ns + 10 * MS, end_ns=start_ns + total - 10 * MS,
             resource={"deployment.environment.name": "prod"}),
        dict(service=pay, name="POST /pay", kind=SERVER, trace_id=trace_id, span_id=ids[2], parent=ids[1],
             start_ns=start_ns + 15 * MS, end_ns=start_ns + total - 15 * MS, status=2 if error else 0,
             message="card declined" if error else "", attributes=server_attributes),
        dict(service=pay, name="SELECT", kind=CLIENT, trace_id=trace_id, span_id=ids[3], parent=ids[2],
             start_ns=start_ns + 20 * MS, end_ns=start_ns + 40 * MS, attributes={"db.system": "postgresql"}),
    ]


def store_checkouts(prefix, count=8, errors=(2, 5, 6), minutes_ago=10):
    """count checkout traces a minute apart, the first `minutes_ago` minutes ago, failing at
    payment where their index is in errors; stored and correlated. Returns their trace ids."""
    ids = []
    now = time.time_ns()
    for index in range(count):
        trace_id, spans = checkout_trace(prefix, index, now - (minutes_ago - index) * 60_000_000_000,
                                         error=index in errors)
        writer.write_spans(convert.convert_traces(spans_request(spans)))
        ids.append(trace_id)
    correlate_traces(ids)
    return ids

"""/metrics on the web port: ingest's own health in Prometheus text format."""

import re
import uuid

from tests.otlp_builders import trace_request
from tests.processes import wait_until
from tests.test_ingest_contract import export


def figure(text, name):
    match = re.search(rf"^sightline_ingest_{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_metrics_show_what_ingest_received_stored_and_rejected(ingest_server, client):
    before = client.get("/metrics").content.decode()
    request = trace_request(f"metrics-{uuid.uuid4().hex[:8]}", spans=7)
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = bytes(16)  # one invalid span
    export(ingest_server["grpc"], request)

    def moved():
        after = client.get("/metrics").content.decode()
        return (figure(after, "spans_stored_total") or 0) >= (figure(before, "spans_stored_total") or 0) + 6

    wait_until(moved, 15, "the stored-spans counter to move")  # ingest reports every 2 s
    response = client.get("/metrics")
    text = response.content.decode()
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert figure(text, "spans_rejected_total") >= (figure(before, "spans_rejected_total") or 0) + 1
    assert figure(text, "spans_received_total") >= (figure(before, "spans_received_total") or 0) + 7
    assert figure(text, "batches_written_total") >= 1
    assert figure(text, "processes") >= 1 and figure(text, "in_flight") is not None
    assert "# TYPE sightline_ingest_write_seconds histogram" in text
    assert figure(text, "write_seconds_count") >= 1
    assert re.search(r'^sightline_ingest_write_seconds_bucket\{le="\+Inf"\} \d+$', text, re.MULTILINE)

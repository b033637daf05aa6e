"""The Node.js OpenTelemetry trace exporters work unchanged against Sightline.

tests/node pins @opentelemetry/exporter-trace-otlp-grpc, -http (OTLP/JSON) and -proto;
`npm ci` installs them once per session. For each protocol, tests/node/send_spans.mjs
sends one trace of known content to the live ingest process, and the test checks field
by field what PostgreSQL holds for it.

Without node or npm these tests are skipped, saying why; under CI (CI=true) they fail
instead, so a CI machine without Node.js cannot pass them silently.
"""

import datetime as dt
import json
import os
import shutil
import subprocess
import uuid

import pytest

from tests.conftest import ROOT
from traces.models import Resource, Scope, Span

NODE_DIR = ROOT / "tests" / "node"
PROTOCOLS = ("grpc", "http-json", "http-proto")
NPM_TIMEOUT = 300  # seconds; npm ci from a cold cache downloads about 50 packages
SEND_TIMEOUT = 60  # seconds; a send takes well under one, the exporter gives up after five
NS = 1_000_000_000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
FLAGS_SAMPLED_LOCAL = 0x101  # W3C "sampled", and OTLP's "has is_remote" bit with is_remote false
SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"


def in_ci():
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def npm_install():
    """Install tests/node exactly as the lock file says (npm install only if there is none)."""
    command = ["npm", "ci"] if (NODE_DIR / "package-lock.json").exists() else ["npm", "install"]
    result = subprocess.run([*command, "--no-audit", "--no-fund", "--prefer-offline"], cwd=NODE_DIR,
                            capture_output=True, text=True, timeout=NPM_TIMEOUT)
    assert result.returncode == 0, f"`{' '.join(command)}` in tests/node failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="session")
def node_exporters():
    """The pinned Node.js packages, installed once per session."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        reason = f"{' and '.join(missing)} not found on PATH; the Node.js exporter tests need Node.js 18.19+ with npm"
        if in_ci():
            pytest.fail(f"{reason}. CI is set, so this is a failure, not a skip.", pytrace=False)
        pytest.skip(reason)
    npm_install()


def send(protocol, endpoint):
    """Run send_spans.mjs; return the test id it was given and the ids it printed."""
    test_id = uuid.uuid4().hex
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    result = subprocess.run(["node", "send_spans.mjs", protocol, endpoint, test_id], cwd=NODE_DIR, env=env,
                            capture_output=True, text=True, timeout=SEND_TIMEOUT)
    assert result.returncode == 0, f"send_spans.mjs {protocol} exited {result.returncode}:\n{result.stderr}"
    return test_id, json.loads(result.stdout)


def endpoint(ingest_server, protocol):
    return f"http://{ingest_server['grpc']}" if protocol == "grpc" else ingest_server["http"]


def typed(value):
    """value with each scalar paired with its type, so 200 != 200.0 and True != 1 in comparisons."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def stored(span):
    """The stored span as a plain dict of its columns, ids in hex."""
    parent = span.parent_span_id
    return {
        "trace_id": bytes(span.trace_id).hex(), "span_id": bytes(span.span_id).hex(),
        "parent_span_id": bytes(parent).hex() if parent is not None else None,
        "name": span.name, "kind": span.kind, "start_time": span.start_time,
        "start_ns": span.start_ns, "end_ns": span.end_ns, "duration_ns": span.duration_ns,
        "status_code": span.status_code, "status_message": span.status_message,
        "trace_state": span.trace_state, "flags": span.flags, "service_name": span.service_name,
        "attributes": span.attributes, "events": span.events, "links": span.links,
        "dropped": [span.dropped_attributes_count, span.dropped_events_count, span.dropped_links_count],
    }


def spans_of_trace(trace_id):
    return {span.name: span for span in Span.objects.filter(trace_id=bytes.fromhex(trace_id))}


def timing(base, start, end):
    """start_ns, end_ns, duration_ns and start_time for [seconds, ns] offsets from base seconds."""
    start_ns, end_ns = (base + start[0]) * NS + start[1], (base + end[0]) * NS + end[1]
    return {"start_ns": start_ns, "end_ns": end_ns, "duration_ns": end_ns - start_ns,
            "start_time": EPOCH + dt.timedelta(microseconds=start_ns // 1000)}


def expected_server_span(sent, protocol, test_id):
    base = sent["base_seconds"]
    return {
        "trace_id": sent["trace_id"], "span_id": sent["server_span_id"], "parent_span_id": None,
        "name": "GET /checkout/{id}", "kind": 2,  # SERVER
        **timing(base, (0, 100_000_001), (1, 350_000_123)),
        "status_code": 0, "status_message": "", "trace_state": "", "flags": FLAGS_SAMPLED_LOCAL,
        "service_name": f"node-{protocol}",
        "attributes": {
            "http.request.method": "GET",
            "sightline.unicode": "café ☕ 東京",
            "sightline.test_id": test_id,
            "http.response.status_code": 200,
            "sightline.negative_int": -42,
            "sightline.max_safe_int": 2**53 - 1,
            "sightline.load": 0.75,
            "sightline.negative_double": -2.5e-7,
            "user.authenticated": True,
            "sightline.cache_warm": False,
            "http.request.header.accept": ["application/json", "text/html"],
            "sightline.retry_delays_ms": [100, 200, 400],
            "sightline.ratios": [0.5, 1.25],
            "sightline.checks": [True, False],
        },
        "events": [{
            "time_unix_nano": base * NS + 150_000_000, "name": "cache.miss",
            "attributes": {"cache.key": "cart:42", "cache.attempt": 2, "cache.latency_ms": 1.5, "cache.cold": True},
            "dropped_attributes_count": 0,
        }],
        "links": [],
        "dropped": [0, 0, 0],
    }


def expected_client_span(sent, protocol):
    return {
        "trace_id": sent["trace_id"], "span_id": sent["client_span_id"], "parent_span_id": sent["server_span_id"],
        "name": "POST payments", "kind": 3,  # CLIENT
        **timing(sent["base_seconds"], (0, 200_000_002), (0, 900_000_003)),
        "status_code": 2, "status_message": "payment service answered 503",  # ERROR
        "trace_state": "", "flags": FLAGS_SAMPLED_LOCAL, "service_name": f"node-{protocol}",
        "attributes": {"server.address": "payments.internal", "server.port": 8443},
        "events": [],
        "links": [{
            "trace_id": sent["linked_trace_id"], "span_id": sent["linked_span_id"], "trace_state": "",
            "attributes": {"link.reason": "retry-of", "sightline.attempt": 3},
            "dropped_attributes_count": 0, "flags": FLAGS_SAMPLED_LOCAL,
        }],
        "dropped": [0, 0, 0],
    }


def expected_linked_span(sent, protocol):
    return {
        "trace_id": sent["linked_trace_id"], "span_id": sent["linked_span_id"], "parent_span_id": None,
        "name": "nightly-batch", "kind": 1,  # INTERNAL
        **timing(sent["base_seconds"], (-5, 0), (-4, 500_000_000)),
        "status_code": 0, "status_message": "", "trace_state": "", "flags": FLAGS_SAMPLED_LOCAL,
        "service_name": f"node-{protocol}", "attributes": {}, "events": [], "links": [], "dropped": [0, 0, 0],
    }


def sdk_version():
    """telemetry.sdk.version: the version of @opentelemetry/core that npm installed."""
    return json.loads((NODE_DIR / "node_modules" / "@opentelemetry" / "core" / "package.json").read_text())["version"]


def assert_resource_and_scope(spans, protocol, test_id):
    assert len({span.resource_id for span in spans}) == 1, "one resource for the whole request"
    assert len({span.scope_id for span in spans}) == 1, "one scope for the whole request"
    resource = Resource.objects.get(pk=spans[0].resource_id)
    assert resource.service_name == f"node-{protocol}"
    assert typed(resource.attributes) == typed({
        "service.name": f"node-{protocol}", "service.version": "3.1.4", "service.instance.id": test_id,
        "telemetry.sdk.language": "nodejs", "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version(),
    })
    assert resource.dropped_attributes_count == 0
    scope = Scope.objects.get(pk=spans[0].scope_id)
    assert (scope.name, scope.version, scope.attributes, scope.schema_url) == (
        f"sightline.tests.node.{protocol}", "0.4.2", {}, SCHEMA_URL)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_trace_from_the_node_exporter_is_stored_field_by_field(protocol, node_exporters, ingest_server):
    test_id, sent = send(protocol, endpoint(ingest_server, protocol))

    spans = spans_of_trace(sent["trace_id"])
    assert sorted(spans) == ["GET /checkout/{id}", "POST payments"]
    assert typed(stored(spans["GET /checkout/{id}"])) == typed(expected_server_span(sent, protocol, test_id))
    assert typed(stored(spans["POST payments"])) == typed(expected_client_span(sent, protocol))
    linked = spans_of_trace(sent["linked_trace_id"])
    assert list(linked) == ["nightly-batch"]
    assert typed(stored(linked["nightly-batch"])) == typed(expected_linked_span(sent, protocol))
    assert_resource_and_scope([*spans.values(), *linked.values()], protocol, test_id)

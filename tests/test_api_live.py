"""End to end over real processes: traces from the OpenTelemetry SDK exporter into a live
`serve` (ingest, Celery worker and beat, gunicorn), read back over HTTP with an API token
made by `manage.py create_api_token`, from Sightline's API and the Jaeger API."""

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest

from tests.conftest import database_url, sightline_env
from tests.processes import Proc, grpc_serving, http_ok, manage, wait_until
from tests.test_correlation_celery import FAST, send_traces

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def get(url, token=None):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_traces_sent_by_the_sdk_are_read_back_over_http_with_a_token(tmp_path, ports):
    env = sightline_env(ports, tmp_path / "data", DATABASE_URL=database_url(), REDIS_URL=os.environ["REDIS_URL"],
                        DJANGO_SUPERUSER_USERNAME="ops", DJANGO_SUPERUSER_PASSWORD="pw-ops-1",
                        DJANGO_SUPERUSER_EMAIL="ops@example.com", **FAST)
    subprocess.run(manage("createsuperuser", "--noinput"), env=env, check=True, capture_output=True)
    made = subprocess.run(manage("create_api_token", "ops"), env=env, check=True, capture_output=True, text=True)
    token = made.stdout.strip()
    proc = Proc(manage("serve"), env=env)
    base = f"http://127.0.0.1:{ports['web']}"
    try:
        wait_until(lambda: http_ok(f"{base}/healthz"), 90, "web /healthz", proc)
        wait_until(lambda: grpc_serving(ports["grpc"]), 30, "gRPC health SERVING", proc)
        prefix = f"live-{uuid.uuid4().hex[:6]}"
        send_traces(f"127.0.0.1:{ports['grpc']}", prefix, 20)

        def correlated():
            status, body = get(f"{base}/api/v1/services?lookback=15m", token)
            rows = {row["service"]: row for row in body.get("data", [])}
            return status == 200 and rows.get(f"{prefix}-frontend", {}).get("requests") == 20

        wait_until(correlated, 60, "20 traces correlated and served", proc)
        assert get(f"{base}/api/v1/services")[0] == 401  # no token
        assert get(f"{base}/api/v1/services", "sl_wrong")[0] == 401
        status, body = get(f"{base}/api/v1/dependencies?lookback=15m", token)
        edges = {(row["parent"], row["child"]): row["calls"] for row in body["data"]}
        assert edges[(f"{prefix}-frontend", f"{prefix}-checkout")] == 20
        assert edges[(f"{prefix}-checkout", "postgresql")] == 20
        status, body = get(f"{base}/api/traces?service={prefix}-checkout&lookback=15m&limit=5", token)
        assert status == 200 and len(body["data"]) == 5
        assert {span["operationName"] for span in body["data"][0]["spans"]} == {"GET /buy", "POST checkout",
                                                                                  "POST /checkout", "SELECT orders"}
        status, body = get(f"{base}/api/v1/openapi.json")
        assert status == 200 and "/api/v1/traces" in body["paths"]
    finally:
        proc.stop()

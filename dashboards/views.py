import time

from django.db import connection
from django.http import HttpResponse, JsonResponse

from dashboards.prometheus import render_prometheus
from ingest.health import INFLIGHT_KEY, STATS_KEY
from traces.redis_client import get_redis


def _check_database():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # any failure means "not healthy", with the reason
        return f"error: {type(exc).__name__}"


def _check_redis():
    try:
        get_redis().ping()
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def healthz(request):
    """Liveness and readiness for load balancers and Kubernetes probes."""
    checks = {"database": _check_database(), "redis": _check_redis()}
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503)


def prometheus_metrics(request):
    """Ingest's own health, summed over every ingest process, in Prometheus text format."""
    try:
        client = get_redis()
        stats = client.hgetall(STATS_KEY)
        inflight = client.hgetall(INFLIGHT_KEY)
    except Exception:
        return HttpResponse("# redis unavailable\n", status=503, content_type="text/plain; version=0.0.4")
    return HttpResponse(render_prometheus(stats, inflight, time.time()), content_type="text/plain; version=0.0.4")

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render


def _check_database():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # any failure means "not healthy", with the reason
        return f"error: {type(exc).__name__}"


def _check_redis():
    from traces.redis_client import get_redis

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


def home(request):
    return render(request, "home.html", {
        "grpc_port": settings.OTLP_GRPC_PORT,
        "http_port": settings.OTLP_HTTP_PORT,
        "host": request.get_host().split(":")[0],
    })

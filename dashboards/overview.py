"""Services overview: one row per service, unhealthy first, with sparklines."""

from django.conf import settings

from dashboards import queries
from dashboards.pages import health, page, sparkline

ORDER = {"failing": 0, "degraded": 1, "ok": 2, "idle": 3}


@page("dashboards/services.html")
def services(request, window):
    rows = queries.services(window.start, window.end, environment=window.environment)
    step = window.step
    buckets = queries.buckets(window.start, window.end, step)
    series = queries.red_series(window.start, window.end, step, environment=window.environment, entry=True)
    seconds = step.total_seconds()
    for row in rows:
        points = series.get(row["service"], {})
        row["state"] = health(row["error_rate"], row["requests"])
        row["error_pct"] = f"{row['error_rate'] * 100:.2f} %"
        row["spark_rate"] = sparkline([points.get(b, (0, 0, {}))[0] / seconds for b in buckets])
        row["spark_errors"] = sparkline([points.get(b, (0, 0, {}))[1] / seconds for b in buckets])
    rows.sort(key=lambda row: (ORDER[row["state"]], -row["error_rate"], -(row["p99_ms"] or 0), row["service"]))
    host = request.get_host().rsplit(":", 1)[0] if request.get_host() else "localhost"
    return {"rows": rows, "window": window, "host": host, "grpc_port": settings.OTLP_GRPC_PORT,
            "http_port": settings.OTLP_HTTP_PORT}

from django.urls import path

from dashboards.api import metrics

# /api/v1/metrics and /api/v1/metrics/{name}/series (metric names may hold slashes).
urlpatterns = [
    path("api/v1/metrics", metrics.metric_list, name="api-v1-metrics"),
    path("api/v1/metrics/<path:name>/series", metrics.metric_series, name="api-v1-metric-series"),
]

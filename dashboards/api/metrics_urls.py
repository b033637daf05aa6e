from django.urls import path  # noqa: F401

# /api/v1/metrics and /api/v1/metrics/{name}/series: routes added with dashboards.api.metrics.
urlpatterns = []

from django.urls import include, path

from dashboards.api import v1

urlpatterns = [
    path("api/v1/services", v1.services, name="api-v1-services"),
    path("api/v1/services/<path:service>/operations", v1.operations, name="api-v1-operations"),
    path("api/v1/dependencies", v1.dependencies, name="api-v1-dependencies"),
    path("api/v1/hotspots", v1.hotspots, name="api-v1-hotspots"),
    path("api/v1/traces", v1.trace_search, name="api-v1-traces"),
    path("api/v1/traces/<str:trace_id>", v1.trace_detail, name="api-v1-trace"),
    path("", include("dashboards.api.metrics_urls")),
    path("", include("dashboards.api.jaeger_urls")),
]

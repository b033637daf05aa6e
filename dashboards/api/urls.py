from django.urls import include, path, re_path

from dashboards.api import openapi, v1

urlpatterns = [
    path("api/v1/openapi.json", openapi.openapi_json, name="api-v1-openapi"),
    path("api/v1/services", v1.services, name="api-v1-services"),
    # a service name is telemetry: any character, "/" and newlines included
    re_path(r"^api/v1/services/(?P<service>[\s\S]+)/operations$", v1.operations, name="api-v1-operations"),
    path("api/v1/dependencies", v1.dependencies, name="api-v1-dependencies"),
    path("api/v1/hotspots", v1.hotspots, name="api-v1-hotspots"),
    path("api/v1/traces", v1.trace_search, name="api-v1-traces"),
    path("api/v1/traces/<str:trace_id>", v1.trace_detail, name="api-v1-trace"),
    path("", include("dashboards.api.metrics_urls")),
    path("", include("dashboards.api.slos_urls")),
    path("", include("dashboards.api.jaeger_urls")),
    # anything else under /api/ is a JSON 404, never the HTML page
    re_path(r"^api/v1/[\s\S]*$", v1.not_found),
    re_path(r"^api/[\s\S]*$", v1.jaeger_not_found),
]

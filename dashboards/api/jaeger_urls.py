from django.urls import path

from dashboards.api import jaeger

# The Jaeger HTTP query API, as Jaeger UI and Grafana's Jaeger data source call it (no trailing slashes).
urlpatterns = [
    path("api/services", jaeger.services, name="jaeger-services"),
    path("api/services/<path:service>/operations", jaeger.service_operations, name="jaeger-service-operations"),
    path("api/operations", jaeger.operations, name="jaeger-operations"),
    path("api/traces", jaeger.traces, name="jaeger-traces"),
    path("api/traces/<str:trace_id>", jaeger.trace, name="jaeger-trace"),
    path("api/dependencies", jaeger.dependencies, name="jaeger-dependencies"),
]

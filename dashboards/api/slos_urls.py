from django.urls import path

from dashboards.api import slos

# /api/v1/slos, /api/v1/channels, /api/v1/alerts (dashboards.api.slos)
urlpatterns = [
    path("api/v1/channels", slos.channels, name="api-v1-channels"),
    path("api/v1/channels/<str:name>", slos.channel, name="api-v1-channel"),
    path("api/v1/slos", slos.slos, name="api-v1-slos"),
    path("api/v1/slos/<str:name>", slos.slo, name="api-v1-slo"),
    path("api/v1/alerts", slos.alerts, name="api-v1-alerts"),
]

from django.urls import path  # noqa: F401

# /api/v1/slos, /api/v1/channels, /api/v1/alerts: routes added with dashboards.api.slos.
urlpatterns = []

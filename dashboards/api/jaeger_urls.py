from django.urls import path  # noqa: F401

# The Jaeger HTTP query API (/api/services, /api/traces, ...): routes added with dashboards.api.jaeger.
urlpatterns = []

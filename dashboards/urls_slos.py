from django.urls import path  # noqa: F401

# The SLO, alert and channel pages: routes added with dashboards.slo_pages.
urlpatterns = []

from django.urls import path

from dashboards import metrics_page

urlpatterns = [
    path("explore/metrics/", metrics_page.metrics_explorer, name="metrics-explorer"),
]

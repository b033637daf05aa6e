from django.urls import path, re_path

from dashboards import service_pages

urlpatterns = [
    path("map/", service_pages.service_map, name="service-map"),
    # service names are telemetry: any character, "/" included
    re_path(r"^services/(?P<service>[\s\S]+)/$", service_pages.service, name="service"),
]

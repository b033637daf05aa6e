from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("dashboards.api.urls")),
    path("", include("dashboards.urls")),
]

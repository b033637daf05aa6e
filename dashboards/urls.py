from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboards import overview, views

urlpatterns = [
    path("", overview.services, name="services"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="/login/"), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.prometheus_metrics, name="metrics"),
    # the pages of the service map and service page, the traces, the metrics explorer
    path("", include("dashboards.urls_map")),
    path("", include("dashboards.urls_traces")),
    path("", include("dashboards.urls_metrics")),
    path("", include("dashboards.urls_slos")),
]

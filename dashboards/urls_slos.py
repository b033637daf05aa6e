from django.urls import path, re_path

from dashboards import slo_pages

# The SLO, alert and channel pages. SLO names hold any character but "/".
urlpatterns = [
    path("slos/", slo_pages.slo_list, name="slos"),
    path("slos/new/", slo_pages.slo_new, name="slo-new"),
    re_path(r"^slos/(?P<name>[^/]+)/$", slo_pages.slo_detail, name="slo"),
    re_path(r"^slos/(?P<name>[^/]+)/edit/$", slo_pages.slo_edit, name="slo-edit"),
    re_path(r"^slos/(?P<name>[^/]+)/delete/$", slo_pages.slo_delete, name="slo-delete"),
    path("alerts/", slo_pages.alert_list, name="alerts"),
    path("channels/", slo_pages.channel_list, name="channels"),
    path("channels/<int:channel_id>/test/", slo_pages.channel_test, name="channel-test"),
]

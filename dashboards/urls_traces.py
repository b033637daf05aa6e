from django.urls import path

from dashboards import trace_pages

urlpatterns = [
    path("traces/", trace_pages.trace_search, name="trace-search"),
    path("traces/<str:trace_id>/", trace_pages.trace, name="trace"),
]

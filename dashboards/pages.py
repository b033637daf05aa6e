"""Shared pieces of the dashboard pages: navigation, the page decorator, charts, sparklines.

Every page needs a login, reads the shared time window (dashboards.window) and renders a
template; a bad query parameter renders the page's 400 naming it. Charts are plotly
figures built here as plain dicts and handed to the template, which puts them in
<script type="application/json"> (json_script escapes <, > and &); static/sightline/app.js
draws them. Strings from telemetry that plotly shows as text (labels, hover) go through
`label()`, because plotly renders a few HTML tags in text.
"""

import functools
import html
from urllib.parse import quote

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.http import RFC3986_SUBDELIMS

from dashboards import queries
from dashboards.api.http import BadParameter
from dashboards.window import RANGES, window

PAGES = [("services", "Services"), ("service-map", "Service map"), ("trace-search", "Traces"),
         ("metrics-explorer", "Metrics"), ("slos", "SLOs")]
# parameters that belong to the shared window, not to one page
WINDOW_PARAMS = {"range", "start", "end", "env"}


def navigation(request):
    """Template context for the header: pages, the window picker and the environments seen."""
    match = getattr(request, "resolver_match", None)
    page = match.url_name if match else None
    nav = {"page": page, "pages": [], "query": "", "window": None, "ranges": list(RANGES.items()),
           "environments": [], "keep": []}
    for name, label in PAGES:
        try:
            nav["pages"].append((name, label, reverse(name)))
        except Exception:  # a page not built yet
            continue
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {"nav": nav}
    try:
        current = window(request)
    except BadParameter:
        return {"nav": nav}
    nav["window"] = current
    nav["query"] = current.query()
    nav["keep"] = [(key, value) for key, value in request.GET.items() if key not in WINDOW_PARAMS]
    nav["environments"] = lambda: _environments(current)  # queried only where a template shows the picker
    return {"nav": nav}


def _environments(current):
    try:
        seen = queries.environments(current.start, current.end)
    except Exception:  # the header must not take the page down with it
        seen = []
    if current.environment and current.environment not in seen:
        seen.append(current.environment)
    return seen


def page(template):
    """A dashboard page: login required; the view gets (request, window, ...) and returns a
    context dict; BadParameter becomes a 400 page naming the parameter."""

    def decorate(view):
        @login_required
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            try:
                context = view(request, window(request), *args, **kwargs)
            except BadParameter as exc:
                return render(request, template, {"error": f"Bad parameter — {exc.message}", "bad": True},
                              status=400)
            if not isinstance(context, dict):
                return context
            return render(request, template, context)

        return wrapper

    return decorate


def _with_window(url, window, **extra):
    query = window.query(**extra) if window is not None else ""
    return f"{url}?{query}" if query else url


def page_url(name, window=None):
    """A page without arguments (the map, the services...), keeping the window."""
    return _with_window(reverse(name), window)


def service_url(name, window=None):
    """The service page of `name`, keeping the window; "" when no route can hold the name.

    A name with "." or ".." path segments would be folded away by the browser, so its
    slashes are sent encoded (the server decodes them back before matching)."""
    try:
        url = reverse("service", kwargs={"service": name})
    except NoReverseMatch:
        return ""
    if any(segment in (".", "..") for segment in name.split("/")):
        prefix = reverse("service", kwargs={"service": "-"})[:-2]
        url = prefix + quote(name, safe=RFC3986_SUBDELIMS + "~:@") + "/"
    return _with_window(url, window)


def trace_url(trace_id, window=None):
    return _with_window(reverse("trace", kwargs={"trace_id": trace_id}), window)


def search_url(window, **filters):
    """The trace search with these filters, keeping the window."""
    return _with_window(reverse("trace-search"), window, **filters)


def stamp(moment):
    """A bucket's time as plotly reads it on a date axis."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def label(value):
    """Telemetry text for plotly labels and hover text: <, > and & escaped, as plotly renders a
    few tags (<b>, <a>...) in text; it decodes &lt; &gt; &amp; but shows &quot; literally, and
    quotes cannot open a tag, so they stay as they are."""
    return html.escape(str(value), quote=False)


def health(error_rate, requests):
    if not requests:
        return "idle"
    if error_rate >= 0.05:
        return "failing"
    if error_rate >= 0.01:
        return "degraded"
    return "ok"


def sparkline(values, width=120, height=24):
    """SVG polyline points for a list of numbers (None = 0): server-made, numbers only."""
    values = [value or 0 for value in values]
    if not values:
        return ""
    top = max(values) or 1
    step = width / max(len(values) - 1, 1)
    return " ".join(f"{i * step:.1f},{height - 2 - (value / top) * (height - 4):.1f}" for i, value in enumerate(values))


def figure(data, layout=None, height=280):
    """A plotly figure as a dict, with Sightline's defaults."""
    base = {"height": height, "margin": {"l": 50, "r": 20, "t": 30, "b": 40}, "hovermode": "closest",
            "legend": {"orientation": "h"}}
    base.update(layout or {})
    return {"data": data, "layout": base}

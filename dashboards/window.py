"""The time range and environment every page shares, kept in the URL so a view can be linked.

    ?range=15m|1h|6h|24h|7d          (default 1h), or
    ?start=2026-11-21T10:00&end=...  a custom range (UTC when no offset is given)
    &env=production                  deployment.environment filter
"""

import datetime as dt
from dataclasses import dataclass
from urllib.parse import urlencode

from django.utils import timezone

from dashboards import queries
from dashboards.api import params
from dashboards.api.http import BadParameter

RANGES = {"15m": "Last 15 minutes", "1h": "Last hour", "6h": "Last 6 hours", "24h": "Last 24 hours",
          "7d": "Last 7 days"}
DEFAULT_RANGE = "1h"
_LOOKBACK = {"15m": "15m", "1h": "1h", "6h": "6h", "24h": "24h", "7d": "7d"}


@dataclass
class Window:
    start: dt.datetime
    end: dt.datetime
    range: str  # one of RANGES, or "custom"
    environment: str | None

    @property
    def seconds(self):
        return (self.end - self.start).total_seconds()

    @property
    def step(self):
        return queries.choose_step(self.start, self.end)

    def query(self, **extra):
        """The query string that keeps this window (and extra parameters) in a link."""
        values = {}
        if self.range == "custom":
            values.update(start=self.start.strftime("%Y-%m-%dT%H:%M"), end=self.end.strftime("%Y-%m-%dT%H:%M"))
        elif self.range != DEFAULT_RANGE:
            values["range"] = self.range
        if self.environment:
            values["env"] = self.environment
        values.update({key: value for key, value in extra.items() if value not in (None, "")})
        return urlencode(values)


def _moment(value, name):
    value = value.strip()
    if len(value) in (16, 19) and "T" in value and "+" not in value and not value.endswith("Z"):
        value += "Z"  # a datetime-local input: UTC
    return params.instant(value, name)


def window(request, now=None):
    """The Window of a page request; BadParameter names a bad parameter."""
    query = request.GET
    now = now or timezone.now()
    environment = params.text(query, "env")
    if query.get("start") or query.get("end"):
        if not (query.get("start") and query.get("end")):
            raise BadParameter("start" if not query.get("start") else "end", "a custom range needs both start and end")
        start, end = _moment(query["start"], "start"), _moment(query["end"], "end")
        if start >= end:
            raise BadParameter("start", "must be before end")
        if end - start > params.MAX_RANGE:
            raise BadParameter("start", "the range may be at most 3650 days")
        return Window(start, end, "custom", environment)
    chosen = query.get("range") or DEFAULT_RANGE
    if chosen == "custom":  # "Custom…" picked without dates: the default range
        chosen = DEFAULT_RANGE
    if chosen not in RANGES:
        raise BadParameter("range", f"must be one of {', '.join(RANGES)}")
    return Window(now - params.lookback(_LOOKBACK[chosen]), now, chosen, environment)

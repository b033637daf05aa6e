"""Query parameters, validated: every bad value raises BadParameter naming the parameter.

Shared by the v1 API, the Jaeger API and the dashboards, so `?lookback=1h` means the same
everywhere. Times come back as aware UTC datetimes, durations as nanoseconds.
"""

import datetime as dt
import re

from django.utils import timezone

from dashboards.api.http import BadParameter

UTC = dt.timezone.utc
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_LOOKBACK = re.compile(r"^(\d{1,6})([smhdw])$")
# Durations: Go's syntax as Jaeger takes it ("1.5s", "250ms", "1m30s"), or a bare number.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
       "h": 3_600_000_000_000}
MAX_RANGE = dt.timedelta(days=3650)
MAX_TEXT = 1024  # longest name or attribute value a filter may carry


def text(params, name, default=None, max_length=MAX_TEXT):
    value = params.get(name)
    if value is None or value == "":
        return default
    if len(value) > max_length:
        raise BadParameter(name, f"longer than {max_length} characters")
    if "\x00" in value:
        raise BadParameter(name, "contains a NUL character")
    return value


def integer(params, name, default=None, minimum=None, maximum=None):
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise BadParameter(name, f"must be an integer, got {value[:40]!r}") from None
    if minimum is not None and number < minimum or maximum is not None and number > maximum:
        raise BadParameter(name, f"must be between {minimum} and {maximum}, got {number}")
    return number


def choice(params, name, choices, default=None):
    value = params.get(name)
    if value is None or value == "":
        return default
    if value not in choices:
        raise BadParameter(name, f"must be one of {', '.join(choices)}, got {value[:40]!r}")
    return value


def lookback(value, name="lookback"):
    """'15m', '1h', '7d', '2w', '30s' -> timedelta."""
    match = _LOOKBACK.match(value.strip())
    if not match:
        raise BadParameter(name, f"must be a number and a unit (s, m, h, d, w), e.g. 15m, 1h, 7d; got {value[:40]!r}")
    delta = dt.timedelta(seconds=int(match.group(1)) * _UNITS_S[match.group(2)])
    if delta <= dt.timedelta(0) or delta > MAX_RANGE:
        raise BadParameter(name, f"must be more than 0 and at most 3650d, got {value!r}")
    return delta


def instant(value, name, unit="ms"):
    """RFC 3339 text, or a number: epoch milliseconds (unit="us": microseconds, as Jaeger)."""
    value = value.strip()
    if re.fullmatch(r"-?\d{1,20}", value):
        number = int(value)
        seconds = number / 1000 if unit == "ms" else number / 1_000_000
        try:
            return dt.datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise BadParameter(name, f"epoch {unit} out of range: {value[:40]}") from None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadParameter(name, f"must be RFC 3339 (2026-11-21T10:00:00Z) or epoch {unit}, got {value[:40]!r}") from None
    if moment.tzinfo is None:
        raise BadParameter(name, f"needs a time zone (Z or +hh:mm), got {value[:40]!r}")
    return moment.astimezone(UTC)


def time_range(params, default_lookback="1h", unit="ms", now=None):
    """(start, end) from `start`/`end` and/or `lookback`: end defaults to now, start to end - lookback."""
    now = now or timezone.now()
    end = instant(params["end"], "end", unit) if params.get("end") else now
    if params.get("start"):
        start = instant(params["start"], "start", unit)
        if params.get("lookback"):
            lookback(params["lookback"])  # start wins, but a bad lookback is still an error
    else:
        span = lookback(params["lookback"]) if params.get("lookback") else lookback(default_lookback)
        try:
            start = end - span
        except OverflowError:
            raise BadParameter("end", "too early for that lookback") from None
    if start >= end:
        raise BadParameter("start", "must be before end")
    if end - start > MAX_RANGE:
        raise BadParameter("start", "the range may be at most 3650 days")
    return start, end


def duration_ns(params, name, default=None):
    """'250ms', '1.5s', '1m30s', '300us' (Go/Jaeger syntax), or a bare number of milliseconds."""
    value = params.get(name)
    if value is None or value.strip() == "":
        return default
    value = value.strip()
    try:
        if re.fullmatch(r"\d+(\.\d+)?", value):
            total = float(value) * 1_000_000
        else:
            position, total = 0, 0.0
            for match in _DURATION_PART.finditer(value):
                if match.start() != position:
                    raise ValueError
                total += float(match.group(1)) * _NS[match.group(2)]
                position = match.end()
            if position != len(value) or position == 0:
                raise ValueError
    except ValueError:
        raise BadParameter(name, f"must be a duration like 250ms, 1.5s or 2m (or milliseconds), got {value[:40]!r}") \
            from None
    if total > 10 * 365 * 86400 * 1e9:
        raise BadParameter(name, "longer than ten years")
    return int(total)


def attribute_filters(params, prefix="attr."):
    """{key: value} from every `attr.KEY=VALUE` parameter."""
    filters = {}
    for name in params:
        if name.startswith(prefix):
            key = name[len(prefix):]
            if not key:
                raise BadParameter(name, "needs an attribute name after 'attr.'")
            filters[key] = text(params, name, default="")
    if len(filters) > 20:
        raise BadParameter(prefix + "*", "at most 20 attribute filters")
    return filters

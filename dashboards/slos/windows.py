"""Burn rates and alert windows: pure functions, no Django.

The SRE workbook's multi-window, multi-burn-rate alerts for a 30-day SLO window:
  page   when the burn rate exceeds 14.4 over both 1 h and 5 m   (2 % of the budget in 1 h)
  page   when it exceeds 6 over both 6 h and 30 m                (5 % of the budget in 6 h)
  ticket when it exceeds 1 over both 3 d and 6 h                 (10 % of the budget in 3 d)
For another SLO window the alert windows scale with it (same share of the budget at the
same burn rate), never below a minute (the rollups' resolution).

burn rate = (bad / total over the window) / (1 - objective): 1 spends the budget exactly
over the SLO window. A window without traffic has no burn rate (None): no alert, no division.
"""

import datetime as dt
import re
from dataclasses import dataclass

BASE_WINDOW = dt.timedelta(days=30)
MINUTE = dt.timedelta(minutes=1)
WORKBOOK = [  # (severity, long window, short window, burn rate) for a 30-day SLO
    ("page", dt.timedelta(hours=1), dt.timedelta(minutes=5), 14.4),
    ("page", dt.timedelta(hours=6), dt.timedelta(minutes=30), 6.0),
    ("ticket", dt.timedelta(days=3), dt.timedelta(hours=6), 1.0),
]
SEVERITIES = ("page", "ticket")
_DURATION = re.compile(r"^(\d{1,5})([smhdw])$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text):
    """'5m', '1h', '3d', '30d', '2w' -> timedelta; ValueError otherwise."""
    match = _DURATION.match(str(text).strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 5m, 1h or 30d")
    return dt.timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})


def format_duration(delta):
    """timedelta -> the shortest exact label: 5m, 1h, 3d (seconds when nothing else fits)."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Condition:
    severity: str
    long: dt.timedelta
    short: dt.timedelta
    burn_rate: float

    def as_dict(self):
        return {"severity": self.severity, "long": format_duration(self.long), "short": format_duration(self.short),
                "burn_rate": self.burn_rate}


def _scale(window, slo_window):
    scaled = window * (slo_window / BASE_WINDOW)
    return max(MINUTE, dt.timedelta(minutes=round(scaled / MINUTE)))


def default_conditions(slo_window):
    """The workbook's three conditions, windows scaled to the SLO window."""
    return [Condition(severity, _scale(long, slo_window), _scale(short, slo_window), rate)
            for severity, long, short, rate in WORKBOOK]


def conditions_from(stored, slo_window):
    """Conditions from their stored form (list of dicts); empty -> the defaults. ValueError
    names what is wrong."""
    if not stored:
        return default_conditions(slo_window)
    result = []
    for index, item in enumerate(stored):
        if not isinstance(item, dict):
            raise ValueError(f"condition {index} must be an object")
        severity = item.get("severity")
        if severity not in SEVERITIES:
            raise ValueError(f"condition {index}: severity must be page or ticket")
        long, short = parse_duration(item.get("long", "")), parse_duration(item.get("short", ""))
        if short > long:
            raise ValueError(f"condition {index}: the short window must not be longer than the long one")
        try:
            rate = float(item.get("burn_rate"))
        except (TypeError, ValueError):
            raise ValueError(f"condition {index}: burn_rate must be a number") from None
        if not 0 < rate < 1e6:
            raise ValueError(f"condition {index}: burn_rate must be positive")
        result.append(Condition(severity, long, short, rate))
    return result


def burn_rate(bad, total, objective):
    """(bad / total) / (1 - objective); None without traffic."""
    if not total:
        return None
    return (bad / total) / (1 - objective)


def budget_remaining(bad, total, objective):
    """Share of the window's error budget left (1 = untouched, 0 = spent, < 0 = overspent);
    None without traffic."""
    if not total:
        return None
    return 1 - (bad / total) / (1 - objective)


def firing(conditions, rates):
    """{severity: [conditions met]} where a condition is met when the burn rate over both of
    its windows exceeds its threshold. rates: {timedelta: burn rate or None}."""
    met = {severity: [] for severity in SEVERITIES}
    for condition in conditions:
        long, short = rates.get(condition.long), rates.get(condition.short)
        if long is not None and short is not None and long > condition.burn_rate and short > condition.burn_rate:
            met[condition.severity].append(condition)
    return met


def windows_of(conditions):
    return sorted({c.long for c in conditions} | {c.short for c in conditions})

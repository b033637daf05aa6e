"""Evaluate SLOs from the rollups and move their alerts through firing -> resolved.

evaluate_all(now) is what beat runs every SIGHTLINE_SLO_EVAL_SECONDS: for each SLO, the
good/bad request counts over the SLO window and over every alert window come from the
RED (service, operation) or edge rollups; the SLI, budget left and burn rates are stored on
the SLO; then, per severity:
- conditions met and no open alert: an alert starts firing (one notification per channel);
- conditions met again while waiting to resolve: the wait is cancelled (no flapping);
- conditions not met: the alert resolves once they have stayed unmet for
  SIGHTLINE_ALERT_RESOLVE_HOLD_SECONDS (one notification per channel).
Notifications are Delivery rows handed to the worker after commit; a channel that is down
never holds up the evaluation of other SLOs.
"""

import datetime as dt
import logging
import math

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from dashboards import queries
from dashboards.models import SLO, Alert, Delivery
from dashboards.slos import windows
from traces import analysis

log = logging.getLogger(__name__)


def _latency_bad(hist, threshold_ms):
    """Requests slower than the threshold: whole buckets above it, and the bucket holding it
    split by where the threshold falls in it (log scale)."""
    threshold_ns, bad = threshold_ms * 1e6, 0.0
    for index, count in hist.items():
        low, high = analysis.bucket_bounds(int(index))
        if low >= threshold_ns:
            bad += count
        elif high > threshold_ns:
            if low <= 0:
                bad += count * (high - threshold_ns) / high
            else:
                bad += count * math.log(high / threshold_ns) / math.log(high / low)
    return bad


def _selection(slo):
    """(rollup table, counted column, SQL conditions, values) of the requests the SLI reads:
    one edge, one operation of a service (every kind), or a service's own (entry) requests."""
    if slo.edge_parent and slo.edge_child:
        return "sightline_edge_rollup", "calls", " AND parent = %s AND child = %s", [slo.edge_parent, slo.edge_child]
    if slo.operation:
        return "sightline_red_rollup", "count", " AND service = %s AND operation = %s", [slo.service, slo.operation]
    return "sightline_red_rollup", "count", " AND service = %s AND entry", [slo.service]


def _bad(slo, errors, hist):
    return _latency_bad(hist, slo.threshold_ms or 0) if slo.sli_type == SLO.LATENCY else errors


def counts(slo, start, end):
    """(bad, total) requests of the SLO's SLI in [start, end)."""
    table, counted, where, values = _selection(slo)
    rows, params = queries.rollup_rows(table, f"{counted}, errors, histogram", start, end, where, values)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT coalesce(sum({counted}), 0), coalesce(sum(errors), 0), "
                       f"sightline_hist_sum(histogram) FROM ({rows}) AS r", params)
        total, errors, hist = cursor.fetchone()
    return _bad(slo, int(errors), queries._loads(hist) or {}), int(total)


def series(slo, start, end, step):
    """{bucket start: (bad, total)} of the SLO's SLI per step, in one rollup query."""
    table, counted, where, values = _selection(slo)
    points = queries.rollup_series(table, "", counted, start, end, step, where, values).get(None, {})
    return {bucket: (_bad(slo, errors, hist), count) for bucket, (count, errors, hist) in points.items()}


def _contributors(slo, start, end):
    """What made the short window bad: the top operations (or edges) by errors or slow
    requests, and exemplar traces."""
    top = []
    if slo.edge_parent and slo.edge_child:
        edges = [e for e in queries.dependencies(start, end, service=slo.edge_parent)
                 if e["parent"] == slo.edge_parent and e["child"] == slo.edge_child]
        top = [{"edge": f"{e['parent']} -> {e['child']}", "calls": e["calls"], "errors": e["errors"],
                "p95_ms": e["p95_ms"]} for e in edges]
    else:
        rows = queries.operations(start, end, slo.service)
        if slo.operation:
            rows = [row for row in rows if row["operation"] == slo.operation]
        key = "errors" if slo.sli_type == SLO.AVAILABILITY else "p95_ms"
        rows.sort(key=lambda row: -(row[key] or 0))
        top = [{"operation": row["operation"], "span_kind": row["span_kind"], "requests": row["requests"],
                "errors": row["errors"], "p95_ms": row["p95_ms"]} for row in rows[:3]]
    search = {"service": slo.edge_child if slo.edge_child else slo.service, "operation": slo.operation or None,
              "limit": 3}
    if slo.sli_type == SLO.AVAILABILITY:
        search["status"] = "error"
    else:
        search["min_duration_ns"] = int((slo.threshold_ms or 0) * 1e6)
    exemplars = [row["trace_id"] for row in queries.search_traces(start, end, **search)[:3]]
    return {"top": top, "exemplar_trace_ids": exemplars}


def _summary(slo, severity, rates, budget, details):
    figures = ", ".join(f"{label} {rate:.1f}x" for label, rate in rates.items() if rate is not None)
    what = (f"{slo.sli_type} {slo.objective * 100:g}%"
            + (f" (faster than {slo.threshold_ms:g} ms)" if slo.sli_type == SLO.LATENCY else ""))
    budget_text = "no traffic" if budget is None else f"{budget * 100:.1f}% of the error budget left"
    top = "; ".join(
        ", ".join(f"{key} {value}" for key, value in item.items() if value is not None) for item in details["top"])
    text = f"[{severity}] SLO {slo.name} ({what}) is burning its error budget: burn rate {figures}; {budget_text}."
    if top:
        text += f" Top contributors: {top}."
    if details["exemplar_trace_ids"]:
        text += f" Example traces: {', '.join(details['exemplar_trace_ids'])}."
    return text


def _notify(alert, kind):
    channels = list(alert.slo.channels.all())
    deliveries = [Delivery.objects.create(channel=channel, alert=alert, kind=kind) for channel in channels]
    if deliveries:
        from dashboards.tasks import deliver

        ids = [delivery.id for delivery in deliveries]
        transaction.on_commit(lambda: [deliver.delay(delivery_id) for delivery_id in ids])
    return deliveries


def evaluate(slo, now=None):
    """Evaluate one SLO and move its alerts; return {severity: alert or None} open after it."""
    now = now or timezone.now()
    slo_window = dt.timedelta(days=slo.window_days)
    conditions = windows.conditions_from(slo.conditions, slo_window)
    bad, total = counts(slo, now - slo_window, now)
    rates = {}
    for window in windows.windows_of(conditions):
        window_bad, window_total = counts(slo, now - window, now)
        rates[window] = windows.burn_rate(window_bad, window_total, slo.objective)
    labelled = {windows.format_duration(window): rate for window, rate in rates.items()}
    met = windows.firing(conditions, rates)
    budget = windows.budget_remaining(bad, total, slo.objective)
    hold = dt.timedelta(seconds=settings.ALERT_RESOLVE_HOLD_SECONDS)
    open_alerts = {}
    with transaction.atomic():
        SLO.objects.filter(pk=slo.pk).update(
            evaluated_at=now, sli=None if not total else 1 - bad / total, budget_remaining=budget,
            burn_rates=labelled, state=next((s for s in windows.SEVERITIES if met[s]), "ok"))
        for severity in windows.SEVERITIES:
            alert = (Alert.objects.select_for_update().filter(slo=slo, severity=severity, state=Alert.FIRING)
                     .order_by("-started_at").first())
            if met[severity]:
                if alert is None:
                    short = min(condition.short for condition in met[severity])
                    details = _contributors(slo, now - short, now)
                    details["conditions"] = [condition.as_dict() for condition in met[severity]]
                    alert = Alert.objects.create(
                        slo=slo, severity=severity, started_at=now, burn_rates=labelled, budget_remaining=budget,
                        summary=_summary(slo, severity, labelled, budget, details), details=details)
                    _notify(alert, "firing")
                else:
                    Alert.objects.filter(pk=alert.pk).update(calm_since=None, burn_rates=labelled,
                                                             budget_remaining=budget)
                open_alerts[severity] = alert
            elif alert is not None:
                if alert.calm_since is None:
                    Alert.objects.filter(pk=alert.pk).update(calm_since=now)
                    open_alerts[severity] = alert
                elif now - alert.calm_since >= hold:
                    Alert.objects.filter(pk=alert.pk).update(state=Alert.RESOLVED, resolved_at=now,
                                                             burn_rates=labelled, budget_remaining=budget)
                    alert.refresh_from_db()
                    _notify(alert, "resolved")
                else:
                    open_alerts[severity] = alert
    return open_alerts


def evaluate_all(now=None):
    """Every SLO, each on its own: one that fails to evaluate is logged and the rest go on."""
    now = now or timezone.now()
    for slo in SLO.objects.prefetch_related("channels"):
        try:
            evaluate(slo, now)
        except Exception:
            log.exception("SLO %s could not be evaluated", slo.name)


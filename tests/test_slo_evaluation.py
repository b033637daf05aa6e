"""SLO burn rates and alert windows against hand-computed values, and evaluation over real
rollups: firing, the hold before resolving, no flapping, no traffic."""

import datetime as dt
import os

import pytest

from dashboards.models import SLO, Alert, Channel, Delivery
from dashboards.slos import evaluate, windows
from dashboards.slos.windows import Condition, burn_rate, budget_remaining, default_conditions, firing
from tests.shop import store_checkouts
from traces import analysis

H, M, D = dt.timedelta(hours=1), dt.timedelta(minutes=1), dt.timedelta(days=1)


# --- Pure: windows and burn rates --------------------------------------------------------


def test_the_sre_workbook_defaults_for_a_30_day_window():
    assert default_conditions(30 * D) == [
        Condition("page", H, 5 * M, 14.4), Condition("page", 6 * H, 30 * M, 6.0),
        Condition("ticket", 3 * D, 6 * H, 1.0)]


def test_windows_scale_with_the_slo_window_never_below_a_minute():
    # 7 days = 7/30 of the base: 1h -> 14m, 5m -> 1.17m -> 1m, 6h -> 84m, 30m -> 7m, 3d -> 1008m, 6h -> 84m
    assert [(c.long, c.short) for c in default_conditions(7 * D)] == [
        (14 * M, 1 * M), (84 * M, 7 * M), (1008 * M, 84 * M)]
    assert [c.burn_rate for c in default_conditions(7 * D)] == [14.4, 6.0, 1.0]  # thresholds do not scale


def test_burn_rate_and_budget():
    assert burn_rate(2, 100, 0.99) == pytest.approx(2.0)  # 2 % bad against a 1 % budget
    assert burn_rate(144, 10_000, 0.999) == pytest.approx(14.4)
    assert budget_remaining(5, 1000, 0.99) == pytest.approx(0.5)
    assert budget_remaining(20, 1000, 0.99) == pytest.approx(-1.0)  # overspent twice
    assert burn_rate(0, 0, 0.999) is None and budget_remaining(0, 0, 0.999) is None  # no traffic, no division


def test_a_condition_fires_only_when_both_windows_burn_too_fast():
    conditions = default_conditions(30 * D)
    both = {H: 15.0, 5 * M: 20.0, 6 * H: 3.0, 30 * M: 7.0, 3 * D: 0.5}
    assert firing(conditions, both) == {"page": [conditions[0]], "ticket": []}
    short_only = {**both, H: 10.0}  # a blip: the short window burns, the long one does not
    assert firing(conditions, short_only) == {"page": [], "ticket": []}
    no_traffic = {window: None for window in both}
    assert firing(conditions, no_traffic) == {"page": [], "ticket": []}
    slow_burn = {H: 2.0, 5 * M: 2.0, 6 * H: 1.5, 30 * M: 1.2, 3 * D: 1.1}
    assert firing(conditions, slow_burn) == {"page": [], "ticket": [conditions[2]]}


def test_conditions_are_validated():
    with pytest.raises(ValueError, match="severity"):
        windows.conditions_from([{"severity": "urgent", "long": "1h", "short": "5m", "burn_rate": 2}], 30 * D)
    with pytest.raises(ValueError, match="short window"):
        windows.conditions_from([{"severity": "page", "long": "5m", "short": "1h", "burn_rate": 2}], 30 * D)
    custom = windows.conditions_from([{"severity": "page", "long": "2h", "short": "10m", "burn_rate": 3}], 30 * D)
    assert custom == [Condition("page", 2 * H, 10 * M, 3.0)]


def test_latency_bad_requests_from_a_histogram():
    below, above = analysis.bucket_index(100e6), analysis.bucket_index(900e6)  # 100 ms and 900 ms
    assert evaluate._latency_bad({str(below): 70, str(above): 30}, 300) == pytest.approx(30)
    # a bucket holding the threshold is split on a log scale
    low, high = analysis.bucket_bounds(analysis.bucket_index(300e6))
    middle = (low * high) ** 0.5 / 1e6
    assert evaluate._latency_bad({str(analysis.bucket_index(300e6)): 10}, middle) == pytest.approx(5)


# --- Evaluation over real rollups ----------------------------------------------------------

pytestmark_db = pytest.mark.django_db(transaction=True)


def shop(errors, count=10, minutes_ago=20):
    prefix = f"slo-{os.urandom(3).hex()}"
    store_checkouts(prefix, count, errors=range(errors), minutes_ago=minutes_ago)
    return prefix


@pytestmark_db
def test_an_slo_burning_too_fast_fires_explains_itself_and_resolves_after_the_hold(settings, monkeypatch):
    settings.ALERT_RESOLVE_HOLD_SECONDS = 300
    queued = []
    monkeypatch.setattr("dashboards.tasks.deliver.delay", queued.append)
    prefix = shop(errors=2)
    channel = Channel.objects.create(name=f"hook-{prefix}", type="webhook", url="http://127.0.0.1:9/")
    slo = SLO.objects.create(name=f"{prefix}-availability", service=f"{prefix}-payment", objective=0.9,
                             conditions=[{"severity": "page", "long": "1h", "short": "30m", "burn_rate": 1.5}])
    slo.channels.add(channel)
    now = dt.datetime.now(dt.timezone.utc)
    evaluate.evaluate(slo, now)
    slo.refresh_from_db()
    # 2 of 10 payment requests failed: SLI 0.8, burn rate 0.2 / 0.1 = 2 over both windows
    assert slo.sli == pytest.approx(0.8) and slo.burn_rates == {"30m": pytest.approx(2.0), "1h": pytest.approx(2.0)}
    assert slo.budget_remaining == pytest.approx(-1.0) and slo.state == "page"
    alert = Alert.objects.get(slo=slo)
    assert (alert.severity, alert.state) == ("page", "firing")
    assert "2.0x" in alert.summary and "error budget" in alert.summary
    assert alert.details["top"][0]["operation"] == "POST /pay" and alert.details["top"][0]["errors"] == 2
    assert len(alert.details["exemplar_trace_ids"]) == 2
    delivery = Delivery.objects.get(alert=alert)
    assert (delivery.kind, delivery.channel) == ("firing", channel) and queued == [delivery.id]

    evaluate.evaluate(slo, now + M)  # still burning: nothing new
    assert Alert.objects.filter(slo=slo).count() == 1 and Delivery.objects.count() >= 1 and len(queued) == 1

    later = now + 2 * H  # the bad requests have left both windows: no traffic, conditions unmet
    evaluate.evaluate(slo, later)
    alert.refresh_from_db()
    assert alert.state == "firing" and alert.calm_since == later  # held, not resolved yet
    evaluate.evaluate(slo, later + 4 * M)
    alert.refresh_from_db()
    assert alert.state == "firing"
    evaluate.evaluate(slo, later + 5 * M)
    alert.refresh_from_db()
    assert (alert.state, alert.resolved_at) == ("resolved", later + 5 * M)
    assert [d.kind for d in Delivery.objects.filter(alert=alert).order_by("id")] == ["firing", "resolved"]
    assert len(queued) == 2


@pytestmark_db
def test_burning_again_during_the_hold_does_not_flap(settings, monkeypatch):
    settings.ALERT_RESOLVE_HOLD_SECONDS = 300
    monkeypatch.setattr("dashboards.tasks.deliver.delay", lambda delivery_id: None)
    prefix = shop(errors=3)
    slo = SLO.objects.create(name=f"{prefix}-flap", service=f"{prefix}-payment", objective=0.9,
                             conditions=[{"severity": "page", "long": "1h", "short": "30m", "burn_rate": 1.5}])
    now = dt.datetime.now(dt.timezone.utc)
    evaluate.evaluate(slo, now)
    alert = Alert.objects.get(slo=slo)
    evaluate.evaluate(slo, now + 2 * H)  # calm
    evaluate.evaluate(slo, now)  # burning again (the same data seen from `now`)
    alert.refresh_from_db()
    assert alert.state == "firing" and alert.calm_since is None
    assert Alert.objects.filter(slo=slo).count() == 1  # one alert, one notification: no flapping


@pytestmark_db
def test_a_window_without_traffic_raises_no_alert_and_no_error():
    slo = SLO.objects.create(name=f"quiet-{os.urandom(3).hex()}", service="nobody-sends", objective=0.999)
    evaluate.evaluate(slo)
    slo.refresh_from_db()
    assert (slo.sli, slo.budget_remaining, slo.state) == (None, None, "ok")
    assert set(slo.burn_rates) == {"5m", "30m", "1h", "6h", "3d"} and set(slo.burn_rates.values()) == {None}
    assert not Alert.objects.filter(slo=slo).exists()


@pytestmark_db
def test_latency_and_edge_slis_read_their_rollups():
    prefix = shop(errors=0)
    now = dt.datetime.now(dt.timezone.utc)
    # payment's server spans last 70..79 ms: all slower than 50 ms, all faster than 100 ms
    slow = SLO(name="l1", service=f"{prefix}-payment", sli_type="latency", threshold_ms=50, objective=0.99)
    fast = SLO(name="l2", service=f"{prefix}-payment", sli_type="latency", threshold_ms=100, objective=0.99)
    assert evaluate.counts(slow, now - H, now) == (pytest.approx(10), 10)
    assert evaluate.counts(fast, now - H, now) == (pytest.approx(0), 10)
    edge = SLO(name="e", service=f"{prefix}-frontend", edge_parent=f"{prefix}-frontend",
               edge_child=f"{prefix}-payment", objective=0.99)
    assert evaluate.counts(edge, now - H, now) == (0, 10)
    operation = SLO(name="o", service=f"{prefix}-payment", operation="SELECT", objective=0.99)
    assert evaluate.counts(operation, now - H, now) == (0, 10)


@pytestmark_db
def test_one_broken_slo_does_not_stop_the_others(monkeypatch):
    prefix = shop(errors=0, count=3)
    good = SLO.objects.create(name=f"{prefix}-good", service=f"{prefix}-frontend", objective=0.99)
    broken = SLO.objects.create(name=f"{prefix}-broken", service="x", objective=0.99,
                                conditions=[{"severity": "page", "long": "never"}])
    evaluate.evaluate_all()
    good.refresh_from_db()
    broken.refresh_from_db()
    assert good.evaluated_at is not None and good.sli == 1.0
    assert broken.evaluated_at is None

"""OpenSLO v1 in and out: manage.py slo apply / export round-trips, and a bad file changes nothing."""

import io

import pytest
import yaml
from django.core.management import CommandError, call_command

from dashboards.api.slos import slo_definition
from dashboards.models import SLO, Channel
from dashboards.slos import openslo

pytestmark = pytest.mark.django_db(transaction=True)

FILE = """\
apiVersion: openslo/v1
kind: Service
metadata: {name: checkout}
spec: {description: the shop's checkout}
---
apiVersion: openslo/v1
kind: AlertNotificationTarget
metadata:
  name: ops-webhook
  annotations: {sightline/url: "https://alerts.example.com/hook"}
spec: {target: webhook, description: the on-call webhook}
---
apiVersion: openslo/v1
kind: AlertCondition
metadata: {name: slow-burn}
spec:
  severity: ticket
  condition: {kind: burnrate, op: gt, threshold: 2, lookbackWindow: 1d, alertAfter: 2h}
---
apiVersion: openslo/v1
kind: AlertPolicy
metadata: {name: slow-burn-policy}
spec:
  conditions: [{conditionRef: slow-burn}]
  notificationTargets: [{targetRef: ops-webhook}]
---
apiVersion: openslo/v1
kind: SLO
metadata: {name: checkout-availability}
spec:
  description: Checkout answers without errors
  service: checkout
  indicator:
    metadata: {name: checkout-availability-sli}
    spec:
      ratioMetric:
        counter: true
        good: {metricSource: {type: sightline, spec: {service: checkout, operation: POST /checkout}}}
        total: {metricSource: {type: sightline, spec: {service: checkout, operation: POST /checkout}}}
  timeWindow: [{duration: 28d, isRolling: true}]
  budgetingMethod: Occurrences
  objectives: [{displayName: three nines, targetPercent: 99.9}]
  alertPolicies:
    - kind: AlertPolicy
      metadata: {name: fast-burn, labels: {severity: page}}
      spec:
        conditions:
          - kind: AlertCondition
            metadata: {name: fast-burn, annotations: {sightline/short-window: 5m}}
            spec:
              condition: {kind: burnrate, op: gt, threshold: 14.4, lookbackWindow: 1h, alertAfter: 2m}
        notificationTargets:
          - kind: AlertNotificationTarget
            metadata: {name: oncall-mail, annotations: {sightline/to: "oncall@example.com, lead@example.com"}}
            spec: {target: email}
    - alertPolicyRef: slow-burn-policy
---
apiVersion: openslo/v1
kind: SLI
metadata: {name: payments-latency-sli}
spec:
  thresholdMetric:
    metricSource:
      type: sightline
      spec: {service: checkout, edge: {parent: checkout, child: payments}, kind: latency}
---
apiVersion: openslo/v1
kind: SLO
metadata: {name: payments-latency}
spec:
  service: checkout
  indicatorRef: payments-latency-sli
  timeWindow: [{duration: 7d, isRolling: true}]
  budgetingMethod: Occurrences
  objectives: [{op: lte, value: 300, target: 0.99}]
"""

EXPECTED = {
    "checkout-availability": {
        "name": "checkout-availability", "description": "Checkout answers without errors", "service": "checkout",
        "operation": "POST /checkout", "edge": None, "sli": {"type": "availability", "threshold_ms": None},
        "objective": 0.999, "window": "28d", "channels": ["oncall-mail", "ops-webhook"],
        "conditions": [{"severity": "page", "long": "1h", "short": "5m", "burn_rate": 14.4},
                       {"severity": "ticket", "long": "1d", "short": "2h", "burn_rate": 2.0}]},
    "payments-latency": {
        "name": "payments-latency", "description": "", "service": "checkout", "operation": None,
        "edge": {"parent": "checkout", "child": "payments"}, "sli": {"type": "latency", "threshold_ms": 300.0},
        "objective": 0.99, "window": "7d", "channels": [], "conditions": []},
}


def definitions():
    return {slo.name: slo_definition(slo) for slo in SLO.objects.prefetch_related("channels")}


def channels():
    return {c.name: (c.type, c.url, c.to) for c in Channel.objects.all()}


def apply_file(tmp_path, text, name="slos.yaml"):
    path = tmp_path / name
    path.write_text(text)
    out = io.StringIO()
    call_command("slo", "apply", str(path), stdout=out, stderr=io.StringIO())
    return out.getvalue()


def export_text():
    out = io.StringIO()
    call_command("slo", "export", stdout=out)
    return out.getvalue()


def test_apply_export_apply_round_trips(tmp_path):
    out = apply_file(tmp_path, FILE)
    assert "slo checkout-availability: created" in out and "channel oncall-mail: created" in out
    assert definitions() == EXPECTED
    assert channels() == {"ops-webhook": ("webhook", "https://alerts.example.com/hook", []),
                          "oncall-mail": ("email", "", ["oncall@example.com", "lead@example.com"])}

    # idempotent: applying again changes nothing
    assert "updated" not in apply_file(tmp_path, FILE) and definitions() == EXPECTED

    exported = export_text()
    documents = list(yaml.safe_load_all(exported))
    assert {doc["kind"] for doc in documents} == {"AlertNotificationTarget", "SLO"}
    assert all(doc["apiVersion"] == "openslo/v1" for doc in documents)
    latency = next(doc for doc in documents if doc["metadata"]["name"] == "payments-latency")
    assert latency["spec"]["objectives"] == [{"displayName": "0.99 of requests fast", "target": 0.99,
                                              "op": "lt", "value": 300}]
    policy = latency["spec"]["alertPolicies"][0]
    assert policy["metadata"]["annotations"] == {"sightline/default-conditions": "true"}
    assert [c["spec"]["condition"]["threshold"] for c in policy["spec"]["conditions"]] == [14.4, 6, 1]

    # to a fresh state: the same definitions and channels come back
    before = channels()
    SLO.objects.all().delete()
    Channel.objects.all().delete()
    apply_file(tmp_path, exported, "exported.yaml")
    assert definitions() == EXPECTED
    assert channels() == before
    assert export_text() == exported


def test_apply_updates_by_name(tmp_path):
    apply_file(tmp_path, FILE)
    out = apply_file(tmp_path, FILE.replace("targetPercent: 99.9", "target: 0.995"))
    assert "slo checkout-availability: updated" in out and "slo payments-latency: unchanged" in out
    assert SLO.objects.get(name="checkout-availability").objective == 0.995
    assert SLO.objects.count() == 2


def test_export_writes_a_file(tmp_path):
    apply_file(tmp_path, FILE)
    target = tmp_path / "out.yaml"
    call_command("slo", "export", str(target), stderr=io.StringIO())
    assert target.read_text() == export_text()


def test_a_foreign_metric_source_falls_back_to_the_service(tmp_path):
    text = """\
apiVersion: openslo/v1
kind: SLO
metadata: {name: web-availability}
spec:
  service: web
  indicator:
    metadata: {name: web-errors}
    spec:
      ratioMetric:
        counter: true
        bad: {metricSource: {type: Prometheus, spec: {query: 'sum(rate(http_errors[1m]))'}}}
        total: {metricSource: {type: Prometheus, spec: {query: 'sum(rate(http_requests[1m]))'}}}
  timeWindow: [{duration: 4w, isRolling: true}]
  budgetingMethod: Occurrences
  objectives: [{target: 0.99}]
"""
    lines = openslo.apply(text, "web.yaml")
    assert any(line.startswith("warning:") and "web" in line for line in lines)
    definition = definitions()["web-availability"]
    assert (definition["service"], definition["operation"], definition["sli"]["type"], definition["window"]) == (
        "web", None, "availability", "28d")


BAD = [
    ("apiVersion: openslo/v1alpha", "apiVersion", "document 5"),
    ("targetPercent: 99.9", "spec.objectives[0].target", "SLO checkout-availability"),
    ("duration: 28d", "spec.timeWindow[0].duration", "SLO checkout-availability"),
    ("threshold: 14.4", "spec.condition.threshold", "SLO checkout-availability"),
    ("lookbackWindow: 1h", "lookbackWindow", "SLO checkout-availability"),
    ("conditionRef: slow-burn", "conditionRef", "SLO checkout-availability"),
    ("sightline/url: \"https://alerts.example.com/hook\"", "sightline/url", "AlertNotificationTarget ops-webhook"),
    ("value: 300", "spec.objectives[0].value", "SLO payments-latency"),
    ("budgetingMethod: Occurrences\n  objectives: [{op", "spec.budgetingMethod", "SLO payments-latency"),
    ("child: payments", "edge.child", "SLO payments-latency"),
    ("isRolling: true}]\n  budgetingMethod: Occurrences\n  objectives: [{op", "isRolling", "SLO payments-latency"),
]
REPLACEMENTS = {
    "apiVersion: openslo/v1alpha": lambda text: text.replace("apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: "
                                                             "checkout-availability}",
                                                             "apiVersion: openslo/v1alpha\nkind: SLO\nmetadata: "
                                                             "{name: checkout-availability}"),
    "targetPercent: 99.9": lambda text: text.replace("targetPercent: 99.9", "target: 1.5"),
    "duration: 28d": lambda text: text.replace("duration: 28d", "duration: 12h"),
    "threshold: 14.4": lambda text: text.replace("threshold: 14.4", "threshold: fast"),
    "lookbackWindow: 1h": lambda text: text.replace("lookbackWindow: 1h", "lookbackWindow: 1M"),
    "conditionRef: slow-burn": lambda text: text.replace("conditionRef: slow-burn", "conditionRef: missing"),
    "sightline/url: \"https://alerts.example.com/hook\"": lambda text: text.replace(
        "https://alerts.example.com/hook", "ftp://alerts.example.com/hook"),
    "value: 300": lambda text: text.replace("op: lte, value: 300, ", ""),
    "budgetingMethod: Occurrences\n  objectives: [{op": lambda text: text.replace(
        "budgetingMethod: Occurrences\n  objectives: [{op", "budgetingMethod: Timeslices\n  objectives: [{op"),
    "child: payments": lambda text: text.replace("child: payments", "child: ''"),
    "isRolling: true}]\n  budgetingMethod: Occurrences\n  objectives: [{op": lambda text: text.replace(
        "{duration: 7d, isRolling: true}", "{duration: 7d, isRolling: false}"),
}


@pytest.mark.parametrize("marker, field, document", BAD, ids=[row[1] for row in BAD])
def test_a_bad_file_changes_nothing_and_names_the_problem(tmp_path, marker, field, document):
    apply_file(tmp_path, FILE.replace("threshold: 2,", "threshold: 3,"))  # a state to keep
    before, before_channels = definitions(), channels()
    bad = REPLACEMENTS[marker](FILE)
    assert bad != FILE
    with pytest.raises(CommandError) as caught:
        apply_file(tmp_path, bad, "bad.yaml")
    message = str(caught.value)
    assert "bad.yaml" in message and field in message and document in message and "nothing was changed" in message
    assert definitions() == before and channels() == before_channels


def test_an_unknown_channel_is_named(tmp_path):
    text = FILE.replace("notificationTargets: [{targetRef: ops-webhook}]", "notificationTargets: [{targetRef: pager}]")
    with pytest.raises(CommandError, match=r"SLO checkout-availability.*notificationTargets.*'pager'"):
        apply_file(tmp_path, text)
    assert not SLO.objects.exists() and not Channel.objects.exists()


def test_not_yaml_and_duplicates_are_refused(tmp_path):
    with pytest.raises(CommandError, match="not YAML"):
        apply_file(tmp_path, "kind: [SLO")
    twice = FILE + "---\n" + FILE.split("---\n")[-1]
    with pytest.raises(CommandError, match="a second SLO named 'payments-latency'"):
        apply_file(tmp_path, twice)
    assert not SLO.objects.exists()


def test_dry_run_changes_nothing(tmp_path):
    path = tmp_path / "slos.yaml"
    path.write_text(FILE)
    out = io.StringIO()
    call_command("slo", "apply", str(path), "--dry-run", stdout=out, stderr=io.StringIO())
    assert "slo payments-latency: created" in out.getvalue() and "dry run" in out.getvalue()
    assert not SLO.objects.exists() and not Channel.objects.exists()

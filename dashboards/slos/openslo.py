"""SLOs as code: OpenSLO v1 YAML in (`manage.py slo apply FILE`) and out (`manage.py slo export`).

Sightline computes every SLI from its own rollups, so the metric queries of an OpenSLO SLI are
replaced by a selection of Sightline's requests. The convention, read by apply and written
by export:

    kind: SLO
    metadata: {name: checkout-availability}
    spec:
      service: checkout                       # the Sightline service unless the metric source names one
      description: ...
      indicator:                              # inline SLI, or indicatorRef: NAME of a `kind: SLI` document
        metadata: {name: checkout-availability-sli}
        spec:
          ratioMetric:                        # availability: good/total or bad/total
            counter: true
            good:  {metricSource: {type: sightline, spec: {service: checkout, operation: "GET /cart",
                                                          kind: availability}}}
            total: {metricSource: {type: sightline, spec: {...the same...}}}
          # or, for latency:
          thresholdMetric:
            metricSource: {type: sightline, spec: {service: checkout,
                                                   edge: {parent: checkout, child: payments},
                                                   kind: latency, threshold_ms: 300}}
      timeWindow: [{duration: 30d, isRolling: true}]      # whole days, rolling only
      budgetingMethod: Occurrences                        # the only method
      objectives: [{target: 0.999}]                        # or targetPercent: 99.9; exactly one
      #   latency: [{op: lt, value: 300, target: 0.99}]   value = threshold in ms (op lt or lte)
      alertPolicies:                                      # inline kind: AlertPolicy, or alertPolicyRef: NAME
        - kind: AlertPolicy
          metadata: {name: fast-burn, labels: {severity: page}}
          spec:
            conditions:                                   # conditionRef: NAME, or inline kind: AlertCondition
              - kind: AlertCondition
                metadata: {name: fast-burn, annotations: {sightline/short-window: 5m}}
                spec:
                  severity: page                          # page | ticket; else the policy's labels.severity
                  condition: {kind: burnrate, op: gt, threshold: 14.4, lookbackWindow: 1h, alertAfter: 5m}
            notificationTargets: [{targetRef: ops-webhook}]   # or inline kind: AlertNotificationTarget

- metricSource.spec (type sightline): service, operation, edge {parent, child}, kind
  (availability | latency), threshold_ms. `good`, `bad` and `total` select the same requests;
  the selection is read from `total` (or from good/bad when total has none). Any other
  metricSource.type (prometheus, datadog, ...) cannot be run by Sightline: apply warns and
  falls back to the entry requests of spec.service (availability for a ratioMetric,
  latency for a thresholdMetric).
- A burn-rate condition: threshold = the burn rate, lookbackWindow = the long window, the
  short window = the `sightline/short-window` annotation of the AlertCondition, else
  alertAfter, else a twelfth of the long window (the SRE workbook's ratio), at least 1m.
- Notification targets are Sightline channels by name. A `kind: AlertNotificationTarget`
  with spec.target webhook | slack | email and the annotation sightline/url (webhook, slack)
  or sightline/to (email, comma-separated addresses) creates or updates that channel;
  without them it must name an existing channel. An SLO's channels are the targets of all
  its policies.
- An AlertPolicy annotated `sightline/default-conditions: "true"` stands for Sightline's
  default conditions (the SRE-workbook ones scaled to the window): its conditions are
  written out for readers but not stored, its targets count. Export writes one for every
  SLO without custom conditions; an SLO without any conditions also gets the defaults.
- `kind: Service` and `kind: DataSource` documents are accepted and ignored.

apply validates every document first and writes nothing when any is wrong (one
transaction); it updates SLOs and channels by name and never deletes.
"""

import copy
import datetime as dt
import math

import yaml
from django.db import transaction

from dashboards.api.slos import (
    Invalid,
    channel_from,
    definition_from,
    save_channel,
    save_slo,
    slo_definition,
)
from dashboards.models import SLO, Channel
from dashboards.slos import windows

API_VERSION = "openslo/v1"
IGNORED_KINDS = ("Service", "DataSource")
REFERABLE = ("SLI", "AlertPolicy", "AlertCondition", "AlertNotificationTarget")
KINDS = ("SLO", *REFERABLE, *IGNORED_KINDS)
SOURCE_TYPE = "sightline"
SHORT_WINDOW = "sightline/short-window"
DEFAULTS = "sightline/default-conditions"
URL, TO = "sightline/url", "sightline/to"
SELECTION_KEYS = {"service", "operation", "edge", "kind", "threshold_ms"}
# where a field of the REST definition comes from in an SLO document, for error messages
FIELD_PATHS = {"name": "metadata.name", "description": "spec.description", "service": "spec.service",
               "objective": "spec.objectives[0].target", "window": "spec.timeWindow[0].duration",
               "sli.threshold_ms": "spec.objectives[0].value", "channels": "spec.alertPolicies[].notificationTargets",
               "conditions": "spec.alertPolicies", "operation": "metricSource.spec.operation",
               "edge": "metricSource.spec.edge", "edge.parent": "metricSource.spec.edge.parent",
               "edge.child": "metricSource.spec.edge.child", "sli.type": "metricSource.spec.kind"}
CHANNEL_PATHS = {"name": "metadata.name", "type": "spec.target", "url": f"metadata.annotations.{URL}",
                 "to": f"metadata.annotations.{TO}"}


class OpenSLOError(ValueError):
    pass


class Problem(Exception):
    """A bad field; the document it is in is added on the way out."""

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class Document:
    def __init__(self, source, number, body):
        self.source, self.number, self.body = source, number, body
        self.kind = body.get("kind") if isinstance(body, dict) else None
        metadata = body.get("metadata") if isinstance(body, dict) else None
        self.name = metadata.get("name") if isinstance(metadata, dict) else None

    @property
    def label(self):
        what = " ".join(str(part) for part in (self.kind, self.name) if part)
        return f"{self.source}: document {self.number}" + (f" ({what})" if what else "")

    def error(self, field, message):
        return OpenSLOError(f"{self.label}: {field}: {message}")


# ---------------------------------------------------------------- small readers


def _mapping(value, field, required=True):
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise Problem(field, "must be a mapping")
    return value


def _list(value, field, required=True):
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise Problem(field, "must be a list")
    return value


def _string(value, field, required=True):
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise Problem(field, "must be a non-empty string")
    return value


def _number(value, field):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Problem(field, "must be a number")
    return float(value)


def _duration(value, field):
    try:
        return windows.parse_duration(value)
    except ValueError as exc:
        raise Problem(field, str(exc)) from None


def _metadata(body, field="metadata"):
    metadata = _mapping(body.get("metadata"), field)
    _string(metadata.get("name"), f"{field}.name")
    return metadata


def _label(metadata, key):
    """OpenSLO v1 labels: a string or a list of strings per key."""
    value = (metadata.get("labels") or {}).get(key) if isinstance(metadata.get("labels"), dict) else None
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    return value


def _annotation(metadata, key):
    annotations = metadata.get("annotations")
    return annotations.get(key) if isinstance(annotations, dict) else None


def _truthy(value):
    return value is True or str(value).strip().lower() in ("true", "yes", "1")


# ---------------------------------------------------------------- reading


def load(text, source="<input>"):
    """YAML text -> Documents; OpenSLOError naming the document for YAML or envelope errors."""
    try:
        bodies = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise OpenSLOError(f"{source}: not YAML: {exc}") from None
    documents = []
    for number, body in enumerate(bodies, 1):
        if body is None:  # an empty document between two ---
            continue
        document = Document(source, number, body)
        if not isinstance(body, dict):
            raise document.error("document", "must be a mapping")
        if body.get("apiVersion") != API_VERSION:
            raise document.error("apiVersion", f"must be {API_VERSION}, got {body.get('apiVersion')!r}")
        if document.kind not in KINDS:
            raise document.error("kind", f"must be one of {', '.join(KINDS)}, got {document.kind!r}")
        try:
            _metadata(body)
        except Problem as exc:
            raise document.error(exc.field, exc.message) from None
        documents.append(document)
    return documents


class Plan:
    """What a set of documents asks for, validated: channels and SLOs to create or update."""

    def __init__(self, documents):
        self.documents = documents
        self.warnings = []
        self.named = {kind: {} for kind in REFERABLE}
        for document in documents:
            if document.kind in self.named:
                if document.name in self.named[document.kind]:
                    raise document.error("metadata.name", f"a second {document.kind} named {document.name!r}")
                self.named[document.kind][document.name] = document
        self.channels = {}  # name -> (fields, document label)
        for document in self.named["AlertNotificationTarget"].values():
            self._in(document, lambda d=document: self._target(d.body, "", d))
        self.slos = []  # (fields, channel names, document)
        seen = set()
        for document in documents:
            if document.kind != "SLO":
                continue
            if document.name in seen:
                raise document.error("metadata.name", f"a second SLO named {document.name!r}")
            seen.add(document.name)
            definition = self._in(document, lambda d=document: self._slo(d))
            self.slos.append((definition, document))
        known = set(Channel.objects.values_list("name", flat=True)) | set(self.channels)
        self.validated = []
        for definition, document in self.slos:
            try:
                fields, names = definition_from(definition, known_channels=known)
            except Invalid as exc:
                raise document.error(FIELD_PATHS.get(exc.field, exc.field), exc.message) from None
            self.validated.append((fields, names, document))

    def _in(self, document, work):
        try:
            return work()
        except Problem as exc:
            raise document.error(exc.field, exc.message) from None

    def _inline_or_ref(self, item, kind, ref_key, where):
        """(the document, where it is) of an inline `kind` or one named by `ref_key`."""
        item = _mapping(item, where)
        if ref_key in item:
            name = _string(item[ref_key], f"{where}.{ref_key}")
            return self._referred(kind, name, f"{where}.{ref_key}"), f"{where} ({kind} {name})"
        if item.get("kind", kind) != kind:
            raise Problem(f"{where}.kind", f"must be {kind} (or use {ref_key})")
        return item, where

    def _referred(self, kind, name, field):
        document = self.named[kind].get(name)
        if document is None:
            raise Problem(field, f"no {kind} named {name!r} in the file")
        return document.body

    # -- notification targets -> channels

    def _target(self, body, field, document):
        """A channel name from an AlertNotificationTarget (inline or standalone); a target that
        carries the sightline/url or sightline/to annotation defines the channel."""
        prefix = f"{field}." if field else ""
        metadata = _metadata(body, f"{prefix}metadata")
        name = metadata["name"]
        spec = _mapping(body.get("spec"), f"{prefix}spec", required=False)
        url, to = _annotation(metadata, URL), _annotation(metadata, TO)
        if url is None and to is None:
            return name  # refers to a channel that must exist
        data = {"name": name, "type": spec.get("target")}
        if url is not None:
            data["url"] = url
        if to is not None:
            if not isinstance(to, str):
                raise Problem(f"{prefix}metadata.annotations.{TO}", "must be a string of comma-separated addresses")
            data["to"] = [address.strip() for address in to.split(",") if address.strip()]
        try:
            fields = channel_from(data)
        except Invalid as exc:
            path = CHANNEL_PATHS.get(exc.field.split("[")[0], exc.field)
            raise Problem(f"{prefix}{path}", exc.message) from None
        previous = self.channels.get(name)
        if previous is not None and previous[0] != fields:
            raise Problem(f"{prefix}metadata.name", f"channel {name!r} is defined differently in {previous[1]}")
        self.channels[name] = (fields, document.label)
        return name

    # -- alert policies -> conditions and channels

    def _condition(self, body, field, policy_severity):
        metadata = _metadata(body, f"{field}.metadata")
        spec = _mapping(body.get("spec"), f"{field}.spec")
        severity = spec.get("severity", policy_severity)
        if isinstance(severity, str):
            severity = severity.strip().lower()
        if severity not in windows.SEVERITIES:
            raise Problem(f"{field}.spec.severity",
                          "must be page or ticket (or set labels.severity on the AlertPolicy)")
        condition = _mapping(spec.get("condition"), f"{field}.spec.condition")
        if condition.get("kind") != "burnrate":
            raise Problem(f"{field}.spec.condition.kind", "must be burnrate (the only kind)")
        if condition.get("op", "gt") != "gt":
            raise Problem(f"{field}.spec.condition.op", "must be gt: an alert fires when the burn rate exceeds "
                                                         "the threshold")
        rate = _number(condition.get("threshold"), f"{field}.spec.condition.threshold")
        if not 0 < rate < 1e6:
            raise Problem(f"{field}.spec.condition.threshold", "must be a positive burn rate")
        long = _duration(condition.get("lookbackWindow"), f"{field}.spec.condition.lookbackWindow")
        annotated = _annotation(metadata, SHORT_WINDOW)
        if annotated is not None:
            short = _duration(annotated, f"{field}.metadata.annotations.{SHORT_WINDOW}")
            short_field = f"{field}.metadata.annotations.{SHORT_WINDOW}"
        elif condition.get("alertAfter") is not None:
            short = _duration(condition["alertAfter"], f"{field}.spec.condition.alertAfter")
            short_field = f"{field}.spec.condition.alertAfter"
        else:
            short = max(windows.MINUTE, dt.timedelta(minutes=round(long / windows.MINUTE / 12)))
            short_field = None
        if short > long:
            raise Problem(short_field or field, "the short window must not be longer than lookbackWindow")
        return {"severity": severity, "long": windows.format_duration(long), "short": windows.format_duration(short),
                "burn_rate": rate}

    def _policy(self, body, field, document):
        """(conditions, channel names, stands for the defaults) of one AlertPolicy."""
        metadata = _metadata(body, f"{field}.metadata")
        spec = _mapping(body.get("spec"), f"{field}.spec")
        severity = _label(metadata, "severity")
        conditions = []
        for index, item in enumerate(_list(spec.get("conditions"), f"{field}.spec.conditions", required=False)):
            where = f"{field}.spec.conditions[{index}]"
            condition, where = self._inline_or_ref(item, "AlertCondition", "conditionRef", where)
            conditions.append(self._condition(condition, where, severity))
        names = []
        targets = _list(spec.get("notificationTargets"), f"{field}.spec.notificationTargets", required=False)
        for index, item in enumerate(targets):
            where = f"{field}.spec.notificationTargets[{index}]"
            item = _mapping(item, where)
            if "targetRef" in item:
                name = _string(item["targetRef"], f"{where}.targetRef")  # a channel, or a standalone target
            else:
                if item.get("kind", "AlertNotificationTarget") != "AlertNotificationTarget":
                    raise Problem(f"{where}.kind", "must be AlertNotificationTarget (or use targetRef)")
                name = self._target(item, where, document)
            names.append(name)
        return conditions, names, _truthy(_annotation(metadata, DEFAULTS))

    # -- the SLO itself

    def _selection(self, metric, field, service):
        """The Sightline selection of a metric (ratio good/bad/total or threshold): a dict, or None
        for a metric source that is not Sightline's."""
        metric = _mapping(metric, field)
        source = _mapping(metric.get("metricSource"), f"{field}.metricSource")
        kind = source.get("type")
        if str(kind).strip().lower() != SOURCE_TYPE:
            return None
        spec = _mapping(source.get("spec"), f"{field}.metricSource.spec", required=False)
        unknown = set(spec) - SELECTION_KEYS
        if unknown:
            raise Problem(f"{field}.metricSource.spec.{sorted(unknown)[0]}",
                          f"unknown; a sightline metric source takes {', '.join(sorted(SELECTION_KEYS))}")
        return spec

    def _slo(self, document):
        body = document.body
        metadata = _metadata(body)
        spec = _mapping(body.get("spec"), "spec")
        service = _string(spec.get("service"), "spec.service")
        definition = {"name": metadata["name"], "description": spec.get("description") or "", "service": service}
        if spec.get("description") is not None and not isinstance(spec.get("description"), str):
            raise Problem("spec.description", "must be a string")

        # the indicator
        if "indicator" in spec and "indicatorRef" in spec:
            raise Problem("spec.indicator", "give indicator or indicatorRef, not both")
        if "indicatorRef" in spec:
            name = _string(spec["indicatorRef"], "spec.indicatorRef")
            sli = self._referred("SLI", name, "spec.indicatorRef")
            where = f"spec.indicatorRef ({name})"
        else:
            sli = _mapping(spec.get("indicator"), "spec.indicator")
            where = "spec.indicator"
        sli_spec = _mapping(sli.get("spec"), f"{where}.spec")
        ratio, threshold_metric = sli_spec.get("ratioMetric"), sli_spec.get("thresholdMetric")
        if (ratio is None) == (threshold_metric is None):
            raise Problem(f"{where}.spec", "needs exactly one of ratioMetric and thresholdMetric")
        if ratio is not None:
            ratio = _mapping(ratio, f"{where}.spec.ratioMetric")
            if "raw" in ratio or "rawType" in ratio:
                raise Problem(f"{where}.spec.ratioMetric.raw", "raw ratios are not supported: use good/total "
                                                               "or bad/total")
            if ("good" in ratio) == ("bad" in ratio):
                raise Problem(f"{where}.spec.ratioMetric", "needs good or bad (one of them) and total")
            if "total" not in ratio:
                raise Problem(f"{where}.spec.ratioMetric.total", "required")
            part = "good" if "good" in ratio else "bad"
            selections = {key: self._selection(ratio[key], f"{where}.spec.ratioMetric.{key}", service)
                          for key in ("total", part)}
            chosen = [(key, value) for key, value in selections.items() if value]
            if len(chosen) == 2 and chosen[0][1] != chosen[1][1]:
                raise Problem(f"{where}.spec.ratioMetric.{part}.metricSource.spec",
                              "must select the same requests as total (Sightline counts good and bad itself)")
            source_field = f"{where}.spec.ratioMetric.{chosen[0][0] if chosen else 'total'}.metricSource"
            if any(value is None for value in selections.values()) and not chosen:
                self.warnings.append(f"{document.label}: {source_field}.type is not {SOURCE_TYPE}: the SLI is "
                                     f"the availability of service {service!r} from Sightline's rollups")
            selection = chosen[0][1] if chosen else {}
            default_kind = SLO.AVAILABILITY
        else:
            source_field = f"{where}.spec.thresholdMetric.metricSource"
            selection = self._selection(threshold_metric, f"{where}.spec.thresholdMetric", service)
            if selection is None:
                self.warnings.append(f"{document.label}: {source_field}.type is not {SOURCE_TYPE}: the SLI is "
                                     f"the latency of service {service!r} from Sightline's rollups")
                selection = {}
            default_kind = SLO.LATENCY
        kind = selection.get("kind", default_kind)
        if kind not in (SLO.AVAILABILITY, SLO.LATENCY):
            raise Problem(f"{source_field}.spec.kind", "must be availability or latency")
        if threshold_metric is not None and kind != SLO.LATENCY:
            raise Problem(f"{source_field}.spec.kind", "a thresholdMetric is a latency SLI")
        if "service" in selection:
            definition["service"] = _string(selection["service"], f"{source_field}.spec.service")
        if "operation" in selection:
            definition["operation"] = _string(selection["operation"], f"{source_field}.spec.operation",
                                              required=False)
        if selection.get("edge") is not None:
            edge = _mapping(selection["edge"], f"{source_field}.spec.edge")
            definition["edge"] = {"parent": _string(edge.get("parent"), f"{source_field}.spec.edge.parent"),
                                  "child": _string(edge.get("child"), f"{source_field}.spec.edge.child")}

        # window, budgeting, objective
        time_windows = _list(spec.get("timeWindow"), "spec.timeWindow")
        if len(time_windows) != 1:
            raise Problem("spec.timeWindow", "needs exactly one window")
        window = _mapping(time_windows[0], "spec.timeWindow[0]")
        if "calendar" in window or window.get("isRolling", True) is not True:
            raise Problem("spec.timeWindow[0].isRolling", "only rolling windows are supported (isRolling: true)")
        definition["window"] = window.get("duration")
        if definition["window"] is None:
            raise Problem("spec.timeWindow[0].duration", "required, whole days like 28d or 30d")
        budgeting = spec.get("budgetingMethod", "Occurrences")
        if budgeting != "Occurrences":
            raise Problem("spec.budgetingMethod", f"only Occurrences is supported, got {budgeting!r}")
        objectives = _list(spec.get("objectives"), "spec.objectives")
        if len(objectives) != 1:
            raise Problem("spec.objectives", "needs exactly one objective")
        objective = _mapping(objectives[0], "spec.objectives[0]")
        if "target" in objective:
            definition["objective"] = _number(objective["target"], "spec.objectives[0].target")
        elif "targetPercent" in objective:
            definition["objective"] = round(_number(objective["targetPercent"], "spec.objectives[0].targetPercent")
                                            / 100, 12)
        else:
            raise Problem("spec.objectives[0].target", "required (or targetPercent)")
        if not 0 < definition["objective"] < 1:
            field = "target" if "target" in objective else "targetPercent"
            raise Problem(f"spec.objectives[0].{field}", "must be > 0 and < 1 (targetPercent > 0 and < 100)")
        if "timeSliceTarget" in objective or "timeSliceWindow" in objective:
            raise Problem("spec.objectives[0].timeSliceTarget", "time slices are not supported (Occurrences only)")
        threshold = None
        if kind == SLO.LATENCY:
            if objective.get("value") is not None:
                if objective.get("op", "lt") not in ("lt", "lte"):
                    raise Problem("spec.objectives[0].op", "must be lt or lte: good requests are faster than value")
                threshold = _number(objective["value"], "spec.objectives[0].value")
            if selection.get("threshold_ms") is not None:
                from_source = _number(selection["threshold_ms"], f"{source_field}.spec.threshold_ms")
                if threshold is not None and threshold != from_source:
                    raise Problem("spec.objectives[0].value", f"is {threshold:g} but {source_field}.spec.threshold_ms "
                                                              f"is {from_source:g}")
                threshold = from_source
            if threshold is None:
                raise Problem("spec.objectives[0].value", "required for latency: the threshold in milliseconds")
        definition["sli"] = {"type": kind, "threshold_ms": threshold}

        # alert policies
        conditions, channels = [], []
        for index, item in enumerate(_list(spec.get("alertPolicies"), "spec.alertPolicies", required=False)):
            field = f"spec.alertPolicies[{index}]"
            policy, field = self._inline_or_ref(item, "AlertPolicy", "alertPolicyRef", field)
            found, names, defaults = self._policy(policy, field, document)
            if not defaults:
                conditions.extend(found)
            channels.extend(name for name in names if name not in channels)
        definition["conditions"] = conditions
        definition["channels"] = channels
        return definition


def _unchanged(slo, fields, names):
    return (all(getattr(slo, key) == value for key, value in fields.items())
            and sorted(channel.name for channel in slo.channels.all()) == sorted(names))


def apply(text, source="<input>", dry_run=False):
    """Create or update the channels and SLOs of an OpenSLO file: all or nothing. Returns the
    lines to print (what changed, warnings); OpenSLOError names the document and field."""
    plan = Plan(load(text, source))
    lines = [f"warning: {warning}" for warning in plan.warnings]
    with transaction.atomic():
        for name, (fields, _label_) in sorted(plan.channels.items()):
            existing = Channel.objects.filter(name=name).first()
            if existing is not None and all(getattr(existing, key) == value for key, value in fields.items()):
                lines.append(f"channel {name}: unchanged")
                continue
            save_channel(fields, existing)
            lines.append(f"channel {name}: {'updated' if existing else 'created'}")
        for fields, names, _document in plan.validated:
            existing = SLO.objects.filter(name=fields["name"]).first()
            if existing is not None and _unchanged(existing, fields, names):
                lines.append(f"slo {fields['name']}: unchanged")
                continue
            save_slo(fields, names, existing)
            lines.append(f"slo {fields['name']}: {'updated' if existing else 'created'}")
        if dry_run:
            transaction.set_rollback(True)
            lines.append("dry run: nothing was changed")
    return lines


# ---------------------------------------------------------------- writing


def _number_out(value):
    return int(value) if float(value).is_integer() else value


def _channel_document(channel):
    annotations = {URL: channel.url} if channel.type != Channel.EMAIL else {TO: ", ".join(channel.to or [])}
    return {"apiVersion": API_VERSION, "kind": "AlertNotificationTarget",
            "metadata": {"name": channel.name, "annotations": annotations},
            "spec": {"target": channel.type, "description": f"Sightline {channel.type} channel"}}


def _policy(name, conditions, channels, severity=None, defaults=False):
    metadata = {"name": name}
    if severity:
        metadata["labels"] = {"severity": severity}
    if defaults:
        metadata["annotations"] = {DEFAULTS: "true"}
    items = []
    for index, condition in enumerate(conditions):
        items.append({"kind": "AlertCondition",
                      "metadata": {"name": name if len(conditions) == 1 else f"{name}-{index + 1}",
                                   "annotations": {SHORT_WINDOW: condition["short"]}},
                      "spec": {"severity": condition["severity"],
                               "condition": {"kind": "burnrate", "op": "gt",
                                             "threshold": _number_out(condition["burn_rate"]),
                                             "lookbackWindow": condition["long"], "alertAfter": condition["short"]}}})
    spec = {"alertWhenBreaching": True, "alertWhenResolved": True, "conditions": items}
    if channels:
        spec["notificationTargets"] = [{"targetRef": channel} for channel in channels]
    return {"kind": "AlertPolicy", "metadata": metadata, "spec": spec}


def slo_document(slo):
    definition = slo_definition(slo)
    selection = {"service": slo.service}
    if definition["operation"]:
        selection["operation"] = definition["operation"]
    if definition["edge"]:
        selection["edge"] = dict(definition["edge"])
    selection["kind"] = slo.sli_type
    adjective = "good" if slo.sli_type == SLO.AVAILABILITY else "fast"
    objective = {"displayName": f"{slo.objective:.6g} of requests {adjective}", "target": slo.objective}
    if slo.sli_type == SLO.LATENCY:
        selection["threshold_ms"] = _number_out(slo.threshold_ms)
        objective.update(op="lt", value=_number_out(slo.threshold_ms))
        metric = {"thresholdMetric": {"metricSource": {"type": SOURCE_TYPE, "spec": selection}}}
    else:
        source = {"metricSource": {"type": SOURCE_TYPE, "spec": selection}}
        metric = {"ratioMetric": {"counter": True, "good": copy.deepcopy(source), "total": copy.deepcopy(source)}}
    channels = definition["channels"]
    if definition["conditions"]:
        policies = [_policy(f"{slo.name}-{condition['severity']}-{index + 1}", [condition], channels,
                            severity=condition["severity"])
                    for index, condition in enumerate(definition["conditions"])]
    else:
        defaults = [condition.as_dict() for condition in
                    windows.default_conditions(dt.timedelta(days=slo.window_days))]
        policies = [_policy(f"{slo.name}-defaults", defaults, channels, defaults=True)]
    spec = {"description": slo.description, "service": slo.service,
            "indicator": {"metadata": {"name": f"{slo.name}-sli"}, "spec": metric},
            "timeWindow": [{"duration": definition["window"], "isRolling": True}],
            "budgetingMethod": "Occurrences", "objectives": [objective], "alertPolicies": policies}
    return {"apiVersion": API_VERSION, "kind": "SLO", "metadata": {"name": slo.name}, "spec": spec}


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def export():
    """Every channel and SLO as OpenSLO v1 YAML that apply reads back to the same definitions."""
    documents = [_channel_document(channel) for channel in Channel.objects.order_by("name")]
    documents += [slo_document(slo) for slo in SLO.objects.prefetch_related("channels").order_by("name")]
    header = "# Sightline SLOs as OpenSLO v1 (manage.py slo export); read back with manage.py slo apply FILE\n"
    if not documents:
        return header
    return header + yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, explicit_start=True,
                                  allow_unicode=True, default_flow_style=False)

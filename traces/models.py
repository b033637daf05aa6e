"""What ingest stores: the whole OTLP data model for spans and metric points.

Spans and metric points live in tables partitioned by day (see migrations 0001), so
retention drops a partition instead of deleting rows. Resources, instrumentation scopes
and metric descriptors repeat across millions of rows; each is stored once, keyed by a
64-bit hash of its content (ingest.convert.content_id), and referenced by that id.

Attribute maps are JSONB objects {key: value}. Strings, bools, ints, doubles and arrays
of them are plain JSON (a double keeps its decimal point: 3.0 stays 3.0); the AnyValue
kinds JSON has no word for are one-key objects named as in OTLP/JSON:
{"bytesValue": base64}, {"kvlistValue": {...}}, {"doubleValue": "NaN" | "Infinity" | "-Infinity"}.
"""

from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models.functions import Now


class SpanKind(models.IntegerChoices):
    UNSPECIFIED = 0
    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


class StatusCode(models.IntegerChoices):
    UNSET = 0
    OK = 1
    ERROR = 2


class Resource(models.Model):
    id = models.BigIntegerField(primary_key=True)
    service_name = models.TextField(db_index=True)
    attributes = models.JSONField()
    dropped_attributes_count = models.IntegerField(default=0)
    schema_url = models.TextField(blank=True, default="")
    first_seen = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "sightline_resource"

    def __str__(self):
        return self.service_name


class Scope(models.Model):
    id = models.BigIntegerField(primary_key=True)
    name = models.TextField()
    version = models.TextField(blank=True, default="")
    attributes = models.JSONField(default=dict)
    dropped_attributes_count = models.IntegerField(default=0)
    schema_url = models.TextField(blank=True, default="")

    class Meta:
        db_table = "sightline_scope"

    def __str__(self):
        return f"{self.name} {self.version}".strip()


class Span(models.Model):
    """One span. Times are kept in nanoseconds; start_time is the partition key."""

    pk = models.CompositePrimaryKey("trace_id", "span_id", "start_time")
    trace_id = models.BinaryField(max_length=16)
    span_id = models.BinaryField(max_length=8)
    parent_span_id = models.BinaryField(max_length=8, null=True)
    start_time = models.DateTimeField()
    start_ns = models.BigIntegerField()
    end_ns = models.BigIntegerField()
    duration_ns = models.BigIntegerField()
    name = models.TextField()
    kind = models.SmallIntegerField(choices=SpanKind.choices)
    status_code = models.SmallIntegerField(choices=StatusCode.choices)
    status_message = models.TextField(blank=True, default="")
    trace_state = models.TextField(blank=True, default="")
    flags = models.BigIntegerField(default=0)
    service_name = models.TextField()
    resource = models.ForeignKey(Resource, on_delete=models.DO_NOTHING, db_constraint=False)
    scope = models.ForeignKey(Scope, on_delete=models.DO_NOTHING, db_constraint=False)
    attributes = models.JSONField(default=dict)
    events = models.JSONField(default=list)
    links = models.JSONField(default=list)
    dropped_attributes_count = models.IntegerField(default=0)
    dropped_events_count = models.IntegerField(default=0)
    dropped_links_count = models.IntegerField(default=0)
    received_at = models.DateTimeField()

    class Meta:
        db_table = "sightline_span"
        managed = False  # partitioned table, created in SQL by migration 0001

    def __str__(self):
        return f"{self.service_name} {self.name}"


class MetricType(models.IntegerChoices):
    GAUGE = 1
    SUM = 2
    HISTOGRAM = 3
    EXPONENTIAL_HISTOGRAM = 4
    SUMMARY = 5


class Temporality(models.IntegerChoices):
    UNSPECIFIED = 0
    DELTA = 1
    CUMULATIVE = 2


class Metric(models.Model):
    """A metric as one resource and scope report it: name, type, unit, description."""

    id = models.BigIntegerField(primary_key=True)
    name = models.TextField(db_index=True)
    description = models.TextField(blank=True, default="")
    unit = models.TextField(blank=True, default="")
    type = models.SmallIntegerField(choices=MetricType.choices)
    temporality = models.SmallIntegerField(choices=Temporality.choices, default=0)
    is_monotonic = models.BooleanField(default=False)
    metadata = models.JSONField(default=dict)
    service_name = models.TextField(db_index=True)
    resource = models.ForeignKey(Resource, on_delete=models.DO_NOTHING, db_constraint=False)
    scope = models.ForeignKey(Scope, on_delete=models.DO_NOTHING, db_constraint=False)

    class Meta:
        db_table = "sightline_metric"

    def __str__(self):
        return self.name


class MetricPoint(models.Model):
    """One data point of any metric type; the columns that do not apply are null."""

    pk = models.CompositePrimaryKey("metric_id", "series_id", "time")
    metric = models.ForeignKey(Metric, on_delete=models.DO_NOTHING, db_constraint=False)
    series_id = models.BigIntegerField()  # content hash of the point's attributes
    time = models.DateTimeField()
    time_ns = models.BigIntegerField()
    start_time_ns = models.BigIntegerField()
    attributes = models.JSONField(default=dict)
    flags = models.BigIntegerField(default=0)
    # gauge and sum
    value_int = models.BigIntegerField(null=True)
    value_double = models.FloatField(null=True)
    # histogram, exponential histogram, summary
    count = models.DecimalField(max_digits=20, decimal_places=0, null=True)
    sum = models.FloatField(null=True)
    min = models.FloatField(null=True)
    max = models.FloatField(null=True)
    bucket_counts = models.JSONField(null=True)  # histogram: counts per explicit bound
    explicit_bounds = models.JSONField(null=True)
    scale = models.IntegerField(null=True)  # exponential histogram
    zero_count = models.DecimalField(max_digits=20, decimal_places=0, null=True)
    zero_threshold = models.FloatField(null=True)
    positive = models.JSONField(null=True)  # {"offset": n, "bucket_counts": [...]}
    negative = models.JSONField(null=True)
    quantile_values = models.JSONField(null=True)  # summary: [{"quantile": q, "value": v}]
    exemplars = models.JSONField(default=list)
    received_at = models.DateTimeField()

    class Meta:
        db_table = "sightline_metric_point"
        managed = False  # partitioned table, created in SQL by migration 0001

    def __str__(self):
        return f"{self.metric_id} @ {self.time_ns}"


# --- The read model (issue: correlation). Dashboards, APIs and SLOs read these. ----------


class TraceSummary(models.Model):
    """One correlated trace: its root, timing, size, errors, and per-span analysis.

    `contributions` keeps what this trace added to the RED and edge rollups, so that a
    late span re-opening the trace replaces its contribution instead of adding it twice.
    """

    trace_id = models.BinaryField(max_length=16, primary_key=True)
    root_span_id = models.BinaryField(max_length=8)
    root_missing = models.BooleanField(default=False)
    root_service = models.TextField()
    root_operation = models.TextField()
    environment = models.TextField(blank=True, default="")
    start_time = models.DateTimeField(db_index=True)
    start_ns = models.BigIntegerField()
    end_ns = models.BigIntegerField()
    duration_ns = models.BigIntegerField()
    span_count = models.IntegerField()
    error_count = models.IntegerField()
    services = models.JSONField(default=list)
    orphan_span_ids = models.JSONField(default=list)  # hex
    skew_ns = models.JSONField(default=dict)  # span id hex -> offset added to its times
    span_stats = models.JSONField(default=dict)  # span id hex -> [self_ns, critical_ns]
    contributions = models.JSONField(default=dict)
    correlated_at = models.DateTimeField()

    class Meta:
        db_table = "sightline_trace_summary"
        indexes = [
            models.Index(fields=["root_service", "start_time"], name="sightline_trace_root_time"),
            # trace search by any service of the trace: services @> '["name"]'
            GinIndex(fields=["services"], opclasses=["jsonb_path_ops"], name="sightline_trace_services"),
        ]

    def __str__(self):
        return bytes(self.trace_id).hex()


class RedRollupBase(models.Model):
    """Requests, errors and a latency histogram per time bucket and (environment, service,
    operation, kind, entry). `entry` marks spans where a request enters the service (no
    parent, or a parent in another service): a service's own request rate counts those."""

    pk = models.CompositePrimaryKey("minute", "environment", "service", "operation", "kind", "entry")
    minute = models.DateTimeField()  # start of the bucket: a minute, or an hour in the hourly table
    environment = models.TextField(default="")
    service = models.TextField()
    operation = models.TextField()
    kind = models.SmallIntegerField()
    entry = models.BooleanField(default=False)
    count = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    histogram = models.JSONField(default=dict)  # sparse {bucket index: count}, see traces.analysis

    class Meta:
        abstract = True

    def __str__(self):
        return f"{self.minute:%Y-%m-%d %H:%M} {self.service} {self.operation}"


class RedRollup(RedRollupBase):
    class Meta:
        db_table = "sightline_red_rollup"
        indexes = [models.Index(fields=["service", "minute"], name="sightline_red_service_minute")]


class RedRollupHour(RedRollupBase):
    """The same per hour: long ranges (24 h, 7 d) read a few hundred rows, not tens of thousands."""

    class Meta:
        db_table = "sightline_red_rollup_hour"
        indexes = [models.Index(fields=["service", "minute"], name="sightline_redh_service_minute")]


class EdgeRollupBase(models.Model):
    """Calls, errors and a latency histogram per time bucket and service-graph edge."""

    pk = models.CompositePrimaryKey("minute", "environment", "parent", "child", "child_type")
    minute = models.DateTimeField()
    environment = models.TextField(default="")
    parent = models.TextField()
    child = models.TextField()
    child_type = models.TextField()  # service, database, messaging, external
    calls = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    histogram = models.JSONField(default=dict)

    class Meta:
        abstract = True

    def __str__(self):
        return f"{self.parent} -> {self.child}"


class EdgeRollup(EdgeRollupBase):
    class Meta:
        db_table = "sightline_edge_rollup"


class EdgeRollupHour(EdgeRollupBase):
    class Meta:
        db_table = "sightline_edge_rollup_hour"


class CriticalPathShare(models.Model):
    """How much of one trace's critical path one operation took: the input of hotspots."""

    pk = models.CompositePrimaryKey("trace_id", "service", "operation")
    trace_id = models.BinaryField(max_length=16)
    start_time = models.DateTimeField()
    root_service = models.TextField()
    root_operation = models.TextField()
    trace_duration_ns = models.BigIntegerField()
    service = models.TextField()
    operation = models.TextField()
    critical_ns = models.BigIntegerField()
    self_ns = models.BigIntegerField()

    class Meta:
        db_table = "sightline_critical_path_share"
        indexes = [models.Index(fields=["start_time", "service"], name="sightline_cp_time_service")]

    def __str__(self):
        return f"{self.service} {self.operation}"


class CorrelationState(models.Model):
    """Small facts the correlation keeps across restarts (e.g. when Redis was last seen whole)."""

    key = models.TextField(primary_key=True)
    value = models.TextField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "sightline_correlation_state"

    def __str__(self):
        return self.key

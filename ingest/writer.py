"""Batched, idempotent writes of converted OTLP into PostgreSQL.

1. Upsert the batch's resources, scopes and metric descriptors (INSERT ... ON CONFLICT).
2. COPY the rows straight into the partitioned table, inside a savepoint.
3. If that hits a row stored before (an exporter retried), roll back to the savepoint,
   COPY into a temporary staging table and INSERT ... SELECT ... ON CONFLICT DO NOTHING:
   a span delivered twice is stored once.
All in one transaction: when write_*() returns, the batch is committed.
"""

import datetime as dt

import psycopg
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from traces.partitions import ensure_partition

SPAN_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "start_ns", "end_ns", "duration_ns", "name", "kind",
    "status_code", "status_message", "trace_state", "flags", "service_name", "resource_id", "scope_id",
    "attributes", "events", "links", "dropped_attributes_count", "dropped_events_count", "dropped_links_count",
    "start_time",
)
POINT_COLUMNS = (
    "metric_id", "series_id", "time_ns", "start_time_ns", "attributes", "flags", "value_int", "value_double",
    "count", "sum", "min", "max", "bucket_counts", "explicit_bounds", "scale", "zero_count", "zero_threshold",
    "positive", "negative", "quantile_values", "exemplars", "time",
)
RESOURCE_COLUMNS = ("id", "service_name", "attributes", "dropped_attributes_count", "schema_url")
SCOPE_COLUMNS = ("id", "name", "version", "attributes", "dropped_attributes_count", "schema_url")
METRIC_COLUMNS = ("id", "name", "description", "unit", "type", "temporality", "is_monotonic", "metadata",
                  "service_name", "resource_id", "scope_id")

_STAGING_SQL = """
CREATE TEMP TABLE IF NOT EXISTS stage_span (
    trace_id bytea, span_id bytea, parent_span_id bytea, start_ns bigint, end_ns bigint, duration_ns bigint,
    name text, kind smallint, status_code smallint, status_message text, trace_state text, flags bigint,
    service_name text, resource_id bigint, scope_id bigint, attributes jsonb, events jsonb, links jsonb,
    dropped_attributes_count integer, dropped_events_count integer, dropped_links_count integer,
    start_time timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_point (
    metric_id bigint, series_id bigint, time_ns bigint, start_time_ns bigint, attributes jsonb, flags bigint,
    value_int bigint, value_double double precision, count numeric(20, 0), sum double precision,
    min double precision, max double precision, bucket_counts jsonb, explicit_bounds jsonb, scale integer,
    zero_count numeric(20, 0), zero_threshold double precision, positive jsonb, negative jsonb,
    quantile_values jsonb, exemplars jsonb, time timestamptz
) ON COMMIT DELETE ROWS;
"""

_INSERT_NEW = "INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ON CONFLICT DO NOTHING"


def _staging(cursor):
    """Create this connection's staging tables once."""
    raw = connection.connection
    if getattr(raw, "_sightline_staging", False) is not True:
        cursor.execute(_STAGING_SQL)
        raw._sightline_staging = True


def _copy(cursor, table, columns, rows):
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _upsert(cursor, table, columns, rows_by_id):
    """INSERT ... ON CONFLICT DO NOTHING: a few rows per batch, cheaper than remembering them."""
    if rows_by_id:
        values = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows_by_id))
        cursor.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values} ON CONFLICT (id) DO NOTHING",
                       [value for row in rows_by_id.values() for value in row])


RETENTION = {"sightline_span": "RETENTION_DAYS_SPANS", "sightline_metric_point": "RETENTION_DAYS_METRICS"}


def _partition_window_days(table):
    today = int(dt.datetime.now(dt.timezone.utc).timestamp() // 86400)
    return today - getattr(settings, RETENTION[table]), today + 1


def _ensure_partitions(table, days):
    low, high = _partition_window_days(table)
    for day in days:
        if low <= day <= high:  # anything else waits in the default partition
            ensure_partition(table, day)


def _write(table, stage, columns, batch, descriptors):
    """COPY straight into the table; if some rows were stored before, insert only the new ones.

    Duplicates come from exporter retries, which are rare: the common case pays for one
    COPY, and only a batch that hits an existing row pays for staging and ON CONFLICT.
    """
    _ensure_partitions(table, batch.days)
    with transaction.atomic(), connection.cursor() as cursor:
        for descriptor_table, descriptor_columns, rows_by_id in descriptors:
            _upsert(cursor, descriptor_table, descriptor_columns, rows_by_id)
        try:
            with transaction.atomic():  # a savepoint to fall back to
                _copy(cursor, table, columns, batch.rows)
            return len(batch.rows)
        except (IntegrityError, psycopg.errors.UniqueViolation):  # COPY errors are not wrapped by Django
            pass
        _staging(cursor)
        _copy(cursor, stage, columns, batch.rows)
        cursor.execute(_INSERT_NEW.format(table=table, stage=stage, columns=", ".join(columns)))
        return cursor.rowcount


def write_spans(batch):
    """Store a converted trace batch; return how many spans were new (not duplicates)."""
    if not batch.rows:
        return 0
    return _write("sightline_span", "stage_span", SPAN_COLUMNS, batch, (
        ("sightline_resource", RESOURCE_COLUMNS, batch.resources),
        ("sightline_scope", SCOPE_COLUMNS, batch.scopes),
    ))


def write_metrics(batch):
    """Store a converted metrics batch; return how many points were new."""
    if not batch.rows:
        return 0
    return _write("sightline_metric_point", "stage_point", POINT_COLUMNS, batch, (
        ("sightline_resource", RESOURCE_COLUMNS, batch.resources),
        ("sightline_scope", SCOPE_COLUMNS, batch.scopes),
        ("sightline_metric", METRIC_COLUMNS, batch.metrics),
    ))

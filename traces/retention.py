"""Retention, run hourly by beat: whole daily partitions are dropped, never row by row.

1. For spans and metric points: create today's and tomorrow's partitions ahead of ingest;
   drop every partition wholly older than the signal's retention; delete the few old rows
   that waited in the DEFAULT partition.
2. Delete trace summaries and critical-path shares as old as the spans they describe, and
   RED / edge rollups older than the rollup retention (indexed by time, small tables).
3. ANALYZE the recent partitions, so query plans never depend on autovacuum's timing.
"""

import datetime as dt

from django.conf import settings
from django.db import connection

from traces.partitions import EPOCH, PARTITIONED, ensure_partition, existing_days, forget_known, partition_name

SIGNALS = {"sightline_span": "RETENTION_DAYS_SPANS", "sightline_metric_point": "RETENTION_DAYS_METRICS"}


def _today(now):
    return int(now.timestamp() // 86400)


def drop_old_partitions(table, keep_days, now):
    """Drop table's daily partitions whose whole day is older than keep_days; return their names."""
    first_kept = _today(now) - keep_days
    dropped = []
    with connection.cursor() as cursor:
        for day in sorted(existing_days(table)):
            if day < first_kept:
                name = partition_name(table, day)
                cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
                dropped.append(name)
        cutoff = EPOCH + dt.timedelta(days=first_kept)
        cursor.execute(f'DELETE FROM "{table}_default" WHERE {PARTITIONED[table]} < %s', [cutoff])
    forget_known()
    return dropped


def delete_old_read_model(now):
    span_cutoff = now - dt.timedelta(days=settings.RETENTION_DAYS_SPANS)
    rollup_cutoff = now - dt.timedelta(days=settings.RETENTION_DAYS_ROLLUPS)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM sightline_trace_summary WHERE start_time < %s", [span_cutoff])
        cursor.execute("DELETE FROM sightline_critical_path_share WHERE start_time < %s", [span_cutoff])
        for table in ("sightline_red_rollup", "sightline_red_rollup_hour",
                      "sightline_edge_rollup", "sightline_edge_rollup_hour"):
            cursor.execute(f"DELETE FROM {table} WHERE minute < %s", [rollup_cutoff])


def analyze_recent(now):
    """ANALYZE today's and yesterday's partitions: the planner needs their statistics, and
    autovacuum may be off or late (a new day's partition starts with none)."""
    with connection.cursor() as cursor:
        for table in SIGNALS:
            for day in (_today(now) - 1, _today(now)):
                if day in existing_days(table):
                    cursor.execute(f'ANALYZE "{partition_name(table, day)}"')


def run(now=None):
    now = now or dt.datetime.now(dt.timezone.utc)
    dropped = []
    for table, setting in SIGNALS.items():
        for day in (_today(now), _today(now) + 1):
            ensure_partition(table, day)
        dropped += drop_old_partitions(table, getattr(settings, setting), now)
    delete_old_read_model(now)
    analyze_recent(now)
    return dropped

"""Daily partitions of the span and metric point tables.

A row whose day has no partition lands in the table's DEFAULT partition. ensure_partition()
creates a day's partition and moves any rows the default partition already holds for that
day into it, in one transaction, so creating a partition never fails on earlier rows.
"""

import datetime as dt

from django.db import connection, transaction

PARTITIONED = {"sightline_span": "start_time", "sightline_metric_point": "time"}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

_known = set()  # (table, day) this process has seen to exist


def partition_name(table, day):
    return f"{table}_{(EPOCH + dt.timedelta(days=day)):%Y%m%d}"


def existing_days(table):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s", [table])
        names = [row[0] for row in cursor.fetchall()]
    days = set()
    for name in names:
        suffix = name.rsplit("_", 1)[-1]
        if suffix.isdigit() and len(suffix) == 8:
            date = dt.datetime.strptime(suffix, "%Y%m%d").replace(tzinfo=dt.timezone.utc)
            days.add((date - EPOCH).days)
    return days


def ensure_partition(table, day):
    """Create table's partition for day (days since the epoch) if it does not exist."""
    if (table, day) in _known:
        return
    column = PARTITIONED[table]
    name = partition_name(table, day)
    low = EPOCH + dt.timedelta(days=day)
    high = low + dt.timedelta(days=1)
    with transaction.atomic(), connection.cursor() as cursor:
        # One creator at a time per table; others wait, then find it made.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [table])
        cursor.execute("SELECT to_regclass(%s)", [name])
        if cursor.fetchone()[0] is None:
            cursor.execute(f'CREATE TABLE "{name}" (LIKE "{table}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)')
            cursor.execute(
                f'WITH moved AS (DELETE FROM "{table}_default" WHERE {column} >= %s AND {column} < %s RETURNING *) '
                f'INSERT INTO "{name}" SELECT * FROM moved', [low, high])
            cursor.execute(f'ALTER TABLE "{table}" ATTACH PARTITION "{name}" FOR VALUES FROM (%s) TO (%s)', [low, high])
    _known.add((table, day))


def forget_known():
    """For tests and retention: the next ensure_partition() looks again."""
    _known.clear()

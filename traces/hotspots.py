"""Latency hotspots: where the time goes, over all traces and over slow ones, in one query.

For the traces that started in [start, end) (optionally only those whose root is in one
service), every (service, operation) is ranked by its share of the traces' critical-path
time, and by the same share over slow traces only: those at or above the p95 duration
of their root operation in the window. Each row carries the p95 of the operation's self
time and exemplar slow traces where it took the most critical-path time.

A window with more than SAMPLE_TRACES traces is read from a uniform sample of them, chosen
by the last two bytes of the trace id (random in W3C and X-Ray ids alike): the shares are
ratios and stay accurate, and a day of a busy system answers in the time of an hour.
"""

import datetime as dt
import json

from django.db import connection, transaction

_HOTSPOTS = """
WITH traces AS (
    SELECT trace_id, root_service, root_operation, duration_ns
    FROM sightline_trace_summary
    WHERE start_time >= %(start)s AND start_time < %(end)s
      AND (%(root_service)s::text IS NULL OR root_service = %(root_service)s)
      AND (%(through)s::jsonb IS NULL OR services @> %(through)s::jsonb)
      AND (%(environment)s::text IS NULL OR environment = %(environment)s)
      AND get_byte(trace_id, 15) * 256 + get_byte(trace_id, 14) < %(cut)s
),
thresholds AS (
    SELECT root_service, root_operation,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) AS p95_ns
    FROM traces GROUP BY root_service, root_operation
),
marked AS (
    SELECT t.trace_id, t.duration_ns, t.duration_ns >= th.p95_ns AS slow
    FROM traces t JOIN thresholds th USING (root_service, root_operation)
),
totals AS (
    SELECT sum(duration_ns) AS all_ns, sum(duration_ns) FILTER (WHERE slow) AS slow_ns FROM marked
),
shares AS (  -- per trace through its primary key: never a scan of the window's shares
    SELECT c.service, c.operation, m.trace_id, c.critical_ns, c.self_ns, m.slow
    FROM marked m CROSS JOIN LATERAL (
        SELECT service, operation, critical_ns, self_ns FROM sightline_critical_path_share
        WHERE trace_id = m.trace_id OFFSET 0) c  -- OFFSET 0: stays a per-trace index lookup
)
SELECT s.service, s.operation,
       sum(s.critical_ns)::float8 / nullif(t.all_ns, 0) AS critical_path_share,
       coalesce(sum(s.critical_ns) FILTER (WHERE s.slow), 0)::float8 / nullif(t.slow_ns, 0)
           AS slow_critical_path_share,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY s.self_ns) AS self_time_p95_ns,
       (array_agg(encode(s.trace_id, 'hex') ORDER BY s.slow DESC, s.critical_ns DESC))[1:%(exemplars)s]
           AS exemplar_trace_ids
FROM shares s CROSS JOIN totals t
GROUP BY s.service, s.operation, t.all_ns, t.slow_ns
ORDER BY slow_critical_path_share DESC NULLS LAST, critical_path_share DESC, s.service, s.operation
LIMIT %(limit)s
"""


SAMPLE_TRACES = 2_000
PROBE = dt.timedelta(minutes=15)
_COUNT = """
SELECT count(*) FROM sightline_trace_summary
WHERE start_time >= %(probe)s AND start_time < %(end)s
  AND (%(root_service)s::text IS NULL OR root_service = %(root_service)s)
  AND (%(through)s::jsonb IS NULL OR services @> %(through)s::jsonb)
  AND (%(environment)s::text IS NULL OR environment = %(environment)s)
"""


def hotspots(start, end, root_service=None, limit=20, exemplars=3, through=None, environment=None):
    """Rows of (service, operation, critical_path_share, slow_critical_path_share,
    self_time_p95_ns, exemplar_trace_ids), hottest in slow traces first.

    root_service: only traces whose root is in that service; through: only traces with a
    span in that service; environment: only traces of that deployment environment."""
    values = {"start": start, "end": end, "root_service": root_service,
              "through": json.dumps([through]) if through is not None else None,
              "environment": environment, "limit": limit, "exemplars": exemplars, "cut": 65536}
    # How many traces the window holds, estimated from its last 15 minutes; the sample keeps
    # about SAMPLE_TRACES of them (all of them in a quieter window).
    probe = max(start, end - PROBE)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '64MB'")  # the final sort stays in memory
        cursor.execute("SET LOCAL jit = off")  # compiling costs more than this query runs
        cursor.execute(_COUNT, {**values, "probe": probe})
        estimate = cursor.fetchone()[0] * ((end - start) / (end - probe))
        if estimate > SAMPLE_TRACES:
            values["cut"] = max(1, int(65536 * SAMPLE_TRACES / estimate))
        cursor.execute(_HOTSPOTS, values)
        columns = [column.name for column in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]

"""Render ingest's counters (kept in Redis by ingest.health) as Prometheus text."""

HELP = {
    "spans_received_total": ("counter", "Spans received over OTLP, valid or not."),
    "spans_rejected_total": ("counter", "Spans dropped as invalid and reported in partial_success."),
    "spans_stored_total": ("counter", "Spans newly stored."),
    "spans_duplicates_total": ("counter", "Spans received again (exporter retries) and stored once."),
    "points_received_total": ("counter", "Metric data points received over OTLP, valid or not."),
    "points_rejected_total": ("counter", "Metric data points dropped as invalid."),
    "points_stored_total": ("counter", "Metric data points newly stored."),
    "points_duplicates_total": ("counter", "Metric data points received again and stored once."),
    "batches_written_total": ("counter", "Export requests written to PostgreSQL."),
    "write_failures_total": ("counter", "Writes that failed (database or Redis unavailable)."),
    "requests_failed_total": ("counter", "Export requests answered with an error."),
    "requests_overloaded_total": ("counter", "Export requests told to retry because too many were in flight."),
    "requests_unauthenticated_total": ("counter", "Export requests without a valid ingest token."),
    "write_seconds": ("histogram", "Time to write one export request and hand its traces on."),
}
PREFIX = "sightline_ingest_"
STALE_AFTER = 30  # seconds without a report: that ingest process is gone


def _number(value):
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def render_prometheus(stats, inflight, now):
    stats = {key.decode(): value.decode() for key, value in stats.items()}
    lines = []
    for name, (kind, help_text) in HELP.items():
        lines.append(f"# HELP {PREFIX}{name} {help_text}")
        lines.append(f"# TYPE {PREFIX}{name} {kind}")
        if kind == "counter":
            lines.append(f"{PREFIX}{name} {_number(stats.get(name, 0))}")
            continue
        buckets = sorted(((key, value) for key, value in stats.items() if key.startswith(f"{name}_bucket")),
                         key=lambda item: float(item[0].split('"')[1].replace("+Inf", "inf")))
        for key, value in buckets:
            lines.append(f"{PREFIX}{key} {_number(value)}")
        lines.append(f"{PREFIX}{name}_sum {_number(stats.get(f'{name}_sum', 0))}")
        lines.append(f"{PREFIX}{name}_count {_number(stats.get(f'{name}_count', 0))}")
    in_flight, processes = 0, 0
    for value in inflight.values():
        count, seen = value.decode().split()
        if now - float(seen) < STALE_AFTER:
            in_flight += int(count)
            processes += 1
    lines += [f"# HELP {PREFIX}in_flight Export requests being worked on now.", f"# TYPE {PREFIX}in_flight gauge",
              f"{PREFIX}in_flight {in_flight}",
              f"# HELP {PREFIX}processes Ingest processes that reported in the last {STALE_AFTER} s.",
              f"# TYPE {PREFIX}processes gauge", f"{PREFIX}processes {processes}"]
    return "\n".join(lines) + "\n"

"""The beat schedule of the traces app, beside its tasks (traces/tasks.py).

No Django imports: config/settings.py builds CELERY_BEAT_SCHEDULE from it.
"""


def beat_schedule(settle_tick_seconds):
    return {
        "settle-traces": {"task": "traces.tasks.settle", "schedule": float(settle_tick_seconds)},
        "maintain-partitions": {"task": "traces.tasks.maintain_partitions", "schedule": 3600.0},
    }

"""The beat schedule of the traces app, beside its tasks (traces/tasks.py).

No Django imports: config/settings.py builds CELERY_BEAT_SCHEDULE from it.
Partition upkeep and retention run at a fixed minute of every hour (crontab), not "an hour
after beat started": a beat that restarts more often than hourly would otherwise never run it.
"""

from celery.schedules import crontab


def beat_schedule(settle_tick_seconds):
    return {
        "settle-traces": {"task": "traces.tasks.settle", "schedule": float(settle_tick_seconds)},
        "maintain-partitions": {"task": "traces.tasks.maintain_partitions", "schedule": crontab(minute=7)},
    }

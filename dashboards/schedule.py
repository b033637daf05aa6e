"""The beat schedule of the dashboards app (SLO evaluation), beside its tasks.

No Django imports: config/settings.py builds CELERY_BEAT_SCHEDULE from it.
"""


def beat_schedule(slo_eval_seconds):
    return {"evaluate-slos": {"task": "dashboards.tasks.evaluate_slos", "schedule": float(slo_eval_seconds)}}

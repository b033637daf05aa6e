"""Celery tasks of the dashboards app: SLO evaluation (beat) and notification delivery.
Thin wrappers over dashboards.slos.evaluate and dashboards.slos.notify."""

from celery import shared_task

from dashboards.slos import evaluate as evaluation


@shared_task(ignore_result=True, expires=300)
def evaluate_slos():
    evaluation.evaluate_all()


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def deliver(self, delivery_id):
    """Send one notification; when it fails, try again later with backoff (notify says when)."""
    from dashboards.slos import notify

    retry_in = notify.deliver(delivery_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)

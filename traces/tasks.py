"""Celery tasks of the traces app: thin wrappers over traces.settle, traces.correlate and
traces.retention, which are tested without Celery. The schedule is traces/schedule.py."""

from celery import shared_task
from django.db import InterfaceError, OperationalError
from redis.exceptions import RedisError

from traces import correlate as correlation
from traces import retention
from traces import settle as settling
from traces.redis_client import get_redis

TRANSIENT = (OperationalError, InterfaceError, RedisError)


@shared_task(acks_late=True, ignore_result=True, autoretry_for=TRANSIENT, retry_backoff=True,
             retry_backoff_max=60, max_retries=None)
def correlate(trace_ids_hex):
    """Correlate one chunk of settled traces; safe to run twice (see traces.correlate)."""
    correlation.correlate_traces([bytes.fromhex(trace_id) for trace_id in trace_ids_hex])


@shared_task(ignore_result=True, expires=30)
def settle():
    settling.settle_once(get_redis(), correlate.delay)


@shared_task(ignore_result=True, expires=3000)
def maintain_partitions():
    retention.run()

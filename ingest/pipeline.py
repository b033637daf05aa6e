"""Receiver -> admission -> convert -> write -> hand-off: shared by gRPC and HTTP.

export_traces(request) / export_metrics(request) take a decoded Export*ServiceRequest
and return ExportResult(rejected, error) for OTLP partial_success, or raise an
ingest.errors.IngestError that the receiver maps to its status code. They return only
after the write committed and the trace ids were handed on to correlation (Redis), so an
OK answer means nothing is lost.
"""

import hmac
import logging
import threading
import time
from dataclasses import dataclass

import psycopg
from django.conf import settings
from django.db import DatabaseError, DataError, InterfaceError, OperationalError, connection
from redis.exceptions import RedisError

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ingest import convert, health, writer
from ingest.errors import InvalidArgument, Overloaded, Unauthenticated, Unavailable
from traces.redis_client import get_redis

log = logging.getLogger("sightline.ingest")

# Trace ids waiting for correlation: a sorted set, member = trace id (hex), score = last seen.
PENDING_TRACES_KEY = "sightline:traces:pending"


@dataclass
class ExportResult:
    accepted: int = 0  # items valid in the request (stored now, or stored before)
    rejected: int = 0
    error: str = ""


class Admission:
    """At most `limit` requests in flight in this process; the rest are told to retry."""

    def __init__(self, limit):
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.in_flight = 0

    def __enter__(self):
        if not self._slots.acquire(blocking=False):
            health.counter("requests_overloaded_total").inc()
            raise Overloaded(f"more than {self.limit} export requests in flight; retry later")
        with self._lock:
            self.in_flight += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self.in_flight -= 1
        self._slots.release()


_admission = None


def admission():
    global _admission
    if _admission is None:
        _admission = Admission(settings.INGEST_MAX_INFLIGHT)
    return _admission


def check_token(authorization):
    """Raise Unauthenticated unless ingest tokens are off or the header carries one of them."""
    tokens = settings.INGEST_TOKENS
    if not tokens:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and any(hmac.compare_digest(token.strip(), t) for t in tokens):
        return
    health.counter("requests_unauthenticated_total").inc()
    raise Unauthenticated("a valid 'Authorization: Bearer <token>' is required")


def _hand_off(trace_ids):
    """Tell correlation which traces have new spans (after the write committed)."""
    if not trace_ids:
        return
    now = time.time()
    get_redis().zadd(PENDING_TRACES_KEY, {trace_id.hex(): now for trace_id in trace_ids})


def _store(signal, batch, write):
    started = time.perf_counter()
    try:
        stored = write(batch)
        _hand_off(batch.trace_ids)
    except (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError) as exc:
        connection.close()  # reconnect on the next request
        health.counter("write_failures_total").inc()
        log.warning("database unavailable: %s", exc)
        raise Unavailable("the database is unavailable; retry later") from exc
    except RedisError as exc:
        health.counter("write_failures_total").inc()
        log.warning("redis unavailable: %s", exc)
        raise Unavailable("redis is unavailable; retry later") from exc
    except (DataError, psycopg.DataError) as exc:
        # Retrying cannot help: say so, or the exporter would resend this batch forever.
        health.counter("write_failures_total").inc()
        log.warning("the database refused a %s batch as invalid: %s", signal, exc)
        raise InvalidArgument(f"the database refused the batch: {exc}".splitlines()[0]) from exc
    except (DatabaseError, psycopg.Error) as exc:
        connection.close()
        health.counter("write_failures_total").inc()
        log.exception("database error writing %s", signal)
        raise Unavailable("the database refused the write; retry later") from exc
    health.histogram("write_seconds").observe(time.perf_counter() - started)
    health.counter("batches_written_total").inc()
    health.counter(f"{signal}_stored_total").inc(stored)
    health.counter(f"{signal}_duplicates_total").inc(len(batch.rows) - stored)


def _export(signal, request, convert_fn, write_fn):
    with admission():
        batch = convert_fn(request)
        health.counter(f"{signal}_received_total").inc(len(batch.rows) + batch.rejected)
        health.counter(f"{signal}_rejected_total").inc(batch.rejected)
        _store(signal, batch, write_fn)
    return ExportResult(accepted=len(batch.rows), rejected=batch.rejected, error=batch.error)


def export_traces(request):
    return _export("spans", request, convert.convert_traces, writer.write_spans)


def export_metrics(request):
    return _export("points", request, convert.convert_metrics, writer.write_metrics)


def trace_response(result):
    """The ExportTraceServiceResponse for a result, with partial_success when spans were rejected."""
    response = ExportTraceServiceResponse()
    if result.rejected:
        response.partial_success.rejected_spans = result.rejected
        response.partial_success.error_message = result.error
    return response


def metrics_response(result):
    response = ExportMetricsServiceResponse()
    if result.rejected:
        response.partial_success.rejected_data_points = result.rejected
        response.partial_success.error_message = result.error
    return response

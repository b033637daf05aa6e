"""Ingest's own health figures: counters and a write-latency histogram.

Each ingest process counts in memory and a background thread adds the increments to a
Redis hash every few seconds, so `/metrics` on the web port can show the sum over every
ingest process in Prometheus text format (dashboards.views.prometheus_metrics).
"""

import logging
import os
import socket
import threading
import time

log = logging.getLogger("sightline.ingest")

STATS_KEY = "sightline:ingest:stats"  # hash: metric name -> cumulative value
INFLIGHT_KEY = "sightline:ingest:inflight"  # hash: process -> "in_flight seen_at"
WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_lock = threading.Lock()
_pending = {}  # name -> increment not yet flushed


class Counter:
    def __init__(self, name):
        self.name = name

    def inc(self, amount=1):
        if amount:
            with _lock:
                _pending[self.name] = _pending.get(self.name, 0) + amount


class Histogram:
    def __init__(self, name, buckets=WRITE_BUCKETS):
        self.name = name
        self.buckets = buckets

    def observe(self, value):
        with _lock:
            for bound in self.buckets:
                if value <= bound:
                    key = f"{self.name}_bucket{{le=\"{bound}\"}}"
                    _pending[key] = _pending.get(key, 0) + 1
            for key, amount in ((f'{self.name}_bucket{{le="+Inf"}}', 1), (f"{self.name}_sum", value),
                                (f"{self.name}_count", 1)):
                _pending[key] = _pending.get(key, 0) + amount


def counter(name):
    return Counter(name)


def histogram(name):
    return Histogram(name)


def process_id():
    return f"{socket.gethostname()}:{os.getpid()}"


def flush(redis_client, in_flight):
    """Add the pending increments to Redis; keep them for next time if Redis is down."""
    with _lock:
        increments = dict(_pending)
        _pending.clear()
    try:
        pipe = redis_client.pipeline(transaction=False)
        for name, amount in increments.items():
            pipe.hincrbyfloat(STATS_KEY, name, amount)
        pipe.hset(INFLIGHT_KEY, process_id(), f"{in_flight} {time.time():.0f}")
        pipe.execute()
    except Exception as exc:  # Redis down: put the increments back, try again later
        with _lock:
            for name, amount in increments.items():
                _pending[name] = _pending.get(name, 0) + amount
        log.debug("could not flush ingest stats: %s", exc)


def start_flusher(redis_client, in_flight, interval=2.0, stop=None):
    stop = stop or threading.Event()

    def loop():
        while not stop.wait(interval):
            flush(redis_client, in_flight())
        flush(redis_client, 0)

    thread = threading.Thread(target=loop, daemon=True, name="ingest-stats")
    thread.start()
    return stop, thread

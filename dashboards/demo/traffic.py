"""When the shop's requests happen: back-dated history in one go, then live traffic.

Arrivals are a Poisson process whose rate drifts through the hour (a slow wave and a
faster ripple, +-35 % at most), so charts look like a real shop's rather than flat lines.
"""

import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from opentelemetry.sdk.trace.export import SpanExportResult

HISTORY_BATCH_SPANS = 2000  # spans a history export request carries
HISTORY_EXPORTS_IN_FLIGHT = 2  # generating the next batch overlaps with Sightline storing the last
# With a fault on, the back-dated history has it too for its last minutes, as if the
# incident had started a little before the demo did.
FAULT_BACKDATE_SECONDS = 10 * 60
MAX_LIVE_BACKLOG_SECONDS = 1.0  # a live loop that fell behind skips ahead instead of bursting


class ExportFailed(Exception):
    pass


def load_factor(epoch_seconds):
    """Traffic relative to the average, between 0.65 and 1.35."""
    hours = epoch_seconds / 3600
    return 1 + 0.25 * math.sin(2 * math.pi * hours / 1.5) + 0.1 * math.sin(2 * math.pi * hours * 4.6)


def arrivals(rng, rate, start, end):
    """Epoch seconds of requests in [start, end) at `rate` a second on average (thinning)."""
    peak, moment, times = rate * 1.35, start, []
    while True:
        moment += rng.expovariate(peak)
        if moment >= end:
            return times
        if rng.random() * 1.35 < load_factor(moment):
            times.append(moment)


class Progress:
    """A text progress bar on stderr: done/total, %, spans a second. Redrawn in place on a
    terminal; elsewhere (a log, a test) a line every tenth of the way."""

    WIDTH = 30

    def __init__(self, total, write, is_terminal):
        self.total, self.write, self.is_terminal = max(total, 1), write, is_terminal
        self.started = time.monotonic()
        self._drawn_at, self._tenth = 0.0, -1

    def update(self, done, spans, final=False):
        now = time.monotonic()
        tenth = 10 * done // self.total
        if not final and (done >= self.total or (now - self._drawn_at < 0.2 if self.is_terminal
                                                 else tenth == self._tenth)):
            return  # the final update draws 100 %, once the last batch is stored
        self._drawn_at, self._tenth = now, tenth
        filled = self.WIDTH * done // self.total
        rate = spans / max(now - self.started, 1e-6)
        line = (f"history [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done:,}/{self.total:,} traces "
                f"{100 * done // self.total:3d}%  {spans:,} spans  {rate:,.0f} spans/s")
        if self.is_terminal:
            self.write("\r" + line + ("\n" if final else ""))
        else:
            self.write(line + "\n")


def load_history(the_shop, tracing, collector, exporter, rng, rate, hours, stop, progress_for):
    """Plan, replay and export `hours` of back-dated traces; returns (traces, spans) sent.

    1. Draw the arrival times over [now - hours, now).
    2. Plan each trace at its time (with the fault only in the last minutes) and replay it
       through the SDK providers, whose processor only collects the ended spans.
    3. Whenever HISTORY_BATCH_SPANS spans are collected, export them through the OTLP
       exporter on a worker thread, at most HISTORY_EXPORTS_IN_FLIGHT at once.
    """
    now = time.time()
    times = arrivals(rng, rate, now - hours * 3600, now)
    progress = progress_for(len(times))
    fault_from = now - FAULT_BACKDATE_SECONDS
    sent = [0]
    pending = deque()
    done = 0
    with ThreadPoolExecutor(HISTORY_EXPORTS_IN_FLIGHT, thread_name_prefix="demo-history") as pool:
        for at in times:
            if stop.is_set():
                break
            root = the_shop.request(at, fault=at >= fault_from)
            tracing.emit(root, int(at * 1e9))
            done += 1
            if len(collector.spans) >= HISTORY_BATCH_SPANS:
                _submit(pool, pending, exporter, collector.take(), sent)
            progress.update(done, sent[0])
        if collector.spans:
            _submit(pool, pending, exporter, collector.take(), sent)
        while pending:
            _settle(pending.popleft(), sent)
    progress.update(done, sent[0], final=True)
    return done, sent[0]


def _submit(pool, pending, exporter, batch, sent):
    while len(pending) >= HISTORY_EXPORTS_IN_FLIGHT:
        _settle(pending.popleft(), sent)
    pending.append((pool.submit(exporter.export, batch), len(batch)))


def _settle(item, sent):
    future, size = item
    if future.result() != SpanExportResult.SUCCESS:
        raise ExportFailed(f"a batch of {size} back-dated spans was refused (the exporter's log above says why)")
    sent[0] += size


def run_live(the_shop, tracing, metrics, rng, rate, duration, stop, report_every=30.0, report=None):
    """Send requests as they happen until `duration` seconds passed (None: until stop is set).

    Each trace is planned first, then placed so that it ends now. Returns (traces, spans).
    """
    started = time.monotonic()
    next_at, reported_at = started, started
    traces = spans = 0
    while not stop.is_set():
        now = time.monotonic()
        if duration is not None and now - started >= duration:
            break
        if next_at > now:
            limit = next_at - now if duration is None else min(next_at - now, started + duration - now)
            stop.wait(max(limit, 0))
            continue
        root = the_shop.request(time.time())
        spans += tracing.emit(root, time.time_ns() - int(root.trace_end() * 1e6))
        metrics.record(root)
        traces += 1
        next_at = max(next_at + rng.expovariate(rate * load_factor(time.time())), now - MAX_LIVE_BACKLOG_SECONDS)
        if report is not None and now - reported_at >= report_every:
            reported_at = now
            report(f"live: {traces:,} traces, {spans:,} spans sent so far ({traces / (now - started):.1f} traces/s)")
    return traces, spans

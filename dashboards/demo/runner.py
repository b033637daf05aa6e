"""One run of the demo: check Sightline answers, explain, create the SLOs, load history, go live.

Everything the user sees is written through `say` (stdout), `warn` and `progress` (stderr);
the management command only parses and validates options.
"""

import random
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc
from django.conf import settings
from django.db import Error as DatabaseError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dashboards.demo import shop, slos, telemetry, traffic


class Unreachable(Exception):
    pass


@dataclass
class Options:
    endpoint: str
    rate: float
    duration: float | None
    history_hours: float
    fault: str | None
    seed: int | None
    create_slos: bool


def default_endpoint():
    return f"http://{settings.LOCAL_HOST}:{settings.OTLP_GRPC_PORT}"


def web_url():
    if settings.PUBLIC_URL:
        return settings.PUBLIC_URL.rstrip("/") + "/"
    return f"http://{settings.LOCAL_HOST}:{settings.WEB_PORT}/"


def check_reachable(endpoint, timeout=3.0):
    """Raise Unreachable unless something answers gRPC at endpoint. Sightline's ingest has the
    standard health service; another OTLP receiver without it (UNIMPLEMENTED) is fine too."""
    target = urlsplit(endpoint).netloc
    channel = (grpc.insecure_channel(target) if endpoint.startswith("http://")
               else grpc.secure_channel(target, grpc.ssl_channel_credentials()))
    with channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout,
                                                       wait_for_ready=True)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise Unreachable(f"nothing answers OTLP/gRPC at {endpoint} ({exc.code().name}): start Sightline "
                                  "first (./sightline run, or manage.py serve), or point --endpoint at it") from None


def database_address():
    db = settings.DATABASES["default"]
    return f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


class Demo:
    def __init__(self, options, say, warn, progress_for, stop=None):
        self.options, self.say, self.warn, self.progress_for = options, say, warn, progress_for
        self.stop = stop or threading.Event()
        self.rng = random.Random(options.seed)
        self.shop = shop.Shop(self.rng, options.fault)
        self.resources = telemetry.resources()
        tokens = settings.INGEST_TOKENS
        self.headers = (("authorization", f"Bearer {tokens[0]}"),) if tokens else None

    def run(self):
        """Returns {"history": (traces, spans), "live": (traces, spans)}."""
        check_reachable(self.options.endpoint)
        self.explain()
        if self.options.create_slos:
            self.create_slos()
        sent = {"history": (0, 0), "live": (0, 0)}
        if self.options.history_hours > 0 and not self.stop.is_set():
            sent["history"] = self.load_history()
        if self.options.duration != 0 and not self.stop.is_set():
            sent["live"] = self.go_live()
        return sent

    def explain(self):
        o, url = self.options, web_url()
        lines = [
            f"Sightline demo: a small online shop ({', '.join(shop.SERVICES)})",
            "sends traces and metrics through the OpenTelemetry Python SDK (OTLP/gRPC)",
            f"to {o.endpoint}, about {o.rate:g} requests a second, environment \"{telemetry.ENVIRONMENT}\".",
            "PostgreSQL, Redis, Kafka, the card gateway and the mail server send nothing themselves:",
            "they appear on the service map from the services' client spans.",
            f"Fault: {o.fault}: {shop.FAULTS[o.fault]}." if o.fault else
            "No fault on. To see a problem: manage.py demo --fault payment-slow (or inventory-errors).",
            f"Open {url} (services), {url}map/ (service map), {url}slos/ (SLOs).",
            "Charts show a request once its trace has settled (SIGHTLINE_SETTLE_SECONDS, 10 s by default).",
        ]
        if o.duration is None:
            lines.append("Press Ctrl-C to stop.")
        for line in lines:
            self.say(line)

    def create_slos(self):
        try:
            for name, what in slos.ensure_sample_slos():
                self.say(f"SLO {name}: {what}")
        except DatabaseError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.warn(f"error: could not create the sample SLOs in the database at {database_address()} "
                      f"({first_line}). Run the demo beside `./sightline run` (it writes {settings.EMBEDDED_ENV_FILE}), "
                      "or set DATABASE_URL to Sightline's database. Sending traffic anyway.")

    def load_history(self):
        hours = self.options.history_hours
        self.say(f"Loading {hours:g} h of back-dated traces" + (
            f" (the fault on for the last {traffic.FAULT_BACKDATE_SECONDS // 60} minutes)" if self.options.fault else "")
            + " ...")
        collector = telemetry.Collector()
        tracing = telemetry.Tracing(self.resources, lambda service: collector)
        exporter = telemetry.span_exporter(self.options.endpoint, self.headers, timeout=60)
        try:
            traces, spans = traffic.load_history(self.shop, tracing, collector, exporter, self.rng, self.options.rate,
                                                 hours, self.stop, self.progress_for)
        finally:
            exporter.shutdown()
        stopped = " (stopped early)" if self.stop.is_set() else ""
        self.say(f"History sent{stopped}: {traces:,} traces, {spans:,} spans.")
        return traces, spans

    def go_live(self):
        o = self.options
        self.say("Live traffic" + (f" for {o.duration:g} s" if o.duration is not None else "") + " ...")
        tracing = telemetry.Tracing(self.resources, lambda service: telemetry.live_processor(o.endpoint, self.headers))
        metrics = telemetry.Metrics(self.resources, lambda: telemetry.metric_exporter(o.endpoint, self.headers),
                                    self.shop)
        try:
            return traffic.run_live(self.shop, tracing, metrics, self.rng, o.rate, o.duration, self.stop,
                                    report=self.say)
        finally:
            self.say("Flushing the exporters ...")
            tracing.shutdown()
            metrics.shutdown()

"""manage.py demo: realistic, continuous traffic from a small online shop to a running Sightline.

The shop and its telemetry live in dashboards.demo; this command parses and checks the
options, turns Ctrl-C and SIGTERM into a clean stop (the exporters are flushed), and
reports what was sent.
"""

import signal
import threading
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError

from dashboards.demo import runner, shop, traffic

MAX_RATE = 1000.0  # traces a second: a demo, not a load generator
MAX_HISTORY_HOURS = 7 * 24.0


class Command(BaseCommand):
    help = ("Send a small online shop's traces and metrics (7 services, a database, a cache, queues) to a running "
            "Sightline through the OpenTelemetry SDK's OTLP/gRPC exporters, and create two sample SLOs.")

    def add_arguments(self, parser):
        faults = "; ".join(f"{name}: {text}" for name, text in shop.FAULTS.items())
        parser.add_argument("--rate", type=float, default=5.0, help="requests (traces) a second, on average (default 5)")
        parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                            help="stop after this many seconds of live traffic (default: run until Ctrl-C; "
                                 "0: only load the history)")
        parser.add_argument("--history", type=float, default=0.0, metavar="HOURS",
                            help="first load this many hours of back-dated traces in one go, e.g. 3 (default 0; "
                                 "with --fault, their last 10 minutes have the fault too)")
        parser.add_argument("--fault", default=None, help=f"switch a fault on. {faults}")
        parser.add_argument("--endpoint", default=None,
                            help="OTLP/gRPC endpoint (default: this Sightline's, http://<SIGHTLINE_BIND>:"
                                 "<SIGHTLINE_OTLP_GRPC_PORT>)")
        parser.add_argument("--seed", type=int, default=None, help="seed the traffic's randomness (not the trace ids)")
        parser.add_argument("--no-slo", action="store_true", help="do not create the sample SLOs")

    def handle(self, *args, **options):
        demo_options = runner.Options(
            endpoint=self._endpoint(options["endpoint"]), rate=self._rate(options["rate"]),
            duration=self._duration(options["duration"]), history_hours=self._history(options["history"]),
            fault=self._fault(options["fault"]), seed=options["seed"], create_slos=not options["no_slo"])
        stop = threading.Event()
        previous = {sig: signal.signal(sig, self._stopper(stop)) for sig in (signal.SIGINT, signal.SIGTERM)}
        demo = runner.Demo(demo_options, say=self.stdout.write, warn=self.stderr.write, progress_for=self._progress,
                           stop=stop)
        try:
            sent = demo.run()
        except runner.Unreachable as exc:
            raise CommandError(str(exc)) from None
        except traffic.ExportFailed as exc:
            raise CommandError(f"{exc}; is Sightline at {demo_options.endpoint} still running?") from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        history, live = sent["history"], sent["live"]
        self.stdout.write(f"Sent {history[0] + live[0]:,} traces ({history[1] + live[1]:,} spans): "
                          f"{history[0]:,} back-dated, {live[0]:,} live.")

    def _stopper(self, stop):
        def handle(signum, frame):
            if stop.is_set():  # asked twice: leave without flushing
                raise SystemExit(130)
            stop.set()
            self.stdout.write("\nStopping (Ctrl-C again to quit without flushing) ...")
        return handle

    def _progress(self, total):
        return traffic.Progress(total, lambda text: (self.stderr.write(text, style_func=str, ending=""),
                                                      self.stderr.flush()), self.stderr.isatty())

    @staticmethod
    def _endpoint(value):
        if value is None:
            return runner.default_endpoint()
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None or parts.path not in ("", "/"):
            raise CommandError(f"--endpoint must look like http://host:4317 (https:// for TLS), got {value!r}")
        return f"{parts.scheme}://{parts.netloc}"

    @staticmethod
    def _rate(value):
        if not 0 < value <= MAX_RATE:
            raise CommandError(f"--rate must be more than 0 and at most {MAX_RATE:g} traces a second, got {value:g}")
        return value

    @staticmethod
    def _duration(value):
        if value is not None and not value >= 0:
            raise CommandError(f"--duration must be 0 or more seconds, got {value:g}")
        return value

    @staticmethod
    def _history(value):
        if not 0 <= value <= MAX_HISTORY_HOURS:
            raise CommandError(f"--history must be between 0 and {MAX_HISTORY_HOURS:g} hours, got {value:g}")
        return value

    @staticmethod
    def _fault(value):
        if value is not None and value not in shop.FAULTS:
            valid = "; ".join(f"{name} ({text})" for name, text in shop.FAULTS.items())
            raise CommandError(f"unknown fault {value!r}; the faults are: {valid}")
        return value

"""`manage.py serve`: Sightline on one machine.

1. Start embedded PostgreSQL and Redis for whichever of DATABASE_URL / REDIS_URL is unset.
2. Apply migrations.
3. Run ingest, web, worker and beat as supervised child processes, restarting any that dies.
4. On Ctrl-C or SIGTERM, stop the children, then the embedded servers; a second Ctrl-C
   kills what is still running.

Stopping order: first what takes in or schedules work (ingest, web, beat), so nothing new
arrives; each finishes and answers what it took, for up to SIGHTLINE_SHUTDOWN_GRACE_SECONDS
(what ingest acknowledged is committed and handed to correlation through Redis). Then the
worker, which finishes its running tasks (messages it took but did not start go back to
the queue). Then the embedded Redis and PostgreSQL, which every child needs until it exits.
"""

import os
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.embedded import EmbeddedPostgres, EmbeddedRedis
from config.supervisor import Output, Supervisor

STOP_ORDER = {"ingest": 0, "web": 0, "beat": 0, "worker": 1}
# Past the grace, what a child may take to exit (ingest with several processes waits
# ingest.server.EXIT_MARGIN_SECONDS for its own) before it is killed.
STOP_MARGIN_SECONDS = 5


def process_commands(python=sys.executable):
    """The argv of each process type, as a deployment would run them apart."""
    manage = str(settings.BASE_DIR / "manage.py")
    return {
        "ingest": [python, manage, "ingest"],
        "web": [python, "-m", "gunicorn", "-c", str(settings.BASE_DIR / "config" / "gunicorn.py"), "config.wsgi"],
        "worker": [python, "-m", "celery", "-A", "config", "worker", "--loglevel", settings.LOG_LEVEL,
                   "--concurrency", str(settings.WORKER_CONCURRENCY), "--hostname", f"sightline@{os.uname().nodename}"],
        "beat": [python, "-m", "celery", "-A", "config", "beat", "--loglevel", settings.LOG_LEVEL,
                 "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME],
    }


class Command(BaseCommand):
    help = "Run Sightline on one machine: embedded PostgreSQL/Redis if unconfigured, ingest, web, worker and beat."

    def add_arguments(self, parser):
        parser.add_argument("--no-migrate", action="store_true", help="skip applying migrations")

    def handle(self, *args, **options):
        output = Output()
        say = lambda text: output.line("serve", text)  # noqa: E731
        stop = Supervisor(output)
        signal.signal(signal.SIGTERM, lambda *_: stop.stop())
        signal.signal(signal.SIGINT, lambda *_: stop.stop())

        data_dir = settings.DATA_DIR
        (data_dir / "run").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", SIGHTLINE_DATA_DIR=str(data_dir))
        embedded = []
        try:
            if settings.USING_EMBEDDED_DATABASE:
                embedded.append(EmbeddedPostgres(data_dir, say))
                env["DATABASE_URL"] = embedded[-1].start()
            if settings.USING_EMBEDDED_REDIS:
                embedded.append(EmbeddedRedis(data_dir, say))
                env["REDIS_URL"] = embedded[-1].start()
            self._write_embedded_env(env, embedded)
            if not options["no_migrate"] and not stop.stopping.is_set():
                self._migrate(env, output)
            for name, argv in process_commands().items():
                stop.add(name, argv, env, stop_order=STOP_ORDER[name])
            if not stop.stopping.is_set():
                self._banner(say)
                stop.run(watch=lambda: self._watch_embedded(embedded))
        finally:
            say("stopping")
            stop.shutdown(grace=settings.SHUTDOWN_GRACE_SECONDS + STOP_MARGIN_SECONDS)
            for server in reversed(embedded):
                server.stop()
            settings.EMBEDDED_ENV_FILE.unlink(missing_ok=True)
            say("stopped")

    def _write_embedded_env(self, env, embedded):
        lines = [f"{'DATABASE_URL' if isinstance(s, EmbeddedPostgres) else 'REDIS_URL'}={s.url}" for s in embedded]
        settings.EMBEDDED_ENV_FILE.write_text("".join(line + "\n" for line in lines))

    def _migrate(self, env, output):
        proc = subprocess.run([sys.executable, str(settings.BASE_DIR / "manage.py"), "migrate", "--noinput"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            if line.strip():
                output.line("migrate", line)
        if proc.returncode != 0:
            raise CommandError(f"migrations failed (exit code {proc.returncode})")

    def _watch_embedded(self, embedded):
        for server in embedded:
            if not server.alive():
                return f"embedded {type(server).__name__} exited; stopping Sightline"
        return None

    def _banner(self, say):
        host = settings.LOCAL_HOST
        say("Sightline is starting. Point your OpenTelemetry exporters at it:")
        say(f"  OTLP/gRPC  OTEL_EXPORTER_OTLP_ENDPOINT=http://{host}:{settings.OTLP_GRPC_PORT}")
        say(f"  OTLP/HTTP  OTEL_EXPORTER_OTLP_ENDPOINT=http://{host}:{settings.OTLP_HTTP_PORT}"
            " OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf")
        say(f"Open http://{host}:{settings.WEB_PORT}/ in a browser.")
        say(f"First time? Create a login with: {sys.executable} manage.py createsuperuser")
        say("Press Ctrl-C to stop.")

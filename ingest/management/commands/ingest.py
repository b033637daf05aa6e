"""`manage.py ingest`: the OTLP receivers (gRPC and HTTP) as one process type."""

from django.conf import settings
from django.core.management.base import BaseCommand

from ingest.server import serve


class Command(BaseCommand):
    help = "Receive OTLP over gRPC and HTTP and store it."

    def add_arguments(self, parser):
        parser.add_argument("--processes", type=int, default=None,
                            help="receiver processes sharing the ports (default SIGHTLINE_INGEST_PROCESSES)")

    def handle(self, *args, **options):
        serve(processes=options["processes"] or settings.INGEST_PROCESSES)

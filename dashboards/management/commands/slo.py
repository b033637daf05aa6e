"""manage.py slo apply FILE [--dry-run] | manage.py slo export [FILE]: SLOs as OpenSLO v1 YAML.

apply creates or updates (by name) the SLOs and channels a file describes, all or nothing;
export writes every channel and SLO in the form apply reads back. See dashboards.slos.openslo
for how OpenSLO maps onto Sightline's SLIs.
"""

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from dashboards.slos import openslo


class Command(BaseCommand):
    help = "Apply or export SLOs as OpenSLO v1 YAML."

    def add_arguments(self, parser):
        commands = parser.add_subparsers(dest="action", required=True)
        apply = commands.add_parser("apply", help="create or update the SLOs of an OpenSLO file (- for stdin)")
        apply.add_argument("file")
        apply.add_argument("--dry-run", action="store_true", help="validate and report, change nothing")
        export = commands.add_parser("export", help="write every SLO as OpenSLO YAML (default stdout)")
        export.add_argument("file", nargs="?", default="-")

    def handle(self, *args, action, file, **options):
        if action == "apply":
            try:
                text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"cannot read {file}: {exc}") from None
            try:
                lines = openslo.apply(text, source="<stdin>" if file == "-" else file,
                                      dry_run=options["dry_run"])
            except openslo.OpenSLOError as exc:
                raise CommandError(f"{exc}\nnothing was changed") from None
            for line in lines:
                (self.stderr if line.startswith("warning:") else self.stdout).write(line)
            return
        text = openslo.export()
        if file == "-":
            self.stdout.write(text, ending="")
        else:
            try:
                Path(file).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"cannot write {file}: {exc}") from None
            self.stderr.write(f"wrote {file}")

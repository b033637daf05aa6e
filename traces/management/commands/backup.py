"""`manage.py backup create FILE` and `manage.py backup verify FILE` (see traces/backup.py)."""

from django.core.management.base import BaseCommand, CommandError

from traces import backup


class Command(BaseCommand):
    help = ("Back up the whole database with pg_dump (custom format), or check a backup by restoring it "
            "into a scratch database on the same server.")

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{create,verify}")
        create = actions.add_parser("create", help="pg_dump the configured database into FILE")
        create.add_argument("file")
        verify = actions.add_parser("verify", help="restore FILE into a scratch database, check it, drop it")
        verify.add_argument("file")
        verify.add_argument("--keep", action="store_true", help="keep the scratch database for a look")

    def handle(self, *args, action, file, **options):
        try:
            if action == "create":
                size, seconds = backup.create(file)
                self.stdout.write(f"wrote {file}: {size / 1e6:,.1f} MB in {seconds:.1f} s")
                self.stdout.write(f"check it with: manage.py backup verify {file}")
                return
            result = backup.verify(file, keep=options["keep"], log=self.stdout.write)
        except backup.BackupError as exc:
            raise CommandError(str(exc)) from None
        for label, rows, newest in result.counts:
            suffix = f" (newest {newest:%Y-%m-%d %H:%M:%S} UTC)" if newest else ""
            self.stdout.write(f"  {label:<22} {rows:>14,}{suffix}")
        self.stdout.write(f"backup OK: restored and checked in {result.seconds:.1f} s, every migration present")

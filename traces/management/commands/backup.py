"""`manage.py backup create|verify|restore FILE` (see traces/backup.py)."""

from django.core.management.base import BaseCommand, CommandError

from traces import backup


class Command(BaseCommand):
    help = ("Back up the whole database with pg_dump (custom format), or check a backup by restoring it "
            "into a scratch database on the same server.")

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{create,verify,restore}")
        create = actions.add_parser("create", help="pg_dump the configured database into FILE")
        create.add_argument("file")
        verify = actions.add_parser("verify", help="restore FILE into a scratch database, check it, drop it")
        verify.add_argument("file")
        verify.add_argument("--keep", action="store_true", help="keep the scratch database for a look")
        restore = actions.add_parser("restore", help="pg_restore FILE into the configured (empty) database")
        restore.add_argument("file")
        restore.add_argument("--replace", action="store_true", help="drop every table in the database first")

    def handle(self, *args, action, file, **options):
        try:
            if action == "create":
                size, seconds = backup.create(file)
                self.stdout.write(f"wrote {file}: {size / 1e6:,.1f} MB in {seconds:.1f} s")
                self.stdout.write(f"check it with: manage.py backup verify {file}")
                return
            if action == "restore":
                missing, counts = backup.restore(file, replace=options["replace"], log=self.stdout.write)
                self._counts(counts)
                self.stdout.write("restored" + (f"; {len(missing)} migration(s) of this code are not applied yet: "
                                                "run manage.py migrate" if missing else ""))
                return
            result = backup.verify(file, keep=options["keep"], log=self.stdout.write)
        except backup.BackupError as exc:
            raise CommandError(str(exc)) from None
        self._counts(result.counts)
        self.stdout.write(f"backup OK: restored and checked in {result.seconds:.1f} s, every migration present")

    def _counts(self, counts):
        for label, rows, newest in counts:
            suffix = f" (newest {newest:%Y-%m-%d %H:%M:%S} UTC)" if newest else ""
            self.stdout.write(f"  {label:<22} {rows:>14,}{suffix}")

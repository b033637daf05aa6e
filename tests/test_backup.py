"""Backups (docs/operations.md): `manage.py backup create` writes a pg_dump archive of the
whole database, `manage.py backup verify` restores it into a scratch database and counts
what came back; a damaged archive fails the check with a clear message; `backup restore`
fills an empty database and refuses one that has tables unless told to replace them."""

import os
import subprocess

import pytest
from django.contrib.auth.models import User

from dashboards.models import SLO
from tests.conftest import PYTHON, ROOT, database_url
from tests.shop import store_checkouts
from traces.models import Span, TraceSummary

pytestmark = pytest.mark.django_db(transaction=True)


def manage(*args, url=None):
    env = dict(os.environ, DATABASE_URL=url or database_url())
    return subprocess.run([PYTHON, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_a_backup_restores_with_every_row_and_a_damaged_one_is_refused(tmp_path):
    store_checkouts("backup", count=6)
    SLO.objects.create(name="backup-availability", service="backup-frontend", objective=0.99)
    User.objects.create_user("operator", password="a long password")
    archive = tmp_path / "sightline.dump"

    created = manage("backup", "create", str(archive))
    assert created.returncode == 0, created.stderr
    assert archive.stat().st_size > 0 and f"wrote {archive}" in created.stdout
    assert not list(tmp_path.glob("*.partial"))

    checked = manage("backup", "verify", str(archive))
    assert checked.returncode == 0, checked.stderr
    lines = {line.split()[0]: line for line in checked.stdout.splitlines() if line.startswith("  ")}
    assert lines["spans"].split()[1] == f"{Span.objects.count():,}"
    assert Span.objects.filter(service_name__startswith="backup-").count() == 24
    assert f"{TraceSummary.objects.count():,}" in lines["trace"]
    assert lines["SLOs"].split()[1] == "1"
    assert lines["users"].split()[1] == "1"
    assert "backup OK" in checked.stdout
    # The scratch database is gone again.
    from django.db import connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s", [connection.settings_dict["NAME"][:40] + "_verify_%"])
        assert cursor.fetchone()[0] == 0

    damaged = tmp_path / "damaged.dump"
    damaged.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    refused = manage("backup", "verify", str(damaged))
    assert refused.returncode == 1
    assert "CommandError" in refused.stderr and "Traceback" not in refused.stderr

    missing = manage("backup", "verify", str(tmp_path / "nothing.dump"))
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_restore_fills_an_empty_database_and_replaces_one_only_when_told(tmp_path):
    from django.db import connection

    store_checkouts("restore", count=3)
    archive = tmp_path / "sightline.dump"
    assert manage("backup", "create", str(archive)).returncode == 0
    target = connection.settings_dict["NAME"][:40] + "_restored"
    url = database_url().rsplit("/", 1)[0] + "/" + target
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{target}"')
        cursor.execute(f'CREATE DATABASE "{target}"')
    try:
        restored = manage("backup", "restore", str(archive), url=url)
        assert restored.returncode == 0, restored.stderr
        spans = next(line for line in restored.stdout.splitlines() if line.strip().startswith("spans"))
        assert spans.split()[1] == f"{Span.objects.count():,}"
        assert "not applied" not in restored.stdout

        again = manage("backup", "restore", str(archive), url=url)
        assert again.returncode == 1 and "pass --replace" in again.stderr

        import psycopg
        with psycopg.connect(url):  # a process still using the database
            busy = manage("backup", "restore", str(archive), "--replace", url=url)
        assert busy.returncode == 1 and "1 other connection(s)" in busy.stderr

        replaced = manage("backup", "restore", str(archive), "--replace", url=url)
        assert replaced.returncode == 0, replaced.stderr
        assert "dropping the" in replaced.stdout
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')

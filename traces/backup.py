"""Backups with pg_dump / pg_restore, and checking that a backup restores.

A backup is PostgreSQL's own custom-format archive of the whole database (spans, metric
points, rollups, SLOs, users, tokens): nothing Sightline-specific to restore it. What
this module adds is the plumbing people get wrong:

- the right binaries: pg_dump must be at least as new as the server. The one on PATH is
  used when it is new enough, else the one bundled in the pgserver wheel (PostgreSQL 16);
- the connection from Sightline's own settings (embedded or DATABASE_URL), passed to the
  tools in PG* environment variables so a password never shows in `ps`;
- restore(): into the configured database, which must be empty (or --replace), with
  nothing else connected to it;
- verify(): a backup is only known good once it has been restored. It reads the archive's
  table of contents, restores it into a scratch database on the same server, checks that
  every migration this code has is recorded there, counts what came back, and drops the
  scratch database.
"""

import os
import re
import secrets
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from django.apps import apps
from django.conf import settings
from django.db import connection
from psycopg import sql

# (label, model "app.Model", timestamp field or None) counted after a restore.
COUNTED = [
    ("spans", "traces.Span", "start_time"),
    ("metric points", "traces.MetricPoint", "time"),
    ("trace summaries", "traces.TraceSummary", "start_time"),
    ("RED rollup rows", "traces.RedRollup", None),
    ("SLOs", "dashboards.SLO", None),
    ("notification channels", "dashboards.Channel", None),
    ("alerts", "dashboards.Alert", None),
    ("users", "auth.User", None),
    ("API tokens", "dashboards.ApiToken", None),
]
_SSL_OPTIONS = {"sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
                "sslkey": "PGSSLKEY", "connect_timeout": "PGCONNECT_TIMEOUT"}


class BackupError(Exception):
    """A backup or its check failed; the message says what and why."""


def libpq_environment(database=None):
    """PG* variables for the configured database (another database name on the same server if given)."""
    db = settings.DATABASES["default"]
    env = {"PGHOST": db["HOST"] or "127.0.0.1", "PGPORT": str(db["PORT"] or 5432), "PGUSER": db["USER"] or "postgres",
           "PGDATABASE": database or db["NAME"]}
    if db["PASSWORD"]:
        env["PGPASSWORD"] = db["PASSWORD"]
    for option, variable in _SSL_OPTIONS.items():
        if db["OPTIONS"].get(option):
            env[variable] = str(db["OPTIONS"][option])
    return env


def _major(binary):
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20).stdout
    except OSError:
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(match.group(1)) if match else None


def server_major():
    connection.ensure_connection()
    return connection.pg_version // 10000


def find_tool(name, needed_major):
    """The path of pg_dump / pg_restore / … at least needed_major, or BackupError naming what to install."""
    candidates = [shutil.which(name)]
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH

        candidates.append(str(Path(POSTGRES_BIN_PATH) / name))
    except ImportError:
        pass
    seen = []
    for candidate in filter(None, candidates):
        major = _major(candidate)
        seen.append(f"{candidate} ({major or 'unknown version'})")
        if major is not None and major >= needed_major:
            return candidate
    raise BackupError(f"{name} {needed_major} or newer is needed for this PostgreSQL {needed_major} server; "
                      f"found: {', '.join(seen) or 'none'}. Install postgresql-client-{needed_major}.")


def _run(argv, env, what):
    result = subprocess.run(argv, env={**_base_environment(), **env}, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise BackupError(f"{what} failed (exit code {result.returncode}): {' / '.join(detail[-5:])}")
    return result.stdout


def _base_environment():
    """This process's environment without PG* variables, which would override the configured database."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def create(path):
    """pg_dump the configured database into path (custom format). Returns (bytes, seconds)."""
    path = Path(path)
    started = time.monotonic()
    pg_dump = find_tool("pg_dump", server_major())
    temporary = path.with_name(path.name + ".partial")
    try:
        _run([pg_dump, "--format=custom", "--no-owner", "--file", str(temporary)], libpq_environment(), "pg_dump")
        temporary.replace(path)  # a backup that exists is a whole one
    finally:
        temporary.unlink(missing_ok=True)
    return path.stat().st_size, time.monotonic() - started


@dataclass
class Verified:
    entries: int
    counts: list  # (label, rows, newest or None)
    missing_migrations: list
    seconds: float


def verify(path, keep=False, log=lambda line: None):
    """Restore path into a scratch database and check it; BackupError if anything is wrong."""
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"no such file: {path}")
    started = time.monotonic()
    major = server_major()
    pg_restore = find_tool("pg_restore", major)
    listing = _run([pg_restore, "--list", str(path)], {}, "reading the archive (pg_restore --list)")
    entries = [line for line in listing.splitlines() if line and not line.startswith(";")]
    spans_table = apps.get_model("traces.Span")._meta.db_table
    if not any(" TABLE DATA " in line and spans_table in line for line in entries):
        raise BackupError(f"{path} holds no span data: is it a Sightline backup?")
    log(f"archive readable: {len(entries)} entries")

    scratch = f"{settings.DATABASES['default']['NAME'][:40]}_verify_{secrets.token_hex(4)}"
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    try:
        log(f"restoring into scratch database {scratch}")
        _run([pg_restore, "--exit-on-error", "--no-owner", "--no-privileges", "--dbname", scratch, str(path)],
             libpq_environment(scratch), "pg_restore")
        with _connect(scratch) as restored:
            missing = _missing_migrations(restored)
            counts = [_count(restored, *item) for item in COUNTED]
    finally:
        if keep:
            log(f"kept the scratch database {scratch}")
        else:
            _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    if missing:
        raise BackupError(f"the restored database lacks {len(missing)} migration(s) this code has "
                          f"(first: {missing[0]}); restore it, then run manage.py migrate")
    return Verified(len(entries), counts, missing, time.monotonic() - started)


def restore(path, replace=False, log=lambda line: None):
    """pg_restore path into the configured database; returns (missing migrations, counts)."""
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"no such file: {path}")
    pg_restore = find_tool("pg_restore", server_major())
    connection.close()  # Django's own connection is not one of the others
    database = settings.DATABASES["default"]["NAME"]
    with _connect(database) as target:
        # A client that has just disconnected can still be listed for a moment while its
        # server process exits: only connections that stay count.
        deadline = time.monotonic() + 3
        while True:
            others = target.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND pid <> pg_backend_pid()").fetchone()[0]
            if not others or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if others:
            raise BackupError(f"{others} other connection(s) to database {database}: stop Sightline's processes "
                              "(serve, ingest, web, worker, beat) before restoring")
        tables = target.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        if tables and not replace:
            raise BackupError(f"database {database} already has {tables} tables: restore into an empty database, "
                              "or pass --replace to drop everything in it first")
        if tables:
            log(f"dropping the {tables} tables of {database}")
            target.execute("DROP SCHEMA public CASCADE")
            target.execute("CREATE SCHEMA public")
    log(f"restoring {path} into {database}")
    _run([pg_restore, "--exit-on-error", "--no-owner", "--no-privileges", "--dbname", database, str(path)],
         libpq_environment(database), "pg_restore")
    with _connect(database) as restored:
        return _missing_migrations(restored), [_count(restored, *item) for item in COUNTED]


def _connect(database):
    env = libpq_environment(database)
    kwargs = dict(host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], dbname=database,
                  password=env.get("PGPASSWORD"), autocommit=True)
    kwargs.update({option: settings.DATABASES["default"]["OPTIONS"][option]
                   for option in _SSL_OPTIONS if settings.DATABASES["default"]["OPTIONS"].get(option)})
    return psycopg.connect(**kwargs)


def _admin(statement):
    with _connect("postgres") as admin:
        admin.execute(statement)


def _missing_migrations(restored):
    from django.db.migrations.loader import MigrationLoader

    on_disk = set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)
    recorded = {tuple(row) for row in restored.execute("SELECT app, name FROM django_migrations")}
    return sorted(f"{app}.{name}" for app, name in on_disk - recorded)


def _count(restored, label, model, time_column):
    table_id = sql.Identifier(apps.get_model(model)._meta.db_table)
    if time_column:
        rows, newest = restored.execute(sql.SQL("SELECT count(*), max({}) FROM {}").format(
            sql.Identifier(time_column), table_id)).fetchone()
    else:
        rows, newest = restored.execute(sql.SQL("SELECT count(*) FROM {}").format(table_id)).fetchone()[0], None
    return label, rows, newest

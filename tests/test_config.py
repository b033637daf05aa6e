"""Configuration comes from the environment, is validated at start, and is documented."""

import subprocess

import pytest

from config import settings as sightline_settings
from tests.conftest import PYTHON, ROOT, sightline_env


def run_check(env):
    return subprocess.run([PYTHON, str(ROOT / "manage.py"), "check"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name, value, message", [
    ("SIGHTLINE_WEB_PORT", "eighty", "SIGHTLINE_WEB_PORT must be an integer"),
    ("SIGHTLINE_OTLP_GRPC_PORT", "70000", "SIGHTLINE_OTLP_GRPC_PORT must be between 1 and 65535"),
    ("DEBUG", "maybe", "DEBUG must be true or false"),
    ("DATABASE_URL", "mysql://root@localhost/x", "DATABASE_URL must be a postgresql:// URL"),
    ("REDIS_URL", "http://localhost", "REDIS_URL must be a redis://"),
    ("SIGHTLINE_LOG_LEVEL", "chatty", "SIGHTLINE_LOG_LEVEL must be"),
])
def test_a_bad_value_stops_start_up_naming_the_variable(tmp_path, ports, name, value, message):
    result = run_check(sightline_env(ports, tmp_path, **{name: value}))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_value_stops_serve_before_it_starts_anything(tmp_path, ports):
    env = sightline_env(ports, tmp_path / "data", SIGHTLINE_WEB_PORT="0")
    result = subprocess.run([PYTHON, str(ROOT / "manage.py"), "serve"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "SIGHTLINE_WEB_PORT must be between 1 and 65535, got 0" in result.stderr
    assert not (tmp_path / "data" / "postgres").exists()


def test_a_good_configuration_passes_the_check(tmp_path, ports):
    result = run_check(sightline_env(ports, tmp_path))
    assert result.returncode == 0, result.stderr


def env_example():
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_env_example_lists_every_variable_with_its_default():
    assert env_example() == sightline_settings.ENV_DEFAULTS

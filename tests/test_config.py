"""Configuration comes from the environment, is validated at start, and is documented."""

import re
import runpy
import subprocess

import pytest
from django.core.exceptions import ImproperlyConfigured

from config import reference
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
    return {variable.name: variable.default
            for section in reference.read_env_example() for variable in section.variables}


def test_env_example_lists_every_variable_with_its_default():
    assert env_example() == sightline_settings.ENV_DEFAULTS


def test_the_configuration_reference_is_the_generators_output():
    written = reference.REFERENCE.read_text() if reference.REFERENCE.is_file() else ""
    assert written == reference.generate(), f"docs/configuration.md is out of date; regenerate it with: {reference.COMMAND}"


def reference_rows():
    """Variable -> (default cell, type cell, description cell) of docs/configuration.md's tables."""
    rows = {}
    for line in reference.REFERENCE.read_text().splitlines():
        match = re.fullmatch(r"\| `(\w+)` \| (.*?) \| (.*?) \| (.*) \|", line)
        if match:
            assert match[1] not in rows, f"{match[1]} is listed twice"
            rows[match[1]] = match.groups()[1:]
    return rows


def test_the_reference_names_every_variable_with_its_default_and_type():
    rows = reference_rows()
    assert set(rows) == set(sightline_settings.ENV_DEFAULTS)
    for name, default in sightline_settings.ENV_DEFAULTS.items():
        cell, type_cell, description = rows[name]
        assert cell == (f"`{default}`" if default else "unset"), name
        assert type_cell == reference.describe_type(sightline_settings.ENV_TYPES[name]), name
        assert description, name


def test_every_variable_in_env_example_has_its_own_description():
    sections = reference.read_env_example()
    assert sections and all(section.variables for section in sections)
    for section in sections:
        for variable in section.variables:
            assert len(variable.description.split()) >= 3, f".env.example: describe {variable.name} in a comment line above it"


def test_every_type_is_recorded_as_the_settings_read_it():
    assert set(sightline_settings.ENV_TYPES) == set(sightline_settings.ENV_DEFAULTS)
    for name, env_type in sightline_settings.ENV_TYPES.items():
        if env_type.kind in ("integer", "port"):
            assert env_type.minimum is not None, f"{name}: an integer without a lower bound"
        if env_type.kind in ("url", "choice"):
            assert env_type.values, name


def settings_outcome(monkeypatch, name, value):
    """Run config/settings.py afresh with NAME=value: None if accepted, else the error message."""
    monkeypatch.setenv("SECRET_KEY", "test")  # no key file written
    monkeypatch.setenv(name, value)
    try:
        runpy.run_path(str(ROOT / "config" / "settings.py"))
    except ImproperlyConfigured as exc:
        return str(exc)
    finally:
        monkeypatch.undo()
    return None


def type_examples(env_type):
    """(value, accepted?) pairs a variable of this type must treat as stated in the reference."""
    kind, low, high, values = env_type
    if kind in ("integer", "port"):
        yield str(low), True
        yield str(low - 1), False
        yield "ten", False
        if high is not None:
            yield str(high), True
            yield str(high + 1), False
    elif kind == "boolean":
        yield from (("on", True), ("No", True), ("maybe", False))
    elif kind == "url":
        yield from ((f"{scheme}://user@host:1/sightline" if scheme.startswith("postgres") else f"{scheme}://host:1/0", True)
                    for scheme in values)
        yield "http://host/x", False
    elif kind == "choice":
        yield from ((value.lower(), True) for value in values)
        yield "chatty", False
    elif kind == "file":
        yield "/nonexistent/sightline-test-file", False


@pytest.mark.parametrize("name", sorted(sightline_settings.ENV_TYPES))
def test_the_types_in_the_reference_are_the_ones_enforced(monkeypatch, name):
    for value, accepted in type_examples(sightline_settings.ENV_TYPES[name]):
        error = settings_outcome(monkeypatch, name, value)
        if accepted:
            assert error is None, f"{name}={value!r} should be accepted: {error}"
        else:
            assert error and name in error, f"{name}={value!r} should stop start-up naming {name}, got {error!r}"


def test_processes_without_secret_key_share_the_one_generated_in_the_data_dir(tmp_path, ports):
    env = sightline_env(ports, tmp_path / "data")
    env.pop("SECRET_KEY", None)
    argv = [PYTHON, str(ROOT / "manage.py"), "shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)"]
    procs = [subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    keys = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert len(keys) == 1 and len(keys.pop()) > 40
    assert (tmp_path / "data" / "secret_key").stat().st_mode & 0o777 == 0o600


def test_without_secret_key_an_unwritable_data_dir_stops_start_up_naming_it(tmp_path, ports):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = sightline_env(ports, blocker / "data")
    env.pop("SECRET_KEY", None)
    result = run_check(env)
    assert result.returncode == 2
    assert "SECRET_KEY is unset" in result.stderr and "Traceback" not in result.stderr

"""The Dockerfile and the Kubernetes manifests are well-formed and refer only to what
Sightline has: its process commands, its management commands, its settings, its URLs.

Checked statically (no Docker engine or cluster is needed): the Dockerfile's instructions
are parsed, the manifests are read with PyYAML and checked as the API server would check
these kinds, and each container's command and environment are resolved the way Docker
and the kubelet resolve them, then compared with `serve`'s process_commands() and run
through config/settings.py.
"""

import ast
import base64
import fnmatch
import json
import os
import posixpath
import re
import runpy
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import pytest
import yaml
from celery.app.control import Inspect
from celery.bin.celery import celery as celery_cli
from django.core.exceptions import ImproperlyConfigured
from django.core.management import get_commands, load_command_class
from django.http.request import split_domain_port, validate_host
from django.test import override_settings
from django.urls import Resolver404, resolve

from config import settings as sightline_settings
from tests.conftest import ROOT
from traces.management.commands.serve import process_commands

DEPLOY = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
PROCESS_TYPES = ("ingest", "web", "worker", "beat")
# Variables the image or the manifests set that are not Sightline settings.
OTHER_VARIABLES = {
    "PYTHONUNBUFFERED",  # log lines reach the container log at once
    "PYTHONDONTWRITEBYTECODE",  # the code is compiled in the image; the root filesystem is read-only
    "DJANGO_SETTINGS_MODULE",  # for django-admin and `python -c` in the container
    "POD_NAME",  # the pod's name (downward API): the worker's Celery node name
}
# Settings that must come from the Secret, never the ConfigMap.
SECRET_SETTINGS = {"DATABASE_URL", "REDIS_URL", "SIGHTLINE_INGEST_TOKENS"} | {
    name for name, env_type in sightline_settings.ENV_TYPES.items() if env_type.kind == "secret"}
API_VERSIONS = {"ConfigMap": "v1", "Secret": "v1", "Service": "v1", "Deployment": "apps/v1", "Job": "batch/v1"}
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
PORT_NAME = re.compile(r"(?=.*[a-z])[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?")  # IANA_SVC_NAME
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
FIELD_PATHS = {"metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
               "spec.serviceAccountName", "status.hostIP", "status.podIP"}
FAKE_POD_NAME = "sightline-worker-5d9c7b8f6-x2x7q"


# --- The Dockerfile ------------------------------------------------------------------

DOCKERFILE_INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
                           "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
                           "HEALTHCHECK", "SHELL"}


def dockerfile_instructions():
    """[(KEYWORD, arguments)], continuation lines joined, comment lines dropped (as Docker does)."""
    instructions, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        keyword, _, arguments = (current + line).partition(" ")
        instructions.append((keyword, arguments.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return instructions


def exec_form(keyword, arguments):
    try:
        argv = json.loads(arguments)
    except ValueError:
        argv = None
    assert isinstance(argv, list) and argv and all(isinstance(item, str) for item in argv), (
        f"{keyword} must be in exec form (a JSON array), so signals reach the process: {arguments}")
    return argv


class Image(NamedTuple):
    base: str
    env: dict
    workdir: str
    user: str
    exposed: set
    copies: list  # (sources, destination)
    runs: list
    entrypoint: list
    cmd: list
    stopsignal: str


def image():
    base, env, workdir, user, exposed, copies, runs = None, {}, "/", None, set(), [], []
    entrypoint, cmd, stopsignal = [], [], None
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            base = arguments.split()[0]
        elif keyword == "ENV":
            pairs = shlex.split(arguments)
            assert all("=" in pair for pair in pairs), f"ENV in the NAME=value form: {arguments}"
            env.update(pair.split("=", 1) for pair in pairs)
        elif keyword == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, arguments))
        elif keyword == "USER":
            user = arguments
        elif keyword == "EXPOSE":
            exposed |= {int(port.split("/")[0]) for port in arguments.split()}
        elif keyword in ("COPY", "ADD"):
            words = [word for word in shlex.split(arguments) if not word.startswith("--")]
            copies.append((words[:-1], posixpath.normpath(posixpath.join(workdir, words[-1]))))
        elif keyword == "RUN":
            runs.append(arguments)
        elif keyword == "ENTRYPOINT":
            entrypoint, cmd = exec_form(keyword, arguments), []  # a new ENTRYPOINT resets CMD
        elif keyword == "CMD":
            cmd = exec_form(keyword, arguments)
        elif keyword == "STOPSIGNAL":
            stopsignal = arguments
    return Image(base, env, workdir, user, exposed, copies, runs, entrypoint, cmd, stopsignal)


def dockerignore_patterns():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def dockerignored(path):
    """Whether .dockerignore leaves path (relative to the build context) out of the context:
    the last pattern matching it, or a directory above it, decides."""
    parts = Path(path).parts
    candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    excluded = False
    for pattern in dockerignore_patterns():
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        alternatives = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatch.fnmatchcase(candidate, alt) for candidate in candidates for alt in alternatives):
            excluded = not negated
    return excluded


def settings_under(env):
    """config/settings.py run afresh in exactly this environment: its names, or the error."""
    with mock.patch.dict(os.environ, env, clear=True):
        return runpy.run_path(str(ROOT / "config" / "settings.py"))


def test_the_dockerfile_has_only_valid_instructions_in_the_expected_shape():
    instructions = dockerfile_instructions()
    for keyword, arguments in instructions:
        assert keyword in DOCKERFILE_INSTRUCTIONS, f"not a Dockerfile instruction: {keyword}"
        assert arguments, f"{keyword} without arguments"
    keywords = [keyword for keyword, _ in instructions]
    assert keywords[0] in ("FROM", "ARG") and keywords.count("FROM") == 1
    built = image()
    version = re.fullmatch(r"python:3\.(\d+)-slim(-\w+)?", built.base)
    assert version and int(version[1]) >= 11, f"Sightline needs Python 3.11+: {built.base}"
    assert built.stopsignal == "SIGTERM"
    uid = built.user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "USER must be a numeric non-root uid (Kubernetes runAsNonRoot checks it)"
    assert built.entrypoint and built.cmd


def test_the_dockerfile_copies_what_exists_and_installs_the_runtime_requirements():
    built = image()
    for sources, _ in built.copies:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the build context"
            assert source == "." or not dockerignored(source), f"COPY {source}: .dockerignore leaves it out"
    assert (["."], built.workdir) in built.copies, "the project is copied into the WORKDIR (manage.py is run from there)"
    installs = [run for run in built.runs if "pip install" in run]
    assert installs and all("-r requirements.txt" in run and "requirements-dev" not in run for run in installs)
    requirements_copied = next(i for i, (sources, _) in enumerate(built.copies) if "requirements.txt" in sources)
    assert requirements_copied < built.copies.index((["."], built.workdir)), "requirements first, for layer caching"


def test_the_build_context_holds_everything_the_processes_import_and_no_local_state():
    for needed in ["manage.py", "requirements.txt", "config/gunicorn.py", "config/settings.py", "templates/base.html"]:
        assert (ROOT / needed).exists() and not dockerignored(needed), needed
    for left_out in [".git", ".venv", "var", "tests", "config/__pycache__/settings.cpython-311.pyc"]:
        assert dockerignored(left_out), f".dockerignore should leave out {left_out}"
    local_apps = [app for app in sightline_settings.INSTALLED_APPS if (ROOT / app).is_dir()]
    assert local_apps and all(not dockerignored(app) for app in local_apps)
    # Every project module that code in the image imports is in the image too.
    top_level = {path.stem for path in ROOT.iterdir() if path.suffix == ".py" or (path / "__init__.py").exists()}
    for package in local_apps + ["config", "manage.py"]:
        files = [ROOT / package] if package.endswith(".py") else (ROOT / package).rglob("*.py")
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if dockerignored(relative):
                continue
            for node in ast.walk(ast.parse(file.read_text())):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
                for name in names:
                    first = name.split(".")[0]
                    if first in top_level:
                        module = first + ("" if (ROOT / first).is_dir() else ".py")
                        assert not dockerignored(module), f"{relative} imports {name}, which .dockerignore leaves out"


def test_the_dockerfile_sets_only_settings_with_values_they_accept():
    built = image()
    for name in built.env:
        assert name in sightline_settings.ENV_DEFAULTS or name in OTHER_VARIABLES, f"ENV {name}: not a setting"
    configured = settings_under({**built.env, "SECRET_KEY": "test"})  # a key: no key file written here
    assert configured["BIND"] in ("0.0.0.0", "::"), "in a container every port must listen on all interfaces"
    assert built.exposed == {configured["OTLP_GRPC_PORT"], configured["OTLP_HTTP_PORT"], configured["WEB_PORT"]}
    data_dir = str(configured["DATA_DIR"])
    uid = built.user.split(":")[0]
    assert any(f"mkdir -p {data_dir}/run" in run and f"chown -R {uid}" in run for run in built.runs), (
        "the data dir (beat's schedule in run/, embedded servers for `serve`) must exist, writable by USER")


def strip_init(argv):
    """The argv without a leading `tini --` (the init that forwards signals)."""
    if argv and posixpath.basename(argv[0]) == "tini":
        return argv[argv.index("--") + 1:] if "--" in argv else argv[1:]
    return argv


def test_the_image_runs_a_project_command_under_an_init():
    built = image()
    assert posixpath.basename(built.entrypoint[0]) == "tini"
    assert any(re.search(r"apt-get install[^&]*\btini\b", run) for run in built.runs), "tini must be installed"
    argv = strip_init(built.entrypoint + built.cmd)
    assert argv[:2] == ["python", "manage.py"] and argv[2] in get_commands(), argv


# --- The Kubernetes manifests ----------------------------------------------------------

def manifest_files():
    return sorted(path.name for path in DEPLOY.glob("*.yaml"))


def documents():
    """(file name, document) for every YAML document in deploy/kubernetes."""
    found = []
    for name in manifest_files():
        for document in yaml.safe_load_all((DEPLOY / name).read_text()):
            if document is not None:
                found.append((name, document))
    return found


def kustomization():
    (document,) = [doc for name, doc in documents() if name == "kustomization.yaml"]
    return document


def objects():
    return [doc for name, doc in documents() if name != "kustomization.yaml"]


def of_kind(kind):
    return {obj["metadata"]["name"]: obj for obj in objects() if obj["kind"] == kind}


def workloads():
    return {**of_kind("Deployment"), **of_kind("Job")}


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def containers():
    """(workload name, workload, container) for every container of every workload."""
    return [(name, workload, container) for name, workload in workloads().items()
            for container in pod_spec(workload)["containers"]]


def secret_values(secret):
    values = dict(secret.get("stringData") or {})
    values.update({key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()})
    return values


def kubernetes_env(container):
    """The container's environment as the kubelet builds it (envFrom, then env), which is
    also what $(NAME) in command, args and env values can refer to."""
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(of_kind("ConfigMap")[source["configMapRef"]["name"]].get("data") or {})
        else:
            env.update(secret_values(of_kind("Secret")[source["secretRef"]["name"]]))
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = expand(variable["value"], env)
        else:
            source = variable["valueFrom"]
            if "fieldRef" in source:
                env[variable["name"]] = FAKE_POD_NAME if source["fieldRef"]["fieldPath"] == "metadata.name" else "x"
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[variable["name"]] = of_kind("ConfigMap")[ref["name"]]["data"][ref["key"]]
            else:
                ref = source["secretKeyRef"]
                env[variable["name"]] = secret_values(of_kind("Secret")[ref["name"]])[ref["key"]]
    return env


def process_env(container):
    """What the process sees: the image's ENV, overridden by what Kubernetes sets."""
    return {**image().env, **kubernetes_env(container)}


def expand(text, env):
    """Kubernetes' $(NAME) expansion: known names replaced, $$ an escaped $, the rest kept."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda match: "$" if match[0] == "$$" else env.get(match[1], match[0]), text)


def container_argv(container):
    """The argv the container runs, as Kubernetes combines it with the image's ENTRYPOINT
    and CMD, variables expanded, without the init."""
    built, env = image(), kubernetes_env(container)
    if "command" in container:
        argv = container["command"] + container.get("args", [])
    else:
        argv = built.entrypoint + container.get("args", built.cmd)
    return strip_init([expand(arg, env) for arg in argv])


def quantity(value):
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|k|M|G)?", str(value))
    assert match, f"not a quantity: {value!r}"
    scale = {None: 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    return float(match[1]) * scale[match[2]]


def test_every_object_is_well_formed():
    seen = set()
    for obj in objects():
        kind = obj.get("kind")
        assert kind in API_VERSIONS and obj.get("apiVersion") == API_VERSIONS[kind], (kind, obj.get("apiVersion"))
        name = obj["metadata"]["name"]
        assert DNS_LABEL.fullmatch(name), f"{kind} {name}: not a DNS-1123 name"
        assert "namespace" not in obj["metadata"], f"{kind} {name}: the manifests are namespace-agnostic"
        assert (kind, name) not in seen, f"{kind} {name} twice"
        seen.add((kind, name))
        if kind == "ConfigMap":
            data = obj["data"]
        elif kind == "Secret":
            data = obj.get("stringData") or obj.get("data")
        else:
            continue
        for key, value in data.items():
            assert ENV_NAME.fullmatch(key) and isinstance(value, str), (
                f"{kind} {name}: {key}: keys are variable names, values strings (quote numbers and booleans)")


def test_every_workload_and_container_is_well_formed():
    pod_labels = {name: workload["spec"]["template"]["metadata"]["labels"] for name, workload in workloads().items()}
    image_name = kustomization()["images"][0]["name"]
    for name, workload in workloads().items():
        spec = pod_spec(workload)
        if workload["kind"] == "Deployment":
            selector = workload["spec"]["selector"]["matchLabels"]
            assert selector and selector.items() <= pod_labels[name].items(), f"{name}: selector must match its pods"
            for other, labels in pod_labels.items():
                assert other == name or not selector.items() <= labels.items(), f"{name}'s selector also matches {other}"
            assert spec.get("restartPolicy", "Always") == "Always"
        else:
            assert spec["restartPolicy"] in ("Never", "OnFailure")
        volumes = {volume["name"] for volume in spec.get("volumes", [])}
        names = [container["name"] for container in spec["containers"]]
        assert len(names) == len(set(names))
        for container in spec["containers"]:
            where = f"{name}/{container['name']}"
            assert DNS_LABEL.fullmatch(container["name"]), where
            assert container["image"] == image_name, f"{where}: the image kustomization.yaml sets"
            assert container.get("command") or container.get("args"), f"{where}: say what it runs"
            ports = container.get("ports", [])
            for port in ports:
                assert isinstance(port["containerPort"], int) and 1 <= port["containerPort"] <= 65535, where
                assert PORT_NAME.fullmatch(port["name"]), f"{where}: port name {port['name']!r}"
            assert len({port["name"] for port in ports}) == len(ports), where
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{where}: no volume {mount['name']}"
            resources = container["resources"]
            for resource in ("cpu", "memory"):
                request, limit = resources["requests"][resource], resources["limits"][resource]
                assert quantity(request) <= quantity(limit), f"{where}: {resource} request above its limit"


def probes(container):
    found = [(kind, container[kind]) for kind in ("startupProbe", "readinessProbe", "livenessProbe") if kind in container]
    found += [(f"lifecycle.{hook}", handler) for hook, handler in container.get("lifecycle", {}).items()]
    return found


def test_every_probe_has_one_handler_on_a_declared_port():
    for name, _, container in containers():
        ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
        for kind, probe in probes(container):
            where = f"{name}/{container['name']} {kind}"
            handlers = [handler for handler in PROBE_HANDLERS if handler in probe]
            allowed = ("exec", "httpGet", "tcpSocket") if kind.startswith("lifecycle") else PROBE_HANDLERS
            assert len(handlers) == 1 and handlers[0] in allowed, f"{where}: exactly one handler, got {handlers}"
            handler = probe[handlers[0]]
            if handlers[0] == "grpc":
                assert handler["port"] in ports.values(), f"{where}: gRPC probes take a declared port number"
            elif handlers[0] in ("httpGet", "tcpSocket"):
                port = handler["port"]
                assert port in ports if isinstance(port, str) else port in ports.values(), f"{where}: port {port}"
            for field, least in (("initialDelaySeconds", 0), ("periodSeconds", 1), ("timeoutSeconds", 1),
                                 ("failureThreshold", 1)):
                value = probe.get(field, least)
                assert isinstance(value, int) and value >= least, f"{where}: {field} {value!r}"
            if kind in ("livenessProbe", "startupProbe"):
                assert probe.get("successThreshold", 1) == 1, f"{where}: Kubernetes requires successThreshold 1"


def http_probes():
    return [(f"{name}/{container['name']} {kind}", container, probe["httpGet"])
            for name, _, container in containers() for kind, probe in probes(container) if "httpGet" in probe]


def test_http_probes_ask_for_a_real_url_with_a_host_django_answers():
    assert http_probes()
    for where, container, get in http_probes():
        try:
            resolve(get["path"])
        except Resolver404:
            pytest.fail(f"{where}: {get['path']} is not a URL of Sightline")
        host = {header["name"].lower(): header["value"] for header in get.get("httpHeaders", [])}.get("host")
        assert host, f"{where}: the kubelet sends the pod IP as Host, which ALLOWED_HOSTS refuses; set a Host header"
        allowed = settings_under(process_env(container))["ALLOWED_HOSTS"]
        assert validate_host(split_domain_port(host)[0], allowed), f"{where}: Host {host} is not in ALLOWED_HOSTS"


@pytest.mark.django_db
def test_http_probes_succeed_against_the_app(client):
    for where, container, get in http_probes():
        host = {header["name"].lower(): header["value"] for header in get.get("httpHeaders", [])}["host"]
        with override_settings(ALLOWED_HOSTS=settings_under(process_env(container))["ALLOWED_HOSTS"]):
            response = client.get(get["path"], HTTP_HOST=host)
        assert 200 <= response.status_code < 400, f"{where}: {get['path']} answered {response.status_code}"


def grpc_probes():
    return [(name, container, probe["grpc"]) for name, _, container in containers()
            for _, probe in probes(container) if "grpc" in probe]


def test_grpc_probes_ask_ingest_on_its_grpc_port():
    assert grpc_probes()
    for name, container, grpc_probe in grpc_probes():
        assert name == "sightline-ingest", name
        assert grpc_probe["port"] == settings_under(process_env(container))["OTLP_GRPC_PORT"]


@pytest.mark.slow
def test_ingest_answers_the_grpc_probes_question(ingest_server):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(ingest_server["grpc"]) as channel:
        for _, _, grpc_probe in grpc_probes():
            request = health_pb2.HealthCheckRequest(service=grpc_probe.get("service", ""))
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def celery_worker_hostname(argv):
    return argv[argv.index("--hostname") + 1]


def ping_probes():
    return [(name, container, probe) for name, _, container in containers()
            for _, probe in probes(container) if "exec" in probe and probe["exec"]["command"][0] != "sleep"]


def test_exec_probes_run_known_commands():
    assert "inspect" in celery_cli.commands and hasattr(Inspect, "ping")
    for name, _, container in containers():
        env = kubernetes_env(container)
        for kind, probe in probes(container):
            if "exec" not in probe:
                continue
            where = f"{name}/{container['name']} {kind}"
            command = probe["exec"]["command"]
            if command[0] == "sleep":
                assert len(command) == 2 and command[1].isdigit(), where
                continue
            assert command[:2] == ["sh", "-c"] and len(command) == 3, f"{where}: unexpected command {command}"
            words = shlex.split(command[2])
            assert words[0] == "exec", f"{where}: exec, so the probe's process gets the probe's timeout signal"
            for variable in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", command[2]):
                assert variable in env, f"{where}: ${variable} is not set in the container"
            words = [re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env[m[1]], word) for word in words[1:]]
            assert words[:7] == ["python", "-m", "celery", "-A", "config", "inspect", "ping"], where
            destination = words[words.index("--destination") + 1]
            assert destination == celery_worker_hostname(container_argv(container)), (
                f"{where}: must ping this pod's worker")
            assert int(words[words.index("--timeout") + 1]) < probe["timeoutSeconds"], where


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_worker_probe_passes_against_a_running_worker(tmp_path, ports):
    from django.conf import settings

    from tests.conftest import PYTHON, database_url, sightline_env
    from tests.processes import Proc, wait_until

    ((_, container, probe),) = ping_probes()
    env = sightline_env(ports, tmp_path, DATABASE_URL=database_url(), REDIS_URL=settings.SIGHTLINE_REDIS_URL,
                        POD_NAME=FAKE_POD_NAME)
    argv = container_argv(container)
    worker = Proc([PYTHON] + argv[1:], env=env)
    try:
        command = [arg.replace("exec python ", f"exec {PYTHON} ") for arg in probe["exec"]["command"]]

        def probe_passes():
            return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, timeout=60).returncode == 0
        wait_until(probe_passes, 90, "the worker's liveness probe to pass", worker)
    finally:
        worker.stop()


def test_env_and_env_from_refer_to_what_the_manifests_define():
    config_maps, secrets = of_kind("ConfigMap"), of_kind("Secret")
    for name, _, container in containers():
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef") or source.get("secretRef")
            assert ref["name"] in (config_maps if "configMapRef" in source else secrets), f"{name}: {ref['name']}"
        for variable in container.get("env", []):
            assert ("value" in variable) != ("valueFrom" in variable), f"{name}: {variable['name']}"
            source = variable.get("valueFrom", {})
            if "fieldRef" in source:
                assert source["fieldRef"]["fieldPath"] in FIELD_PATHS
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                assert ref["key"] in config_maps[ref["name"]]["data"]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                assert ref["key"] in secret_values(secrets[ref["name"]])
        for arg in container.get("command", []) + container.get("args", []):
            unresolved = re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", expand(arg, kubernetes_env(container)))
            assert not unresolved, f"{name}: $({unresolved[0]}) is not defined in the container's env or envFrom"


def test_every_variable_set_anywhere_is_a_setting_or_a_known_one():
    names = set(image().env)
    for config_map in of_kind("ConfigMap").values():
        names |= set(config_map["data"])
    for secret in of_kind("Secret").values():
        names |= set(secret_values(secret))
    for _, _, container in containers():
        names |= {variable["name"] for variable in container.get("env", [])}
    unknown = sorted(names - set(sightline_settings.ENV_DEFAULTS) - OTHER_VARIABLES)
    assert not unknown, f"not Sightline settings (see docs/configuration.md): {unknown}"


def test_secrets_are_in_the_secret_and_postgresql_and_redis_are_external():
    for config_map in of_kind("ConfigMap").values():
        assert not SECRET_SETTINGS & set(config_map["data"]), "secrets belong in the Secret"
    (secret,) = of_kind("Secret").values()
    values = secret_values(secret)
    # Only `serve` starts embedded servers; the process types need URLs of their own.
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"} <= set(values)
    assert all(values[name] for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY"))


def test_the_settings_accept_the_configuration_of_every_container():
    for name, workload, container in containers():
        try:
            configured = settings_under(process_env(container))
        except ImproperlyConfigured as exc:
            pytest.fail(f"{name}: the settings refuse its configuration: {exc}")
        assert configured["BIND"] in ("0.0.0.0", "::"), f"{name}: probes and Services reach the pod's IP"
        assert not configured["USING_EMBEDDED_DATABASE"] and not configured["USING_EMBEDDED_REDIS"]
        expected_ports = {
            "ingest": {configured["OTLP_GRPC_PORT"], configured["OTLP_HTTP_PORT"]},
            "web": {configured["WEB_PORT"]},
        }.get(workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"], set())
        assert {port["containerPort"] for port in container.get("ports", [])} == expected_ports, name


def expected_process_commands(container):
    """serve's process_commands() under this container's settings, with the image's paths."""
    configured = settings_under(process_env(container))
    names = ("LOG_LEVEL", "WORKER_CONCURRENCY", "CELERY_BEAT_SCHEDULE_FILENAME", "DATA_DIR")
    with override_settings(BASE_DIR=Path(image().workdir), **{name: configured[name] for name in names}):
        return process_commands("python")


def in_image(argv):
    """argv with the python path reduced to `python` and relative files made absolute in the WORKDIR."""
    workdir = image().workdir
    normal = ["python" if re.fullmatch(r"(.*/)?python3?(\.\d+)?", argv[0]) else argv[0]]
    for arg in argv[1:]:
        is_project_file = not arg.startswith(("/", "-")) and (ROOT / arg).is_file()
        normal.append(posixpath.join(workdir, arg) if is_project_file else arg)
    return normal


def without_node_name(argv):
    """The worker's --hostname keeps its prefix; the node after @ is the pod's own."""
    if "--hostname" in argv:
        at = argv.index("--hostname") + 1
        argv = argv[:at] + [argv[at].split("@")[0] + "@<node>"] + argv[at + 1:]
    return argv


def test_each_deployment_runs_its_process_type_as_serve_does():
    deployments = of_kind("Deployment")
    assert set(deployments) == {f"sightline-{kind}" for kind in PROCESS_TYPES}
    for kind in PROCESS_TYPES:
        deployment = deployments[f"sightline-{kind}"]
        assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == kind
        (container,) = pod_spec(deployment)["containers"]
        argv = in_image(container_argv(container))
        expected = in_image(expected_process_commands(container)[kind])
        assert without_node_name(argv) == without_node_name(expected), f"{kind}: {argv} is not serve's {expected}"
        if "--hostname" in argv:
            # Unique per pod: two workers with one node name confuse Celery's remote control.
            assert FAKE_POD_NAME in celery_worker_hostname(argv)
    assert set(PROCESS_TYPES) == set(process_commands("python")), "a process type without a Deployment"


def test_other_containers_run_real_management_commands():
    process_argvs = []
    for _, _, container in containers():
        process_argvs += [without_node_name(in_image(argv)) for argv in expected_process_commands(container).values()]
    found = 0
    for name, _, container in containers():
        argv = in_image(container_argv(container))
        if without_node_name(argv) in process_argvs:
            continue
        found += 1
        manage = posixpath.join(image().workdir, "manage.py")
        assert argv[:2] == ["python", manage], f"{name}: neither a process type nor a manage.py command: {argv}"
        command = argv[2]
        assert command in get_commands(), f"{name}: no management command {command!r}"
        parser = load_command_class(get_commands()[command], command).create_parser("manage.py", command)
        parser.parse_args(argv[3:])  # CommandError on an unknown option
    assert found, "the migrate Job"


def test_migrations_run_in_a_job_that_can_be_applied_before_the_deployments():
    jobs = of_kind("Job")
    assert [container_argv(job_container) for job in jobs.values() for job_container in pod_spec(job)["containers"]] \
        == [["python", "manage.py", "migrate", "--noinput"]]
    # docs/deployment.md applies in three steps by label: objects without a component
    # (ConfigMap, Secret), then component=migrate (the Job), then everything.
    components = {(obj["kind"], obj["metadata"]["name"]): obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")
                  for obj in objects()}
    assert {key for key, component in components.items() if component is None} == \
        {("ConfigMap", name) for name in of_kind("ConfigMap")} | {("Secret", name) for name in of_kind("Secret")}
    assert {key for key, component in components.items() if component == "migrate"} == {("Job", name) for name in jobs}


def test_beat_runs_once():
    beat = of_kind("Deployment")["sightline-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}, "a rolling update would run two beats at once"


def test_pods_get_time_to_drain_on_sigterm():
    for name, workload, container in containers():
        if workload["kind"] != "Deployment":
            continue
        grace = settings_under(process_env(container))["SHUTDOWN_GRACE_SECONDS"]
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["sleep", "0"])
        pause = int(pre_stop[1]) if pre_stop[0] == "sleep" else 0
        period = pod_spec(workload).get("terminationGracePeriodSeconds", 30)
        # The kubelet kills at the end of the period; the process needs its grace after the
        # preStop pause, and a few seconds to exit.
        assert period >= pause + grace + 5, f"{name}: terminationGracePeriodSeconds {period} < {pause} + {grace} + 5"


def test_pods_run_as_non_root_with_a_read_only_root_filesystem_and_writable_scratch():
    uid = int(image().user.split(":")[0])
    for name, workload, container in containers():
        pod_security = pod_spec(workload)["securityContext"]
        assert pod_security["runAsNonRoot"] is True and pod_security.get("runAsUser", uid) == uid, name
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        if security.get("readOnlyRootFilesystem"):
            mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: gunicorn's heartbeat files and Python's tempfile write to /tmp"
            if workload["kind"] == "Deployment":
                data_dir = str(settings_under(process_env(container))["DATA_DIR"])
                assert f"{data_dir}/run" in mounts, f"{name}: beat's schedule and serve's files are written to the data dir's run/"


def test_services_select_one_deployment_and_target_its_ports():
    pod_labels = {name: deployment["spec"]["template"]["metadata"]["labels"]
                  for name, deployment in of_kind("Deployment").items()}
    services = of_kind("Service")
    assert set(services) == {"sightline-ingest", "sightline-web"}
    for name, service in services.items():
        selector = service["spec"]["selector"]
        selected = [deployment for deployment, labels in pod_labels.items() if selector.items() <= labels.items()]
        assert selected == [name], f"Service {name} selects {selected}"
        (container,) = pod_spec(of_kind("Deployment")[name])["containers"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert len({port["name"] for port in service["spec"]["ports"]}) == len(service["spec"]["ports"])
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            number = ports.get(target) if isinstance(target, str) else target
            assert number in ports.values(), f"Service {name}: targetPort {target} is not a port of the pods"
            assert port["port"] == number, f"Service {name}: keep the standard port numbers"
            assert PORT_NAME.fullmatch(port["name"])


def test_the_kustomization_lists_every_manifest():
    document = kustomization()
    assert document["kind"] == "Kustomization"
    listed = document["resources"]
    assert sorted(listed) == sorted(set(manifest_files()) - {"kustomization.yaml"}), "list every file, once"
    assert len(document["images"]) == 1


def test_kubectl_builds_the_kustomization():
    # `kubectl create --dry-run=client -f` would be stricter, but it needs an API server
    # even with --validate=false (it fails with "connection refused" without a cluster);
    # `kubectl kustomize` runs offline.
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not on PATH; the manifests are still checked with PyYAML above")
    result = subprocess.run([kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted((doc["kind"], doc["metadata"]["name"]) for doc in built) == \
        sorted((obj["kind"], obj["metadata"]["name"]) for obj in objects())
    new_image = kustomization()["images"][0]
    images = {container["image"] for doc in built if doc["kind"] in ("Deployment", "Job")
              for container in doc["spec"]["template"]["spec"]["containers"]}
    assert images == {f"{new_image.get('newName', new_image['name'])}:{new_image['newTag']}"}

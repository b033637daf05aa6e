"""Sightline settings.

Every environment variable Sightline reads is read here, through the env_* helpers
below, and validated at import: a bad value raises ImproperlyConfigured naming the
variable, which stops any process (web, ingest, worker, beat, serve) at start.
`.env.example` lists every variable with its default and a description;
docs/configuration.md is generated from the two by config/reference.py, and
tests/test_config.py checks that all three agree.
"""

import os
import secrets
import time
import warnings
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from dashboards.schedule import beat_schedule as dashboards_schedule
from traces.schedule import beat_schedule

BASE_DIR = Path(__file__).resolve().parent.parent


class EnvType(NamedTuple):
    """What a variable holds, for the configuration reference (config/reference.py)."""

    kind: str  # string, secret, file, directory, boolean, integer, port, list, url or choice
    minimum: int | None = None
    maximum: int | None = None
    values: tuple[str, ...] = ()  # url: its schemes; choice: the accepted values


# Every variable read through the helpers, with its default as text ("" = unset) and
# its type. tests/test_config.py compares these with .env.example and docs/configuration.md.
ENV_DEFAULTS: dict[str, str] = {}
ENV_TYPES: dict[str, EnvType] = {}

POSTGRES_SCHEMES = ("postgresql", "postgres")
REDIS_SCHEMES = ("redis", "rediss", "unix")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _raw(name, default, type_):
    ENV_DEFAULTS[name] = "" if default is None else str(default)
    ENV_TYPES[name] = type_
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name, default=None, type_=EnvType("string")):
    value = _raw(name, default, type_)
    return default if value is None else value


def env_secret(name, default=None):
    """A secret, read from NAME or from the file named by NAME_FILE."""
    file_name = _raw(name + "_FILE", None, EnvType("file"))
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {file_name!r}: {exc.strerror}")
    return env_str(name, default, EnvType("secret"))


def env_bool(name, default=False):
    value = _raw(name, "true" if default else "false", EnvType("boolean"))
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {value!r}")


def env_int(name, default, minimum=None, maximum=None, kind="integer"):
    value = _raw(name, default, EnvType(kind, minimum, maximum))
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ImproperlyConfigured(f"{name} must be between {minimum} and {maximum}, got {number}")
    return number


def env_port(name, default):
    return env_int(name, default, minimum=1, maximum=65535, kind="port")


def env_list(name, default=""):
    """A comma-separated list."""
    value = _raw(name, default, EnvType("list"))
    if value is None:
        value = default
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_database_url(name, url):
    """postgres://user:password@host:port/dbname?sslmode=... -> Django DATABASES entry."""
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ImproperlyConfigured(
            f"{name} must be a postgresql:// URL (Sightline stores data in PostgreSQL only), got scheme {parts.scheme!r}"
        )
    options = dict(parse_qsl(parts.query))
    host = options.pop("host", None) or unquote(parts.hostname or "")
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has an invalid port") from None
    name_part = unquote(parts.path.lstrip("/"))
    if not name_part:
        raise ImproperlyConfigured(f"{name} must name a database, e.g. postgresql://user@host:5432/sightline")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name_part,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(port or ""),
        "OPTIONS": options,
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"NAME": options.pop("test_name", None) or f"test_{name_part}"},
    }


def check_redis_url(name, url):
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        raise ImproperlyConfigured(f"{name} must be a redis://, rediss:// or unix:// URL, got {url!r}")
    try:
        parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has an invalid port") from None
    return url


# --- Where things live -------------------------------------------------------------

_data_dir = env_str("SIGHTLINE_DATA_DIR", "./var", EnvType("directory"))
# The default lives beside manage.py whatever the working directory; a value that is
# set is taken as given (relative to the working directory).
DATA_DIR = (BASE_DIR / "var") if _data_dir == "./var" else Path(_data_dir).resolve()
# The all-in-one `serve` writes the addresses of the embedded servers it started here,
# so that other commands (migrate, shell, create_api_token) find them.
EMBEDDED_ENV_FILE = DATA_DIR / "run" / "embedded.env"


def _embedded_value(key):
    try:
        for line in EMBEDDED_ENV_FILE.read_text().splitlines():
            if line.startswith(key + "="):
                return line.split("=", 1)[1]
    except OSError:
        pass
    return None


DATABASE_URL = env_str("DATABASE_URL", None, EnvType("url", values=POSTGRES_SCHEMES))
REDIS_URL = env_str("REDIS_URL", None, EnvType("url", values=REDIS_SCHEMES))
# With DATABASE_URL / REDIS_URL unset, `serve` starts embedded servers. Commands run
# beside a running `serve` find them through EMBEDDED_ENV_FILE.
USING_EMBEDDED_DATABASE = DATABASE_URL is None
USING_EMBEDDED_REDIS = REDIS_URL is None
_database_url = DATABASE_URL or _embedded_value("DATABASE_URL") or "postgresql://postgres@127.0.0.1:1/sightline"
_redis_url = REDIS_URL or _embedded_value("REDIS_URL") or "redis://127.0.0.1:1/0"

DATABASES = {"default": parse_database_url("DATABASE_URL", _database_url)}
SIGHTLINE_REDIS_URL = check_redis_url("REDIS_URL", _redis_url)

# --- Network ---------------------------------------------------------------------

BIND = env_str("SIGHTLINE_BIND", "127.0.0.1")
# The host a program on this machine connects to: the bind address, or loopback when
# Sightline listens on every interface (for the URLs serve prints and demo's default).
LOCAL_HOST = "127.0.0.1" if BIND in ("0.0.0.0", "::") else (f"[{BIND}]" if ":" in BIND else BIND)
OTLP_GRPC_PORT = env_port("SIGHTLINE_OTLP_GRPC_PORT", 4317)
OTLP_HTTP_PORT = env_port("SIGHTLINE_OTLP_HTTP_PORT", 4318)
WEB_PORT = env_port("SIGHTLINE_WEB_PORT", 8000)
_ports = {"SIGHTLINE_OTLP_GRPC_PORT": OTLP_GRPC_PORT, "SIGHTLINE_OTLP_HTTP_PORT": OTLP_HTTP_PORT,
          "SIGHTLINE_WEB_PORT": WEB_PORT}
if len(set(_ports.values())) != len(_ports):
    raise ImproperlyConfigured(f"SIGHTLINE_OTLP_GRPC_PORT, SIGHTLINE_OTLP_HTTP_PORT and SIGHTLINE_WEB_PORT must differ, got {_ports}")

# --- Processes -------------------------------------------------------------------

WEB_WORKERS = env_int("SIGHTLINE_WEB_WORKERS", 2, minimum=1, maximum=64)
WORKER_CONCURRENCY = env_int("SIGHTLINE_WORKER_CONCURRENCY", 2, minimum=1, maximum=64)
INGEST_PROCESSES = env_int("SIGHTLINE_INGEST_PROCESSES", 1, minimum=1, maximum=64)
# On SIGTERM a process stops taking new work and has this long to finish what it took
# (ingest: requests in flight; web: requests; serve waits this long for its children).
SHUTDOWN_GRACE_SECONDS = env_int("SIGHTLINE_SHUTDOWN_GRACE_SECONDS", 20, minimum=1, maximum=3600)

# --- Ingest ----------------------------------------------------------------------

# Largest accepted request body after decompression; larger ones get RESOURCE_EXHAUSTED / 413.
INGEST_MAX_BODY_BYTES = env_int("SIGHTLINE_INGEST_MAX_BODY_BYTES", 64 * 1024 * 1024, minimum=1024)
# Export requests one ingest process works on at once; more get UNAVAILABLE / 429 to retry.
INGEST_MAX_INFLIGHT = env_int("SIGHTLINE_INGEST_MAX_INFLIGHT", 8, minimum=1, maximum=1024)
# When set, exporters must send "Authorization: Bearer <one of these>".
INGEST_TOKENS = env_list("SIGHTLINE_INGEST_TOKENS", "")
# TLS for OTLP/gRPC: both files, or neither.
GRPC_TLS_CERT = env_str("SIGHTLINE_GRPC_TLS_CERT", None, EnvType("file"))
GRPC_TLS_KEY = env_str("SIGHTLINE_GRPC_TLS_KEY", None, EnvType("file"))
if bool(GRPC_TLS_CERT) != bool(GRPC_TLS_KEY):
    raise ImproperlyConfigured("SIGHTLINE_GRPC_TLS_CERT and SIGHTLINE_GRPC_TLS_KEY must be set together")
for _name, _path in (("SIGHTLINE_GRPC_TLS_CERT", GRPC_TLS_CERT), ("SIGHTLINE_GRPC_TLS_KEY", GRPC_TLS_KEY)):
    if _path and not Path(_path).is_file():
        raise ImproperlyConfigured(f"{_name}: no such file {_path!r}")

# --- Correlation -------------------------------------------------------------------

# A trace idle this long is correlated; a span arriving later re-opens it.
SETTLE_SECONDS = env_int("SIGHTLINE_SETTLE_SECONDS", 10, minimum=0, maximum=3600)
# How often beat looks for settled traces.
SETTLE_TICK_SECONDS = env_int("SIGHTLINE_SETTLE_TICK_SECONDS", 2, minimum=1, maximum=60)
# A task taken by a worker that died is given to another after this long (acks_late).
TASK_VISIBILITY_SECONDS = env_int("SIGHTLINE_TASK_VISIBILITY_SECONDS", 300, minimum=5, maximum=86400)

# --- Retention ---------------------------------------------------------------------

RETENTION_DAYS = env_int("SIGHTLINE_RETENTION_DAYS", 7, minimum=1, maximum=3650)
# Per signal; unset = SIGHTLINE_RETENTION_DAYS.
RETENTION_DAYS_SPANS = env_int("SIGHTLINE_RETENTION_DAYS_SPANS", None, minimum=1, maximum=3650) or RETENTION_DAYS
RETENTION_DAYS_METRICS = env_int("SIGHTLINE_RETENTION_DAYS_METRICS", None, minimum=1, maximum=3650) or RETENTION_DAYS
# RED and service-graph rollups (what charts and SLOs read). Unset: the longer of
# SIGHTLINE_RETENTION_DAYS and 30 days, so a 30-day SLO (the default window) sees its window.
RETENTION_DAYS_ROLLUPS = (env_int("SIGHTLINE_RETENTION_DAYS_ROLLUPS", None, minimum=1, maximum=3650)
                          or max(RETENTION_DAYS, 30))

# --- Query API -------------------------------------------------------------------

# When true, anyone who can reach the web port may read the APIs without a token;
# writes (SLOs, channels) still need a browser session or an API token.
PUBLIC_READ = env_bool("SIGHTLINE_PUBLIC_READ", False)

# --- SLOs and alerting ------------------------------------------------------------

# How often (seconds) beat evaluates every SLO.
SLO_EVAL_SECONDS = env_int("SIGHTLINE_SLO_EVAL_SECONDS", 60, minimum=1, maximum=3600)
# An alert resolves only after its conditions stayed unmet this long (no flapping).
ALERT_RESOLVE_HOLD_SECONDS = env_int("SIGHTLINE_ALERT_RESOLVE_HOLD_SECONDS", 300, minimum=0, maximum=86400)
# Each notification attempt gives up after this many seconds; failed ones are retried with backoff.
NOTIFY_TIMEOUT_SECONDS = env_int("SIGHTLINE_NOTIFY_TIMEOUT_SECONDS", 5, minimum=1, maximum=120)
# The URL people open Sightline at, for links in alerts (unset: http://<bind>:<web port>).
PUBLIC_URL = env_str("SIGHTLINE_PUBLIC_URL", "")

# --- E-mail (the e-mail notification channel) -----------------------------------------

EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = env_str("SIGHTLINE_EMAIL_HOST", "localhost")
EMAIL_PORT = env_port("SIGHTLINE_EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("SIGHTLINE_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = env_secret("SIGHTLINE_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = env_bool("SIGHTLINE_EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = NOTIFY_TIMEOUT_SECONDS
DEFAULT_FROM_EMAIL = env_str("SIGHTLINE_EMAIL_FROM", "sightline@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Django ----------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)


def _secret_key():
    key = env_secret("SECRET_KEY")
    if key:
        return key
    # One machine, no key given: make one and keep it beside the data, so sessions
    # survive restarts and every process uses the same one. Created exclusively: of
    # processes starting together, one writes it and the others read it.
    # Production sets SECRET_KEY (or SECRET_KEY_FILE).
    path = DATA_DIR / "secret_key"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            key = path.read_text().strip()
            if key:
                return key
            time.sleep(0.1)  # another process created it and is writing it
        raise ImproperlyConfigured(f"SECRET_KEY is unset and {path} is empty: delete it, or set SECRET_KEY") from None
    except OSError as exc:
        raise ImproperlyConfigured(f"SECRET_KEY is unset and {path} cannot be created ({exc.strerror}): "
                                   "set SECRET_KEY or SECRET_KEY_FILE, or make SIGHTLINE_DATA_DIR writable") from None
    key = secrets.token_urlsafe(50)
    with os.fdopen(descriptor, "w") as file:
        file.write(key)
    return key


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ingest",
    "traces",
    "dashboards",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "dashboards.csp.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboards.pages.navigation",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
# plotly.js comes from the installed plotly package (dashboards.finders): no CDN, works offline.
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "dashboards.finders.PlotlyFinder",
]
# Static files are served from the apps (finders) unless collectstatic filled STATIC_ROOT.
warnings.filterwarnings("ignore", message="No directory at")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/login/"

LOG_LEVEL = env_str("SIGHTLINE_LOG_LEVEL", "INFO", EnvType("choice", values=LOG_LEVELS)).upper()
if LOG_LEVEL not in LOG_LEVELS:
    raise ImproperlyConfigured(f"SIGHTLINE_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {LOG_LEVEL!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "plain"}},
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Celery ----------------------------------------------------------------------

CELERY_BROKER_URL = SIGHTLINE_REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": TASK_VISIBILITY_SECONDS}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "run" / "celerybeat-schedule")
try:  # serve makes it; beat run on its own (a container, a unit file) needs it too
    (DATA_DIR / "run").mkdir(parents=True, exist_ok=True)
except OSError:
    pass  # a read-only data dir: beat's own error names the file
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {**beat_schedule(SETTLE_TICK_SECONDS), **dashboards_schedule(SLO_EVAL_SECONDS)}

"""gunicorn settings for the web process: `gunicorn -c config/gunicorn.py config.wsgi`."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.conf import settings  # noqa: E402  (validates the configuration first)

bind = f"{settings.BIND}:{settings.WEB_PORT}"
workers = settings.WEB_WORKERS
worker_class = "gthread"
threads = 4
timeout = 60
# On SIGTERM the workers stop accepting and have this long to finish their requests.
graceful_timeout = settings.SHUTDOWN_GRACE_SECONDS
accesslog = None
errorlog = "-"
loglevel = settings.LOG_LEVEL.lower()


# Sightline: one image for every process type. A container runs `manage.py serve` (all in
# one, embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set) unless it is
# given another command; the Kubernetes Deployments in deploy/kubernetes each run one
# process type. Build: docker build -t sightline .   Details: docs/deployment.md.
# tests/test_deploy.py checks this file (instructions, sources, variables, commands).
FROM python:3.11-slim-bookworm

# tini runs as PID 1: it passes SIGTERM on to Sightline's process (which drains and exits)
# and reaps the processes it leaves behind. Kubernetes keeps it: the manifests set `args`,
# not `command`, so this ENTRYPOINT stays.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# A numeric non-root user, so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 sightline \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin sightline

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=config.settings \
    SIGHTLINE_BIND=0.0.0.0 \
    SIGHTLINE_DATA_DIR=/var/lib/sightline

WORKDIR /app
# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install --no-cache-dir --disable-pip-version-check -r requirements.txt

# The code stays owned by root: the process can read it, not change it. Compiled here,
# so a read-only root filesystem costs no start-up time.
COPY . .
RUN python -m compileall -q config dashboards ingest traces manage.py \
    && mkdir -p /var/lib/sightline/run \
    && chown -R 10001:10001 /var/lib/sightline

USER 10001:10001
EXPOSE 4317 4318 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--"]
CMD ["python", "manage.py", "serve"]

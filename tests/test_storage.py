"""The suite runs against real PostgreSQL and Redis, never SQLite or mocks."""

import pytest
from django.db import connection

from traces.redis_client import get_redis


@pytest.mark.django_db
def test_the_database_is_postgresql_15_or_newer():
    assert connection.vendor == "postgresql"
    assert connection.pg_version >= 150000


def test_redis_answers():
    client = get_redis()
    client.set("sightline:test:ping", "pong", ex=10)
    assert client.get("sightline:test:ping") == b"pong"


def test_the_health_endpoint_reports_both(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}

"""Who may read the APIs: a browser session, a bearer API token, or anyone with SIGHTLINE_PUBLIC_READ."""

import hashlib
import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import RequestFactory

from dashboards.api.http import Unauthorized, authenticate
from dashboards.models import ApiToken

pytestmark = pytest.mark.django_db(transaction=True)

READS = ["/api/v1/services", "/api/v1/dependencies", "/api/v1/traces", "/api/v1/hotspots",
         "/api/v1/services/checkout/operations"]


@pytest.fixture
def user():
    return User.objects.create_user("reader", password="pw-reader-1")


def create_token(username):
    out = io.StringIO()
    call_command("create_api_token", username, "--name", "grafana", stdout=out)
    return out.getvalue().strip()


@pytest.mark.parametrize("path", READS)
def test_anonymous_requests_get_401_with_a_bearer_challenge(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "create_api_token" in response.json()["error"]["message"]


def test_a_token_from_the_command_reads_and_is_stored_hashed(client, user):
    token = create_token("reader")
    assert token.startswith("sl_") and len(token) > 40
    response = client.get("/api/v1/services", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200 and "data" in response.json()
    row = ApiToken.objects.get(user=user)
    assert row.name == "grafana" and row.last_used_at is not None
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    stored = [str(value) for value in ApiToken.objects.values_list().get()]
    assert not any(token in value for value in stored)  # never in clear


@pytest.mark.parametrize("header", ["Bearer sl_not-a-real-token", "Bearer ", "Basic cmVhZGVyOnB3", "sl_token"])
def test_a_bad_token_is_refused_even_when_reads_are_public(client, settings, user, header):
    settings.PUBLIC_READ = True
    response = client.get("/api/v1/services", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401


def test_the_token_of_an_inactive_user_is_refused(client, user):
    token = create_token("reader")
    user.is_active = False
    user.save()
    assert client.get("/api/v1/services", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_a_browser_session_reads(client, user):
    assert client.login(username="reader", password="pw-reader-1")
    assert client.get("/api/v1/services").status_code == 200


def test_public_read_opens_reads_but_not_writes(client, settings):
    settings.PUBLIC_READ = True
    assert client.get("/api/v1/services").status_code == 200
    request = RequestFactory().post("/api/v1/slos", data={})
    from django.contrib.auth.models import AnonymousUser

    request.user = AnonymousUser()
    with pytest.raises(Unauthorized):
        authenticate(request)


def test_a_write_method_on_a_read_endpoint_is_405(client, user):
    token = create_token("reader")
    response = client.post("/api/v1/services", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 405 and "GET" in response["Allow"]


def test_the_command_names_a_missing_user():
    with pytest.raises(CommandError, match="no user 'nobody'"):
        call_command("create_api_token", "nobody")


def test_a_token_made_in_the_admin_is_shown_once_and_works(client):
    User.objects.create_superuser("admin", "admin@example.com", "pw-admin-1")
    reader = User.objects.create_user("someone")
    assert client.login(username="admin", password="pw-admin-1")
    response = client.post("/admin/dashboards/apitoken/add/", {"user": reader.pk, "name": "ci"}, follow=True)
    assert response.status_code == 200
    shown = [str(message) for message in response.context["messages"]]
    token = next(word for message in shown for word in message.split() if word.startswith("sl_"))
    client.logout()
    assert client.get("/api/v1/services", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    assert ApiToken.objects.get(name="ci").user == reader

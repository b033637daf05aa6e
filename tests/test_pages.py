"""The dashboard pages as HTTP sees them: login, the shared window, CSP, static plotly.js."""

import os

import pytest

from tests.shop import store_checkouts

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shop():
    prefix = f"page-{os.urandom(3).hex()}"
    ids = store_checkouts(prefix)
    return {"front": f"{prefix}-frontend", "pay": f"{prefix}-payment", "ids": ids}


def test_pages_need_a_login(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    login = client.get("/login/")
    assert login.status_code == 200 and b'name="password"' in login.content


def test_every_response_forbids_inline_script(client):
    policy = client.get("/login/")["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]


def test_plotly_is_served_from_the_installed_package(client):
    response = client.get("/static/plotly/plotly.min.js")
    assert response.status_code == 200
    assert b"plotly" in b"".join(response.streaming_content)[:2000].lower()


def test_services_overview_lists_unhealthy_services_first(logged_in, shop):
    response = logged_in.get("/", {"range": "1h"})
    assert response.status_code == 200
    html = response.content.decode()
    assert html.index(shop["pay"]) < html.index(shop["front"])  # payment fails 3 of 8: first
    rows = {row["service"]: row for row in response.context["rows"]}
    assert rows[shop["pay"]]["state"] == "failing" and rows[shop["pay"]]["error_pct"] == "37.50 %"
    assert rows[shop["front"]]["state"] == "ok" and rows[shop["front"]]["requests"] == 8
    assert "<polyline" in html


def test_a_bad_window_parameter_is_a_400_naming_it(logged_in):
    for query, name in (({"range": "3y"}, "range"), ({"start": "2026-11-21T10:00"}, "end"),
                        ({"start": "soon", "end": "later"}, "start")):
        response = logged_in.get("/", query)
        assert response.status_code == 400 and f"{name}:" in response.content.decode()


def test_the_window_is_kept_in_the_links(logged_in, shop):
    html = logged_in.get("/", {"range": "6h", "env": "prod"}).content.decode()
    assert "range=6h&amp;env=prod" in html

"""What every API view shares: authentication, parameter errors, JSON out.

    @api_view()                 # reads: session, bearer token, or SIGHTLINE_PUBLIC_READ
    def services(request): ...  # returns a dict/list (JSON 200) or an HttpResponse

    @api_view(methods=("GET", "POST"))  # POST etc. always need a session or a token

A view raises BadParameter(name, message) for a bad query parameter (400 naming it) and
NotFound(message) for a missing object (404). The envelope of an error is the v1 one,
{"error": {"status", "message", "parameter"?}}, or Jaeger's for views under /api/ that
are Jaeger's, {"data": null, "total": 0, "limit": 0, "offset": 0, "errors": [{"code", "msg"}]}.
"""

import datetime as dt
import decimal
import functools
import json
import math

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from dashboards.models import ApiToken, hash_token

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class ApiError(Exception):
    status = 400

    def __init__(self, message, parameter=None):
        super().__init__(message)
        self.message, self.parameter = message, parameter


class BadParameter(ApiError):
    def __init__(self, parameter, message):
        super().__init__(f"{parameter}: {message}", parameter)


class NotFound(ApiError):
    status = 404


class Unauthorized(ApiError):
    status = 401


def v1_error(status, message, parameter=None):
    error = {"status": status, "message": message}
    if parameter:
        error["parameter"] = parameter
    return JsonResponse({"error": error}, status=status)


def jaeger_error(status, message, parameter=None):
    return JsonResponse({"data": None, "total": 0, "limit": 0, "offset": 0,
                         "errors": [{"code": status, "msg": message}]}, status=status)


def _bearer_user(request):
    """The user of a valid bearer token; None without an Authorization header."""
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <API token>'")
    row = ApiToken.objects.select_related("user").filter(token_hash=hash_token(token.strip())).first()
    if row is None or not row.user.is_active:
        raise Unauthorized("the API token is not valid")
    now = timezone.now()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:  # one write a minute at most
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
    return row.user


def _csrf_failure(request):
    """A session-authenticated write needs Django's CSRF token, as a form would."""
    return CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})


def authenticate(request):
    """Set request.user from a bearer token or the session; raise Unauthorized when neither
    allows this request. A bad token is refused even where anonymous reads are open."""
    token_user = _bearer_user(request)
    if token_user is not None:
        request.user = token_user
        return "token"
    if getattr(request, "user", AnonymousUser()).is_authenticated:
        return "session"
    if settings.PUBLIC_READ and request.method in SAFE_METHODS:
        return "public"
    raise Unauthorized("authentication required: log in, or send 'Authorization: Bearer <API token>' "
                       "(create one with `manage.py create_api_token USERNAME`)")


def rfc3339(moment):
    """An aware datetime as RFC 3339 in UTC with a Z, to the microsecond when it has one."""
    text = moment.astimezone(dt.timezone.utc).isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def _json_default(value):
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _finite(value):
    """JSON has no NaN or Infinity: they go out as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def json_response(data, status=200):
    try:
        body = json.dumps(data, default=_json_default, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere: walk the data only then
        body = json.dumps(_finite(data), default=_json_default, ensure_ascii=False, allow_nan=False)
    return HttpResponse(body, status=status, content_type="application/json")


def api_view(methods=("GET",), error=v1_error):
    """Wrap a view: method check, authentication, ApiError -> JSON error, result -> JSON."""
    allowed = tuple(methods) + (("HEAD",) if "GET" in methods else ())

    def decorate(view):
        @csrf_exempt  # token requests carry no cookie; session writes are checked below
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in allowed:
                response = error(405, f"method {request.method} not allowed; use {', '.join(methods)}")
                response["Allow"] = ", ".join(allowed)
                return response
            try:
                how = authenticate(request)
                if how == "session" and request.method not in SAFE_METHODS:
                    failure = _csrf_failure(request)
                    if failure is not None:
                        return error(403, "CSRF check failed: send the csrftoken cookie's value as X-CSRFToken")
                result = view(request, *args, **kwargs)
            except ApiError as exc:
                response = error(exc.status, exc.message, exc.parameter)
                if exc.status == 401:
                    response["WWW-Authenticate"] = 'Bearer realm="sightline"'
                return response
            return result if isinstance(result, HttpResponse) else json_response(result)

        return wrapper

    return decorate

"""What the web side stores: API tokens (SLOs, channels and alerts come with their issue)."""

import hashlib
import secrets

from django.conf import settings
from django.db import models

TOKEN_PREFIX = "sl_"


def hash_token(token: str) -> str:
    """Tokens carry 256 random bits, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token():
    """(token in clear, its hash, its prefix): the clear token is shown once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token), token[:10]


class ApiTokenManager(models.Manager):
    def issue(self, user, name=""):
        """Create a token for user; return (row, the token in clear)."""
        token, token_hash, prefix = new_token()
        return self.create(user=user, name=name, token_hash=token_hash, prefix=prefix), token


class ApiToken(models.Model):
    """A bearer token for the JSON and Jaeger APIs, acting as its user. Stored hashed."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=16, editable=False, help_text="The token's first characters, to tell tokens apart.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenManager()

    class Meta:
        db_table = "sightline_api_token"
        verbose_name = "API token"

    def __str__(self):
        return f"{self.prefix}… ({self.user})"

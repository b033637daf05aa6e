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


# --- SLOs and alerting --------------------------------------------------------------------


class Channel(models.Model):
    """Where alerts go: an Alertmanager-format webhook, a Slack incoming webhook, or e-mail."""

    WEBHOOK, SLACK, EMAIL = "webhook", "slack", "email"
    TYPES = [(WEBHOOK, "Webhook (Alertmanager format)"), (SLACK, "Slack incoming webhook"), (EMAIL, "E-mail")]

    name = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=10, choices=TYPES)
    url = models.URLField(max_length=2000, blank=True, default="")
    to = models.JSONField(default=list, blank=True)  # e-mail addresses
    created_at = models.DateTimeField(auto_now_add=True)
    # circuit breaker: after consecutive failures the channel rests until open_until
    consecutive_failures = models.IntegerField(default=0)
    open_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "sightline_channel"
        ordering = ["name"]

    def __str__(self):
        return self.name


class SLO(models.Model):
    """A service level objective: an SLI over a rolling window, an objective, burn-rate alerts.

    The SLI is read from the rollups: a whole service (its entry requests), one operation
    of it, or one edge parent -> child. availability = share of requests without error;
    latency = share of requests faster than threshold_ms.
    """

    AVAILABILITY, LATENCY = "availability", "latency"
    SLI_TYPES = [(AVAILABILITY, "Availability"), (LATENCY, "Latency")]

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    service = models.TextField()
    operation = models.TextField(null=True, blank=True)
    edge_parent = models.TextField(null=True, blank=True)
    edge_child = models.TextField(null=True, blank=True)
    sli_type = models.CharField(max_length=20, choices=SLI_TYPES, default=AVAILABILITY)
    threshold_ms = models.FloatField(null=True, blank=True)
    objective = models.FloatField()  # e.g. 0.999
    window_days = models.IntegerField(default=30)
    # [{"severity": "page"|"ticket", "long": "1h", "short": "5m", "burn_rate": 14.4}, ...];
    # empty = the SRE-workbook defaults scaled to the window (dashboards.slos.windows)
    conditions = models.JSONField(default=list, blank=True)
    channels = models.ManyToManyField(Channel, blank=True, related_name="slos")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # the last evaluation
    evaluated_at = models.DateTimeField(null=True, blank=True)
    sli = models.FloatField(null=True, blank=True)
    budget_remaining = models.FloatField(null=True, blank=True)
    burn_rates = models.JSONField(default=dict, blank=True)  # window label -> burn rate (null: no traffic)
    state = models.CharField(max_length=10, default="ok")  # ok | ticket | page

    class Meta:
        db_table = "sightline_slo"
        ordering = ["name"]
        verbose_name = "SLO"

    def __str__(self):
        return self.name


class Alert(models.Model):
    """One firing of one severity of an SLO, until it resolves; the history is kept."""

    FIRING, RESOLVED = "firing", "resolved"

    slo = models.ForeignKey(SLO, on_delete=models.CASCADE, related_name="alerts")
    severity = models.CharField(max_length=10)  # page | ticket
    state = models.CharField(max_length=10, default=FIRING)
    started_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    calm_since = models.DateTimeField(null=True, blank=True)  # conditions false since: the hold before resolving
    burn_rates = models.JSONField(default=dict)
    budget_remaining = models.FloatField(null=True, blank=True)
    summary = models.TextField(default="")
    details = models.JSONField(default=dict)  # top contributors, exemplar traces

    class Meta:
        db_table = "sightline_alert"
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["slo", "severity", "state"], name="sightline_alert_open")]

    def __str__(self):
        return f"{self.slo} {self.severity} {self.state}"


class Delivery(models.Model):
    """One notification to one channel (an alert's firing or resolution, or a test), with its
    attempts: the delivery log."""

    PENDING, SENT, FAILED = "pending", "sent", "failed"

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, null=True, blank=True, related_name="deliveries")
    kind = models.CharField(max_length=10)  # firing | resolved | test
    status = models.CharField(max_length=10, default=PENDING)
    attempts = models.IntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    response_status = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "sightline_delivery"
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"

    def __str__(self):
        return f"{self.kind} -> {self.channel}"

import datetime as dt

from django import forms
from django.contrib import admin, messages

from dashboards.models import SLO, Alert, ApiToken, Channel, Delivery, new_token
from dashboards.slos import windows


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "user", "created_at", "last_used_at")
    list_filter = ("user",)
    search_fields = ("name", "prefix", "user__username")
    fields = ("user", "name", "prefix", "created_at", "last_used_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")

    def save_model(self, request, obj, form, change):
        if not change:  # a new token: shown once here, only its hash is kept
            token, obj.token_hash, obj.prefix = new_token()
            messages.warning(request, f"The new API token is {token} — copy it now, it is not shown again.")
        super().save_model(request, obj, form, change)


# --- SLOs and alerting --------------------------------------------------------------------


class SLOAdminForm(forms.ModelForm):
    class Meta:
        model = SLO
        fields = "__all__"

    def clean_objective(self):
        objective = self.cleaned_data["objective"]
        if not 0 < objective < 1:
            raise forms.ValidationError("A ratio between 0 and 1, e.g. 0.999 for 99.9 %.")
        return objective

    def clean_window_days(self):
        days = self.cleaned_data["window_days"]
        if not 1 <= days <= 365:
            raise forms.ValidationError("From 1 to 365 days.")
        return days

    def clean(self):
        data = super().clean()
        try:
            windows.conditions_from(data.get("conditions") or [], dt.timedelta(days=data.get("window_days") or 30))
        except ValueError as exc:
            self.add_error("conditions", str(exc))
        if data.get("sli_type") == SLO.LATENCY and not data.get("threshold_ms"):
            self.add_error("threshold_ms", "A latency SLI needs its threshold in milliseconds.")
        if bool(data.get("edge_parent")) != bool(data.get("edge_child")):
            self.add_error("edge_child", "An edge needs both its caller and its callee.")
        return data


@admin.register(SLO)
class SLOAdmin(admin.ModelAdmin):
    form = SLOAdminForm
    list_display = ("name", "service", "operation", "sli_type", "objective", "window_days", "state",
                    "budget_remaining", "evaluated_at")
    list_filter = ("state", "sli_type", "window_days")
    search_fields = ("name", "service", "operation", "edge_parent", "edge_child", "description")
    filter_horizontal = ("channels",)
    readonly_fields = ("evaluated_at", "sli", "budget_remaining", "burn_rates", "state", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description")}),
        ("What the SLI reads", {"fields": ("service", "operation", "edge_parent", "edge_child", "sli_type",
                                           "threshold_ms")}),
        ("Objective and alerts", {"fields": ("objective", "window_days", "conditions", "channels"),
                                  "description": "objective as a ratio (0.999); conditions: a list of "
                                                 '{"severity": "page", "long": "1h", "short": "5m", '
                                                 '"burn_rate": 14.4}, empty for the defaults.'}),
        ("Last evaluation", {"fields": readonly_fields}),
    )


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    list_display = ("name", "type", "consecutive_failures", "open_until", "created_at")
    list_filter = ("type",)
    search_fields = ("name", "url")
    readonly_fields = ("created_at",)


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    fields = ("channel", "kind", "status", "attempts", "response_status", "last_error", "created_at", "sent_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    """Alerts are made by the evaluation: read-only here but for deleting old history."""

    list_display = ("slo", "severity", "state", "started_at", "resolved_at", "budget_remaining")
    list_filter = ("state", "severity")
    search_fields = ("slo__name", "slo__service", "summary")
    date_hierarchy = "started_at"
    list_select_related = ("slo",)
    readonly_fields = ("slo", "severity", "state", "started_at", "resolved_at", "calm_since", "burn_rates",
                       "budget_remaining", "summary", "details")
    inlines = [DeliveryInline]

    def has_add_permission(self, request):
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    """The delivery log: read-only."""

    list_display = ("created_at", "channel", "kind", "alert", "status", "attempts", "response_status", "sent_at")
    list_filter = ("status", "kind", "channel")
    search_fields = ("channel__name", "last_error", "alert__slo__name")
    date_hierarchy = "created_at"
    list_select_related = ("channel", "alert__slo")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

from django.contrib import admin, messages

from dashboards.models import ApiToken, new_token


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

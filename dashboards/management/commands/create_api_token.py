from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from dashboards.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it (it is stored hashed and cannot be shown again)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the token is for, shown in the admin")

    def handle(self, username, name, **options):
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user {username!r}; create one with `manage.py createsuperuser`") from None
        if not user.is_active:
            raise CommandError(f"user {username!r} is not active")
        _, token = ApiToken.objects.issue(user, name=name)
        self.stdout.write(token)

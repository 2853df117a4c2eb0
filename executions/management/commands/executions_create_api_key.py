from django.core.management.base import BaseCommand, CommandError
from rest_framework_api_key.models import APIKey

NAME_MAX_LENGTH = APIKey._meta.get_field("name").max_length


class Command(BaseCommand):
    help = (
        "Create an API key for a client and print it once: only its prefix and a hash are "
        "stored, so it cannot be shown again. Revoke keys in the admin."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", type=str, help="Who the key is for (free text, 50 chars max).")

    def handle(self, *args, name: str, **options):
        name = name.strip()
        if not name or len(name) > NAME_MAX_LENGTH:
            raise CommandError(f"Give a name of 1 to {NAME_MAX_LENGTH} characters.")
        api_key, key = APIKey.objects.create_key(name=name)
        self.stdout.write(f"Created API key '{api_key.name}' (prefix {api_key.prefix}).")
        self.stdout.write("Store it now; it is not shown again:")
        self.stdout.write(key)
        self.stdout.write(f"Use it as the header:  Authorization: Api-Key {key}")

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from core import env


class Command(BaseCommand):
    help = (
        "Prepare this installation: apply migrations, collect static files, create the admin "
        "user, load the signature library, install the periodic tasks (the reapers of executions "
        "and of evaluation and optimization runs, retention) and "
        "the default local model. Idempotent: "
        "a second run changes nothing and is quick."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--skip-model",
            action="store_true",
            help="Do not install the default local model (for smoke tests of the web side).",
        )

    def handle(self, *args, skip_model: bool, **options):
        self._step("Applying database migrations")
        call_command("migrate", interactive=False, verbosity=0)
        self._step("Collecting static files")
        call_command("collectstatic", interactive=False, verbosity=0)
        self._step("Ensuring an admin user")
        self._ensure_admin()
        for command, label in self._preparation_steps(skip_model=skip_model):
            self._step(label)
            call_command(command, stdout=self.stdout, stderr=self.stderr)
        self.stdout.write(self.style.SUCCESS("Ready."))

    def _preparation_steps(self, *, skip_model: bool) -> list[tuple[str, str]]:
        steps = [
            ("registry_load_library", "Loading the signature template library"),
            ("executions_install_schedules", "Installing the periodic tasks (reaper, retention)"),
            (
                "evaluations_install_schedules",
                "Installing the periodic task of evaluation and optimization runs (reaper)",
            ),
        ]
        if not skip_model:
            steps.append(("providers_install_default_model", "Installing the default local model"))
        return steps

    def _step(self, label: str) -> None:
        self.stdout.write(f"==> {label}")

    def _ensure_admin(self) -> None:
        user_model = get_user_model()
        if user_model.objects.filter(is_superuser=True).exists():
            self.stdout.write("    an admin user exists already; left as it is")
            return
        username = env.get("DJANGO_SUPERUSER_USERNAME", "admin")
        email = env.get("DJANGO_SUPERUSER_EMAIL", "admin@localhost")
        password = env.get("DJANGO_SUPERUSER_PASSWORD")
        generated = password is None
        if generated:
            password = secrets.token_urlsafe(18)
        user_model.objects.create_superuser(username=username, email=email, password=password)
        self.stdout.write(self.style.SUCCESS(f"    created admin user '{username}'"))
        if generated:
            # Shown once, here only: it is not stored anywhere but as a password hash.
            self.stdout.write(
                self.style.WARNING(
                    f"    generated password (shown once, write it down): {password}\n"
                    "    set DJANGO_SUPERUSER_PASSWORD to choose it yourself"
                )
            )
        if settings.DEBUG:
            self.stdout.write("    (development settings: DEBUG is on)")

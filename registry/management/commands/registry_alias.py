from django.core.management.base import BaseCommand, CommandError

from registry.exceptions import RegistryError
from registry.selectors import signature_get, signature_version_get
from registry.services.aliases import alias_remove, alias_set


class Command(BaseCommand):
    help = "Point an alias (e.g. `production`) of a signature at one of its versions."

    def add_arguments(self, parser):
        parser.add_argument("signature", help="Signature name, e.g. `qa`.")
        parser.add_argument("alias", help="Alias name, e.g. `production` or `staging`.")
        parser.add_argument("version", nargs="?", type=int, help="Version number to point at.")
        parser.add_argument("--remove", action="store_true", help="Remove the alias instead.")

    def handle(self, *args, signature: str, alias: str, version: int | None, remove: bool, **opts):
        if remove == (version is not None):
            raise CommandError("Give either a version number or --remove.")
        try:
            target = signature_get(name=signature)
            if remove:
                alias_remove(signature=target, name=alias)
                self.stdout.write(f"Removed {signature}@{alias}.")
                return
            result = alias_set(
                signature=target,
                name=alias,
                version=signature_version_get(signature=target, number=version),
            )
        except RegistryError as exc:
            raise CommandError(str(exc)) from exc
        if not result.changed:
            self.stdout.write(f"{signature}@{alias} already points at version {version}.")
        else:
            source = f"version {result.previous.number}" if result.previous else "nothing"
            self.stdout.write(f"Moved {signature}@{alias} from {source} to version {version}.")

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from registry.models import DatasetSplit
from registry.selectors import dataset_get, signature_get, signature_version_get
from registry.services.promotion import version_promote
from registry.specs import PRODUCTION


def _score(value: float | None) -> str:
    return "no score" if value is None else f"{value:.3f}"


class Command(BaseCommand):
    help = (
        "Promote a version to an alias (default `production`) only when its newest score on "
        "the dataset's current content, split and metric beats the current version's; --force "
        "moves it anyway (recorded as forced). Both scores are recorded."
    )

    def add_arguments(self, parser):
        parser.add_argument("signature", help="Signature name, e.g. `qa`.")
        parser.add_argument("version", type=int, help="The version number to promote.")
        parser.add_argument("--alias", default=PRODUCTION, help="The alias to move.")
        parser.add_argument(
            "--dataset", required=True, help="The dataset (by name) the scores must be on."
        )
        parser.add_argument(
            "--split", default=DatasetSplit.DEV, choices=DatasetSplit.values, help="Its split."
        )
        parser.add_argument("--metric", required=True, help="The metric the scores used.")
        parser.add_argument(
            "--force", action="store_true", help="Move the alias even when not better."
        )
        parser.add_argument("--reason", default="", help="Why, for the promotion's record.")

    def handle(self, *args, **options):
        try:
            signature = signature_get(name=options["signature"])
            version = signature_version_get(signature=signature, number=options["version"])
            dataset = dataset_get(signature=signature, name=options["dataset"])
            promotion = version_promote(
                signature=signature,
                version=version,
                alias=options["alias"],
                dataset_hash=dataset.content_hash,
                split=options["split"],
                metric=options["metric"],
                force=options["force"],
                reason=options["reason"],
            )
        except ApplicationError as exc:
            raise CommandError(str(exc)) from exc
        source = f"version {promotion.from_version.number}" if promotion.from_version else "nothing"
        forced = " (forced)" if promotion.forced else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"Promoted {signature.name}@{promotion.alias_name} from {source} "
                f"({_score(promotion.from_score)}) to version {version.number} "
                f"({_score(promotion.to_score)}){forced}."
            )
        )

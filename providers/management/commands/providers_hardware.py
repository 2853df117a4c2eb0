import json

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Print what local models run on: OS, CPU, MLX backend and versions, memory, BLAS."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args, **options) -> None:
        from providers.mlx.hardware import hardware_report

        report = hardware_report()
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True, default=str))
            return
        width = max(len(key) for key in report)
        for key, value in sorted(report.items()):
            self.stdout.write(f"{key.ljust(width)}  {value}")

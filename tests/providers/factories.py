import factory

from providers.models import Provider

SCRIPTED_ENGINE = "tests.providers.engines.ScriptedEngine"


class ProviderFactory(factory.django.DjangoModelFactory):
    """A valid `custom` provider on the tests' scripted engine (no model, no network)."""

    class Meta:
        model = Provider

    name = factory.Sequence(lambda n: f"provider-{n}")
    kind = Provider.Kind.CUSTOM
    model = "scripted"
    engine_path = SCRIPTED_ENGINE
    max_tokens = 32
    # The scripted engine answers the compact adapter's field pre-fills.
    adapter = Provider.Adapter.COMPACT

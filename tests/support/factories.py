"""One factory per model the tests create. Each creates through the project's own service (or
the model manager's own creation method), so a factory row obeys the same rules as a real one.

`registry.services` is imported inside the methods that need it, not at module level.
"""

import copy

import factory
from django.contrib.auth.models import Permission
from factory.django import DjangoModelFactory

from providers.models import Provider
from providers.services import provider_create
from tests.support.engines import SCRIPTED_ENGINE
from tests.support.specs import QA_SPEC

# Port 9 (discard) on the loopback: nothing listens, so a call fails at once with a transport
# error, which the breaker counts.
CLOSED_PORT_URL = "http://127.0.0.1:9/v1"


def _by_kind(kind: str, *, default="", **values):
    """The value of a provider field that depends on its kind."""
    return values.get(str(kind), default)


class ProviderFactory(DjangoModelFactory):
    """A provider, created by `providers.services.provider_create` (`full_clean` runs).

    The defaults make a valid provider of each kind: `custom` (the default) runs the scripted
    engine with the compact adapter; `openai` points at a closed port; `mlx` needs `model`, a
    model directory. The service sets `fallbacks=[...]` with `provider_set_fallbacks`.
    """

    class Meta:
        model = Provider

    name = factory.Sequence(lambda n: f"provider-{n}")
    kind = Provider.Kind.CUSTOM
    model = factory.LazyAttribute(
        lambda o: _by_kind(o.kind, custom="scripted", openai="test-model")
    )
    engine_path = factory.LazyAttribute(lambda o: _by_kind(o.kind, custom=SCRIPTED_ENGINE))
    base_url = factory.LazyAttribute(lambda o: _by_kind(o.kind, openai=CLOSED_PORT_URL))
    max_tokens = 32
    # The scripted engine answers the compact adapter's field pre-fills.
    adapter = factory.LazyAttribute(
        lambda o: _by_kind(o.kind, custom=Provider.Adapter.COMPACT, default=Provider.Adapter.AUTO)
    )

    @classmethod
    def _create(cls, model_class, *args, fallbacks=(), **kwargs) -> Provider:
        return provider_create(fallbacks=list(fallbacks), **kwargs)


class SignatureFactory(DjangoModelFactory):
    """A signature, created by `registry.services.signatures.signature_create`."""

    class Meta:
        model = "registry.Signature"

    name = factory.Sequence(lambda n: f"signature_{n}")
    description = ""

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        from registry.services.signatures import signature_create

        return signature_create(**kwargs)


class SignatureVersionFactory(DjangoModelFactory):
    """A version of a signature (the next number), created by
    `registry.services.versions.signature_version_create`; `spec` defaults to `QA_SPEC`."""

    class Meta:
        model = "registry.SignatureVersion"

    signature = factory.SubFactory(SignatureFactory)
    spec = factory.LazyFunction(lambda: copy.deepcopy(QA_SPEC))

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        from registry.services.versions import signature_version_create

        return signature_version_create(**kwargs).version


def permissions(perms) -> list[Permission]:
    """Permissions named `app_label.codename`, or by a codename unique across the apps."""
    found = []
    for perm in perms:
        app_label, _, codename = perm.rpartition(".")
        lookup = {"codename": codename}
        if app_label:
            lookup["content_type__app_label"] = app_label
        found.append(Permission.objects.get(**lookup))
    return found


class UserFactory(DjangoModelFactory):
    """A user with password `pw`, created by the manager's `create_user` (the password hashed);
    `perms=("app_label.codename", ...)` grants model permissions."""

    class Meta:
        model = "auth.User"

    username = factory.Sequence(lambda n: f"user-{n}")
    password = "pw"
    is_staff = False

    @classmethod
    def _create(cls, model_class, *args, perms=(), **kwargs):
        user = model_class._default_manager.create_user(*args, **kwargs)
        user.user_permissions.add(*permissions(perms))
        return user


class StaffUserFactory(UserFactory):
    """A staff user: may log in to the admin and use the API with a session."""

    username = factory.Sequence(lambda n: f"staff-{n}")
    is_staff = True


class APIKeyFactory(DjangoModelFactory):
    """An API key, created by `APIKey.objects.create_key`; the key itself, shown once, is
    `instance.raw_key` (only its hash is stored)."""

    class Meta:
        model = "rest_framework_api_key.APIKey"

    name = factory.Sequence(lambda n: f"client-{n}")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        api_key, raw_key = model_class.objects.create_key(**kwargs)
        api_key.raw_key = raw_key
        return api_key

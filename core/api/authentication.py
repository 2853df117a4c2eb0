"""API authentication: per-client API keys (hashed at rest) and browser sessions of staff users."""

from django.utils.functional import cached_property
from rest_framework import authentication, exceptions
from rest_framework_api_key.models import APIKey
from rest_framework_api_key.permissions import KeyParser


class APIKeyClient:
    """The principal of a request authenticated by an API key (`request.auth` is the key).

    It is not a Django user: it has no id and no permissions beyond the API's authentication.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, api_key: APIKey) -> None:
        self.api_key = api_key

    def __str__(self) -> str:
        return self.username

    @cached_property
    def username(self) -> str:
        return f"api-key:{self.api_key.prefix}"

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False

    def has_perms(self, perm_list, obj: object = None) -> bool:
        # As Django's User: true for no permission at all, so DRF's model permissions let a
        # key read (no permission needed) and never write.
        return all(self.has_perm(perm, obj) for perm in perm_list)


class APIKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key <key>`: only the key's prefix and a SHA-512 hash are stored."""

    key_parser = KeyParser
    keyword = KeyParser.keyword

    def authenticate(self, request):
        key = self.key_parser().get(request)
        if key is None:
            return None
        try:
            api_key = APIKey.objects.get_from_key(key)
        except APIKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.") from None
        if api_key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        return APIKeyClient(api_key), api_key

    def authenticate_header(self, request) -> str:
        # Makes unauthenticated requests a 401 with WWW-Authenticate rather than a 403.
        return self.keyword


class BearerKeyParser(KeyParser):
    keyword = "Bearer"

    def get(self, request) -> str | None:
        # Always the Authorization header: OpenAI clients know no other place for their key.
        return self.get_from_authorization(request)


class BearerAPIKeyAuthentication(APIKeyAuthentication):
    """`Authorization: Bearer <key>`, the same API keys as OpenAI clients send theirs, for the
    OpenAI-compatible routes: `dspy.LM` and the `openai` library cannot send `Api-Key`."""

    key_parser = BearerKeyParser
    keyword = BearerKeyParser.keyword


class StaffSessionAuthentication(authentication.SessionAuthentication):
    """The admin's session cookie (with CSRF checks), for staff users only."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, auth = result
        if not user.is_staff:
            return None
        return user, auth

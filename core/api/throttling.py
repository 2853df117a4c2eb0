"""Per-client rate limits, counted in the shared cache so they hold across every process."""

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from core.api.authentication import APIKeyClient


class ClientRateThrottle(SimpleRateThrottle):
    """One budget per API key (rate `api_key`) and one per staff user (rate `user`).

    Unauthenticated requests are not throttled here: they are refused before any work.
    """

    def __init__(self) -> None:
        # The scope depends on the request, so the rate is resolved in `allow_request`.
        pass

    def get_rate(self) -> str | None:
        # Read at call time (not at import, as DRF does), so settings changes take effect.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        if isinstance(request.user, APIKeyClient):
            self.scope = "api_key"
        elif request.user is not None and request.user.is_authenticated:
            self.scope = "user"
        else:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view) -> str:
        ident = request.auth.prefix if self.scope == "api_key" else str(request.user.pk)
        return self.cache_format % {"scope": self.scope, "ident": ident}

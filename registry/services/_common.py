"""The author handling every registry write shares: who may be recorded as the author."""

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser

MaybeUser = AbstractBaseUser | None


def user_or_none(user: MaybeUser) -> Any:
    # Only a stored user can be an author: not an anonymous user, not an API-key client.
    return user if getattr(user, "pk", None) is not None else None

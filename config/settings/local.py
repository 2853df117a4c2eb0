"""Developer machine and the quick start: debug on, SQLite unless DATABASE_URL says otherwise."""

from core import env

from .base import *  # noqa: F403

DEBUG = env.get_bool("DJANGO_DEBUG", True)

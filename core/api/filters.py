"""Query filters shared by the list endpoints."""

from datetime import UTC

import django_filters


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 date-time, compared in UTC.

    ISO 8601 allows offsets PostgreSQL refuses (beyond +-15:59, such as `-16:00`); converted to
    UTC first, every valid date-time is a valid bound.
    """

    def filter(self, qs, value):
        return super().filter(qs, value.astimezone(UTC) if value else value)

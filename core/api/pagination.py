"""Pagination of every list endpoint: `limit` (default `PAGE_SIZE`, at most `MAX_PAGE_SIZE`)
and `offset`, both checked so that no value reaches the database as an out-of-range number."""

from rest_framework import exceptions, pagination

MAX_PAGE_SIZE = 500
# Beyond any table this service keeps, and well inside PostgreSQL's bigint.
MAX_OFFSET = 10**12


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    max_limit = MAX_PAGE_SIZE

    def get_limit(self, request):
        self._check(request, self.limit_query_param, low=1, high=None)
        return super().get_limit(request)

    def get_offset(self, request):
        self._check(request, self.offset_query_param, low=0, high=MAX_OFFSET)
        return super().get_offset(request)

    def _check(self, request, name: str, *, low: int, high: int | None) -> None:
        raw = request.query_params.get(name)
        if raw is None:
            return
        bound = f" and at most {high}" if high is not None else ""
        message = f"`{name}` must be a whole number of at least {low}{bound}."
        try:
            value = int(raw)
        except ValueError:
            raise exceptions.ValidationError({name: [message]}) from None
        if value < low or (high is not None and value > high):
            raise exceptions.ValidationError({name: [message]})

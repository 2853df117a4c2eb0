"""Pagination of the list endpoints, every number checked so that none reaches the database as
an out-of-range value.

Most lists page by `limit` (default `PAGE_SIZE`, at most `MAX_PAGE_SIZE`) and `offset`
(`LimitOffsetPagination`). A list that grows without bound pages by position instead
(`KeysetPagination`): each page starts after the last row of the one before, so every page
costs the same however deep it is, and no page counts the rows.
"""

import datetime
import decimal
import uuid
from functools import reduce
from operator import or_
from typing import Any

from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q, QuerySet
from rest_framework import exceptions, pagination
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.utils.urls import replace_query_param

MAX_PAGE_SIZE = 500
# Beyond any table this service keeps, and well inside PostgreSQL's bigint.
MAX_OFFSET = 10**12


def _whole_number(request, name: str, *, low: int, high: int | None) -> int | None:
    """The query parameter `name` as a whole number of at least `low` (and at most `high`),
    None when absent; anything else is a 400 naming the parameter."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    bound = f" and at most {high}" if high is not None else ""
    message = f"`{name}` must be a whole number of at least {low}{bound}."
    try:
        value = int(raw)
    except ValueError:
        raise exceptions.ValidationError({name: [message]}) from None
    if value < low or (high is not None and value > high):
        raise exceptions.ValidationError({name: [message]})
    return value


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    max_limit = MAX_PAGE_SIZE

    def get_limit(self, request):
        _whole_number(request, self.limit_query_param, low=1, high=None)
        return super().get_limit(request)

    def get_offset(self, request):
        _whole_number(request, self.offset_query_param, low=0, high=MAX_OFFSET)
        return super().get_offset(request)


def _invalid(name: str, message: str, code: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({name: [exceptions.ErrorDetail(message, code=code)]})


def _position_value(value: Any) -> Any:
    """A field's value as JSON keeps it exactly (microseconds included: DRF's and Django's
    JSON encoders cut datetimes to milliseconds, which would skip rows)."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    return value


class KeysetPagination(pagination.BasePagination):
    """Pages in the queryset's own order, each starting after the last row of the page before
    (keyset pagination): `next` and `previous` are links carrying an opaque `cursor`.

    A page costs an index scan from the cursor's position, the same on the first page and the
    thousandth, and the answer has no `count`: a `COUNT(*)` over a filtered list costs as
    much as reading every matching row, on every page. Rows written while a client pages are
    neither skipped nor repeated, which offsets cannot promise.

    The order is the queryset's `order_by`: plain, non-nullable fields of the model, the last
    one unique, so that rows sharing a time keep one order and the cursor (which holds every
    field's value) places ties exactly. The cursor is signed: one the server did not write is
    a 400, never a 500.

    `page_size` (at least 1, `PAGE_SIZE` by default; above `MAX_PAGE_SIZE` it gives
    `MAX_PAGE_SIZE` rows) has the alias `limit`, the name clients of the offset pages know;
    `offset` is refused, so that a client still counting offsets fails at once instead of
    being served its first page forever.
    """

    cursor_query_param = "cursor"
    page_size_query_param = "page_size"
    page_size_alias = "limit"
    refused_query_param = "offset"
    max_page_size = MAX_PAGE_SIZE
    signing_salt = "core.api.pagination.KeysetPagination"

    def paginate_queryset(self, queryset: QuerySet, request, view=None) -> list:
        self.request = request
        self.has_next = self.has_previous = False
        self.next_position = self.previous_position = None
        if self.refused_query_param in request.query_params:
            raise _invalid(
                self.refused_query_param,
                "This list pages by cursor, not by offset: follow the `next` link.",
                "offset_unsupported",
            )
        page_size = self.get_page_size(request)
        fields = self._ordering_fields(queryset)
        cursor = self._cursor(request, fields)
        backwards = cursor is not None and cursor[1]
        if cursor is not None:
            queryset = queryset.filter(self._after(fields, cursor[0], backwards=backwards))
        if backwards:
            queryset = queryset.reverse()
        rows = list(queryset[: page_size + 1])
        more = len(rows) > page_size
        rows = rows[:page_size]
        if backwards:
            rows.reverse()
        if rows:
            # Going forward, there was a page before unless this is the first; going back,
            # the page this cursor came from is after this one.
            self.has_next = backwards or more
            self.has_previous = more if backwards else cursor is not None
            self.next_position = self._position(rows[-1], fields)
            self.previous_position = self._position(rows[0], fields)
        return rows

    def get_page_size(self, request) -> int:
        for name in (self.page_size_query_param, self.page_size_alias):
            value = _whole_number(request, name, low=1, high=None)
            if value is not None:
                return min(value, self.max_page_size)
        return api_settings.PAGE_SIZE

    def get_next_link(self) -> str | None:
        return self._link(self.next_position, backwards=False) if self.has_next else None

    def get_previous_link(self) -> str | None:
        return self._link(self.previous_position, backwards=True) if self.has_previous else None

    def get_paginated_response(self, data) -> Response:
        return Response(
            {
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict) -> dict:
        link = {"type": "string", "nullable": True, "format": "uri"}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": link
                | {
                    "description": "The next page (older rows); null on the last page.",
                    "example": "https://toolkit.example.org/api/v1/executions?cursor=eyJ2Ijpb...",
                },
                "previous": link
                | {"description": "The page before (newer rows); null on the first page."},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "Where the page starts: the `cursor` of a `next` or `previous` "
                "link, as the server wrote it. Absent: the first page.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Rows per page (default {api_settings.PAGE_SIZE}; a value "
                f"above {self.max_page_size} gives {self.max_page_size}).",
                "schema": {"type": "integer", "minimum": 1},
            },
            {
                "name": self.page_size_alias,
                "required": False,
                "in": "query",
                "description": f"Alias of `{self.page_size_query_param}`, which wins when "
                "both are given.",
                "schema": {"type": "integer", "minimum": 1},
            },
        ]

    # The order and the cursor ---------------------------------------------------------------

    def _ordering_fields(self, queryset: QuerySet) -> list[tuple[Any, bool]]:
        """The model fields of the queryset's order, each with whether it is descending."""
        opts = queryset.model._meta
        ordering = queryset.query.order_by or (
            opts.ordering if queryset.query.default_ordering else ()
        )
        fields = []
        for item in ordering:
            if not isinstance(item, str) or "__" in item or item.lstrip("-") in ("", "?"):
                raise ImproperlyConfigured(f"Keyset pagination cannot order by {item!r}.")
            name = item.lstrip("-")
            field = opts.pk if name == "pk" else opts.get_field(name)
            if not field.concrete or field.null:
                raise ImproperlyConfigured(f"Keyset pagination needs non-null fields: {name}.")
            fields.append((field, item.startswith("-")))
        if not fields or not fields[-1][0].unique:
            raise ImproperlyConfigured("Keyset pagination needs an order ending in a unique field.")
        return fields

    def _after(self, fields, position: list, *, backwards: bool) -> Q:
        """The rows after `position` in the order (before it when going `backwards`)."""
        ties = []
        for index, (field, descending) in enumerate(fields):
            lookup = "lt" if descending != backwards else "gt"
            equal = {
                f.attname: value
                for (f, _), value in zip(fields[:index], position[:index], strict=True)
            }
            ties.append(Q(**equal, **{f"{field.attname}__{lookup}": position[index]}))
        # The first field's bound on its own as well: it is what lets an index on the order
        # start at the position instead of filtering every row before it.
        field, descending = fields[0]
        bound = "lte" if descending != backwards else "gte"
        return Q(**{f"{field.attname}__{bound}": position[0]}) & reduce(or_, ties)

    def _position(self, row, fields) -> list:
        return [_position_value(getattr(row, field.attname)) for field, _ in fields]

    def _link(self, position: list | None, *, backwards: bool) -> str:
        url = self.request.build_absolute_uri()
        token = self._signer().sign_object({"p": position, "b": backwards})
        return replace_query_param(url, self.cursor_query_param, token)

    def _signer(self) -> signing.Signer:
        # Signed, not encrypted: a cursor holds a time and an id of a row its client saw.
        return signing.Signer(salt=self.signing_salt)

    def _cursor(self, request, fields) -> tuple[list, bool] | None:
        raw = request.query_params.get(self.cursor_query_param)
        if raw is None:
            return None
        invalid = _invalid(
            self.cursor_query_param,
            "Not a cursor of this list: use the `next` or `previous` link as given.",
            "invalid_cursor",
        )
        try:
            payload = self._signer().unsign_object(raw)
        except signing.BadSignature:
            raise invalid from None
        try:
            values, backwards = payload["p"], payload["b"]
            if not isinstance(backwards, bool):
                raise invalid
            position = [
                field.to_python(value) for (field, _), value in zip(fields, values, strict=True)
            ]
        except (DjangoValidationError, KeyError, TypeError, ValueError):
            # Signed by this server, yet not a position in this order (the list's order
            # changed since): the client starts again from the first page.
            raise invalid from None
        return position, backwards

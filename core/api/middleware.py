"""Middleware for `/api/`: one body-size limit for every endpoint, and JSON error pages."""

from django.conf import settings
from django.http import JsonResponse
from rest_framework.response import Response

from core.api.errors import error_body

API_PREFIX = "/api/"

# Django's own answers (an unknown URL, a bug, a request refused before any view) by status.
_DJANGO_ERRORS = {
    400: ("bad_request", "The request is malformed."),
    403: ("permission_denied", "You do not have permission to perform this action."),
    404: ("not_found", "No API endpoint at this URL."),
    405: ("method_not_allowed", "This method is not allowed here."),
    413: ("payload_too_large", "The request body is too large."),
    500: ("internal_error", "The server failed to answer this request; the error was logged."),
}


class ApiErrorsMiddleware:
    """Under `/api/`, Django's own error pages (HTML, and under DEBUG the debug page with the
    settings) are replaced by the error shape; DRF's responses and the guard's already have it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code < 400
            or isinstance(response, Response | JsonResponse)
            or not request.path_info.startswith(API_PREFIX)
        ):
            return response
        code, message = _DJANGO_ERRORS.get(
            response.status_code, ("error", "The request could not be answered.")
        )
        return JsonResponse(error_body(code, message), status=response.status_code)


class ApiRequestGuardMiddleware:
    """Refuses, before any view runs, the `/api/` requests no view could answer safely:

    - a declared body over `API_MAX_BODY_BYTES` (413), before authentication or parsing reads a
      byte of it; the declared length is all there is to check, since Django's request stream
      never reads past it and DRF ignores a body sent without one;
    - a NUL character in the path (404: no object has such a name) or in the query string (400),
      which PostgreSQL would refuse in any lookup.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info.startswith(API_PREFIX):
            refusal = _refusal(request)
            if refusal is not None:
                return refusal
        return self.get_response(request)


def _refusal(request) -> JsonResponse | None:
    limit = settings.API_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return JsonResponse(
            error_body(
                "payload_too_large", f"The request body is larger than the limit of {limit} bytes."
            ),
            status=413,
        )
    if "\x00" in request.path_info:
        return JsonResponse(error_body("not_found", "Nothing exists at this path."), status=404)
    if any(
        "\x00" in key or any("\x00" in value for value in values)
        for key, values in request.GET.lists()
    ):
        return JsonResponse(
            error_body("invalid_request", "Query parameters must not contain NUL characters."),
            status=400,
        )
    return None

"""The API reads JSON bodies only (`DEFAULT_PARSER_CLASSES`); size is the middleware's."""

from rest_framework import exceptions, parsers


class JSONParser(parsers.JSONParser):
    """DRF's strict JSON parser, with nesting too deep for Python's parser a 400, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(
                "JSON parse error - the body is nested too deeply."
            ) from None

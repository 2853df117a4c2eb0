"""Reading the API's one error shape in tests: `{"code", "message", "errors"}`."""

from typing import Any


def api_error(response, status: int) -> dict[str, Any]:
    """The error body of `response`, checked to have the one shape and the `status`."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) == {"code", "message", "errors"}, body
    return body


def error_messages(response, *path: str | int) -> list[str]:
    """The messages of the field at `path` in the response's `errors` (nested keys and list
    indexes, as the request was nested)."""
    node: Any = response.json()["errors"]
    for key in path:
        node = node[key]
    return [item["message"] for item in node]

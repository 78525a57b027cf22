"""The error answers an operation can give, declared in its OpenAPI document, so that a client (and the API
fuzzer) finds every status code it may meet there: `{"detail": ...}`, a sentence or, for invalid input,
one entry per problem."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError

# `detail` is a sentence, or (invalid input) one entry per problem with its location: FastAPI's shape.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["loc", "msg", "type"],
                        "properties": {
                            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                    },
                },
            ]
        }
    },
}


# The header of a 429 or 503 that says when to try again.
RETRY_AFTER: dict[str, Any] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def problem(description: str) -> dict[str, Any]:
    """One error answer for an operation's `responses`: what it means, and the body it carries."""
    return {"description": description, "content": {"application/json": {"schema": PROBLEM_SCHEMA}}}


def invalid(
    loc: tuple[str | int, ...], message: str, kind: str = "value_error", **extra: Any
) -> RequestValidationError:
    """Invalid input found by an endpoint itself (not by its models): a 422 with one entry, in FastAPI's shape."""
    return RequestValidationError([{"loc": loc, "msg": message, "type": kind, **extra}])


# What any operation may answer, whatever it does: the app's middleware sees every request.
EVERY_OPERATION: dict[int, dict[str, Any]] = {
    413: problem("the request body is larger than 1 MiB"),
    422: problem("invalid input (a parameter, the body, or an X-Correlation-ID / X-Request-ID header)"),
}
# What an operation that needs a bearer token may answer besides.
WITH_A_TOKEN: dict[int, dict[str, Any]] = {
    401: problem("no bearer token, or not a valid one"),
    403: problem("the token may not do this (a scope it lacks, or another user's data)"),
    503: problem("the users service cannot verify the token now; try again after Retry-After"),
}

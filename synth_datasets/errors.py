"""Typed errors: one root, one class per failure a user handles differently.

This module imports nothing else from the package, so every other module can import it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "AuthenticationError",
    "ConfigurationError",
    "RateLimitError",
    "ResponseFormatError",
    "ServerError",
    "SynthError",
    "ValidationError",
    "status_error_class",
]


class SynthError(Exception):
    """Root of every error this library raises on purpose; ``seed_indices`` is set by the expansion.

    ``args`` is ``(message,)`` and the rest in ``__dict__``: default pickling carries it whole.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.request_id = request_id
        self.body = body
        self.seed_indices: list[int] | None = None

    def __str__(self) -> str:
        return self.message


class ConfigurationError(SynthError, ValueError):
    """Found before anything was sent; ``option`` names the keyword at fault, for the command
    line to name its own flag or variable instead (``cli.in_cli_words``)."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class APIStatusError(SynthError):
    """The server answered with an error status; ``next_step`` is what the user can do."""

    next_step = ""


class AuthenticationError(APIStatusError):
    """401 or 403: the token is missing, wrong or not allowed."""

    next_step = "check COLLINEAR_API_KEY (or api_key=) and the base URL"


class ValidationError(APIStatusError):
    """422: the server refused the request body; ``detail`` is its list of problems."""

    next_step = "the server refused the request body"

    def __init__(self, message: str, *, detail: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        if detail is None and isinstance(self.body, dict):
            detail = self.body.get("detail")
        self.detail = detail


class RateLimitError(APIStatusError):
    """429 that persisted through every retry."""

    next_step = "still rate limited after retries: lower max_concurrency or retry later"


class ServerError(APIStatusError):
    """5xx that persisted through every retry."""

    next_step = "the server kept failing after retries"


def status_error_class(status: int) -> type[APIStatusError]:
    if status in (401, 403):
        return AuthenticationError
    if status == 422:
        return ValidationError
    if status == 429:
        return RateLimitError
    return ServerError if status >= 500 else APIStatusError


class APIConnectionError(SynthError):
    """No usable answer: connection refused or dropped, or a timeout, after every retry."""


class ResponseFormatError(SynthError):
    """A successful status whose body is not the documented JSON array of items."""

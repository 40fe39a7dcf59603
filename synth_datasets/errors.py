"""Typed errors: one root, one class per failure a user handles differently.

This module imports nothing else from the package, so every other module can import it.
"""

from __future__ import annotations

import contextlib
from typing import Any, TypeVar

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "AuthenticationError",
    "ConfigurationError",
    "RateLimitError",
    "ResponseFormatError",
    "ServerError",
    "SynthError",
    "UsageError",
    "ValidationError",
    "scrub",
    "status_error_class",
]


class SynthError(Exception):
    """Root of every error this library raises on purpose; ``seed_indices`` is set by the expansion.

    ``args`` is ``(message,)`` and the rest in ``__dict__``: default pickling carries it whole.
    ``option``: the option the message tells to change, for the CLI to name its flag.
    """

    option: str | None = None

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
    """Found before anything was sent; ``option`` names the keyword at fault and ``also`` the
    other keywords the message names (those it tells to change instead), for the command line
    to name their flags instead (``guard.in_cli_words``)."""

    def __init__(
        self, message: str, *, option: str | None = None, also: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.option = option
        self.also = also


class UsageError(ConfigurationError):
    """A bad command line or input file, found before anything was sent: exit 2."""


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

    option = "max_concurrency"
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


_E = TypeVar("_E", bound=BaseException)


def scrub(exc: _E, *secrets: str | None) -> _E:
    """Mask ``secrets`` in ``exc`` and the exceptions it chains, in place: a server may quote
    back the credentials it was sent, in its message and in the body kept on the error."""
    masked = [s for s in secrets if s]

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for secret in masked:
                value = value.replace(secret, "***")
            return value
        if isinstance(value, (bytes, bytearray)):  # a body that is not UTF-8
            for secret in masked:
                value = bytes(value).replace(secret.encode("utf-8"), b"***")
            return value
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, tuple):
            return tuple(clean(v) for v in value)
        return value

    todo: list[BaseException | None] = [exc] if masked else []
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.args = clean(current.args)
        for name in ("message", "body", "detail", "server_message"):
            value = getattr(current, name, None)
            if isinstance(value, (str, bytes, bytearray, dict, list)):
                with contextlib.suppress(AttributeError):  # a read-only property
                    setattr(current, name, clean(value))
        todo += [current.__cause__, current.__context__]
    return exc

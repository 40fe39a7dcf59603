"""``OpenAIEngine``: the reference server answering from your own model, through any
OpenAI-compatible chat-completions server (vLLM, llama.cpp's server, Ollama, TGI).

Each example × multiplier is one chat completion: the request's prompt, the example as JSON and
the instruction to answer with one JSON object of the example's shape, with a ``response_format``
JSON schema derived from the example. A backend that refuses the schema is asked for
``json_object``, then for the instructions alone, and the engine keeps the first that worked. The
model's text is the item's ``generated`` as is, so the client parses it like any generation.
Backend failures become the endpoint's own (429 with the backend's Retry-After, 5xx, 504 on a
timeout), so a client retries them as it would Collinear's.

Plain aiohttp, not the ``openai`` package: aiohttp is already a dependency and the server's loop
is where the engine runs, and answering as the endpoint would needs the backend's raw status and
Retry-After, which the package turns into its own exceptions after its own retries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from ..config import announce_engine, is_loopback
from ..errors import ConfigurationError
from .engine import ITEM_FAULTS, Engine, EngineError
from .faults import Faults, _opt  # each field's metadata is its --engine-* flag

if TYPE_CHECKING:
    import aiohttp

__all__ = ["OPENAI_ENGINE", "OpenAIEngine", "example_schema"]

OPENAI_ENGINE = "openai-compatible"
logger = logging.getLogger("synth_datasets.testing")

# What is asked of the backend, best first; a 400 or 422 to one moves on to the next.
_FORMATS = ("json_schema", "json_object", "instructions")
_INSTRUCTION = (
    "Write one new example. Answer with a single JSON object of exactly the example's shape "
    "(the same keys, nesting and value types) and nothing else."
)
# Backend statuses the endpoint passes on as they are (the client retries them); other 5xx: 502.
_PASSED_ON = frozenset({429, 500, 502, 503, 504})


def example_schema(value: Any) -> dict[str, Any]:
    """A JSON schema of ``value``'s shape: objects with its keys (all required, no others),
    arrays of its elements' schemas, its leaves' types."""
    if isinstance(value, dict):
        return {
            "type": "object",
            "properties": {key: example_schema(item) for key, item in value.items()},
            "required": list(value),
            "additionalProperties": False,
        }
    if isinstance(value, list):
        schemas = {json.dumps(s, sort_keys=True): s for s in map(example_schema, value)}
        if not schemas:
            return {"type": "array"}
        items = (
            next(iter(schemas.values())) if len(schemas) == 1 else {"anyOf": [*schemas.values()]}
        )
        return {"type": "array", "items": items}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    return {"type": "string"} if isinstance(value, str) else {"type": "null"}


def _refuse(name: str, expected: str, value: object) -> NoReturn:
    raise ConfigurationError(f"{name} must be {expected}, got {value!r}", option=name)


@dataclasses.dataclass
class OpenAIEngine(Engine):
    """Generations from your own model behind an OpenAI-compatible ``/chat/completions``.

    ``ReferenceServer(engine=OpenAIEngine(base_url="http://127.0.0.1:8000/v1", model="M"))``.
    The API key is read from the environment variable ``api_key_env`` (none sent if it is unset)
    and appears in no repr, log or error. The server checks, when it starts, that the backend
    answers and (where it lists its models) serves ``model``.
    """

    base_url: str = dataclasses.field(
        metadata={"help": "the OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"}
    )
    model: str = dataclasses.field(
        metadata={"help": "the model name it serves, e.g. Qwen/Qwen2.5-7B-Instruct"}
    )
    api_key_env: str = _opt(
        "OPENAI_API_KEY", "environment variable holding its API key (none sent when unset)"
    )
    max_concurrency: int = _opt(8, "chat completions in flight at most", type=int)
    timeout: float = _opt(300.0, "seconds one chat completion may take", type=float)

    def __post_init__(self) -> None:
        """Refuse bad values when built, before any server starts or anything is sent."""
        parts = urlsplit(self.base_url) if isinstance(self.base_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            _refuse("base_url", "an http(s) URL such as http://127.0.0.1:8000/v1", self.base_url)
        if "@" in parts.netloc:  # not echoed: what precedes the "@" is a credential
            raise ConfigurationError(
                "base_url must not carry credentials; put the API key in the environment "
                "(api_key_env)",
                option="base_url",
            )
        if not isinstance(self.model, str) or not self.model.strip():
            _refuse("model", "a model name the server knows", self.model)
        if not isinstance(self.api_key_env, str) or not self.api_key_env.strip():
            _refuse("api_key_env", "the name of an environment variable", self.api_key_env)
        limit = self.max_concurrency
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            _refuse("max_concurrency", "an int >= 1", limit)
        timeout = self.timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            _refuse("timeout", "a number of seconds > 0", timeout)
        if not (math.isfinite(timeout) and timeout > 0):
            _refuse("timeout", "a number of seconds > 0", timeout)
        self._api_key = os.environ.get(self.api_key_env) or None  # no field: in no repr
        if self._api_key and parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            raise ConfigurationError(
                f"not sending ${self.api_key_env} over plain http to {parts.hostname}: use "
                "https, or name an unset variable with api_key_env if the server needs no key",
                option="api_key_env",
            )
        self._url = self.base_url.rstrip("/") + "/chat/completions"
        self._host = parts.netloc
        self._format = 0  # index into _FORMATS: what the backend accepted so far
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None

    @property
    def announce(self) -> str:
        return announce_engine(OPENAI_ENGINE, model=self.model, host=self._host)

    @property
    def description(self) -> str:
        return f"your own model {self.model} at {self._host} (an OpenAI-compatible server)"

    @property
    def model_id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.base_url}#{self.model}"))

    def requests_in_flight(self, generations: int) -> int | None:
        """One more request than it takes to fill ``max_concurrency`` completions."""
        return -(-self.max_concurrency // max(1, generations)) + 1

    def check_faults(self, faults: Faults) -> None:
        for name in ITEM_FAULTS:
            if getattr(faults, f"rate_{name}") > 0:
                raise ConfigurationError(
                    f"rate_{name} acts on the offline engine's items; OpenAIEngine passes the "
                    "model's answers on as they are",
                    option=f"rate_{name}",
                )
        if faults.shuffle:
            raise ConfigurationError(
                "shuffle acts on the offline engine's items only", option="shuffle"
            )

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    async def open(self) -> None:
        """One connection pool for the server's life, then the backend check."""
        import aiohttp

        self._slots = asyncio.Semaphore(self.max_concurrency)
        # trust_env=False: no ~/.netrc credentials are ever sent to the backend.
        self._session = aiohttp.ClientSession(trust_env=False)
        await self._check_backend()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _check_backend(self) -> None:
        """Refuse to start against a backend that does not answer, refuses the key or lists its
        models without ``model``; one that has no ``/models`` is taken at its word."""
        import aiohttp

        assert self._session is not None
        url = self.base_url.rstrip("/") + "/models"
        where = f"the OpenAI-compatible server at {self.base_url}"
        try:
            async with self._session.get(
                url, headers=self._headers(), timeout=aiohttp.ClientTimeout(total=30)
            ) as response:
                status, text = response.status, await response.text(errors="replace")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ConfigurationError(
                f"{where} does not answer ({self._scrub(str(exc) or type(exc).__name__)})"
            ) from None
        if status in (401, 403):
            given = "the key in" if self._api_key else "no key: set"
            raise ConfigurationError(
                f"{where} answered {status} to GET /models ({given} ${self.api_key_env})"
            )
        if status != 200:
            return
        try:
            served = [str(m["id"]) for m in json.loads(text)["data"]]
        except (ValueError, KeyError, TypeError):
            return
        if served and self.model not in served and f"{self.model}:latest" not in served:
            shown = ", ".join(served[:10]) + (", ..." if len(served) > 10 else "")
            raise ConfigurationError(
                f"{where} does not serve model {self.model!r}; it serves: {shown}"
            )

    async def generate(self, body: Mapping[str, Any], faults: Faults) -> list[dict[str, Any]]:
        """``multiplier`` completions per example, at most ``max_concurrency`` at once (across
        all requests); the first failure fails the request and cancels its other completions."""
        multiplier = int(body["multiplier"])
        examples = list(body["examples"])
        tasks = [
            asyncio.ensure_future(self._complete(str(body["prompt"]), example))
            for example in examples
            for _ in range(multiplier)
        ]
        try:
            texts = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [
            {"original": examples[i // multiplier], "generated": text}
            for i, text in enumerate(texts)
        ]

    async def _complete(self, prompt: str, example: Any) -> str:
        """One generation's text, asking for the best format the backend accepts."""
        shown = json.dumps(example, ensure_ascii=False)
        messages = [{"role": "user", "content": f"{prompt}\n\nExample:\n{shown}\n\n{_INSTRUCTION}"}]
        level = self._format
        while True:
            payload: dict[str, Any] = {"model": self.model, "messages": messages}
            if _FORMATS[level] == "json_schema":
                payload["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "example", "schema": example_schema(example)},
                }
            elif _FORMATS[level] == "json_object":
                payload["response_format"] = {"type": "json_object"}
            status, text, retry_after = await self._post(payload)
            if status == 200:
                if level > self._format:
                    logger.warning("%s: asking for %s from now on", self._host, _FORMATS[level])
                    self._format = level
                return self._content(text)
            if status in (400, 422) and level + 1 < len(_FORMATS):
                level += 1  # the response_format refused, perhaps: ask without it
                continue
            raise self._failure(status, text, retry_after)

    async def _post(self, payload: dict[str, Any]) -> tuple[int, str, str | None]:
        """The backend's status, body and Retry-After; a timeout or no answer as EngineError."""
        import aiohttp

        assert self._session is not None and self._slots is not None, "the server opens it"
        async with self._slots:
            try:
                async with self._session.post(
                    self._url,
                    json=payload,
                    headers=self._headers(),
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as response:
                    text = await response.text(errors="replace")
                    return response.status, text, response.headers.get("Retry-After")
            except asyncio.TimeoutError:
                raise EngineError(
                    504, f"{self._host} gave no chat completion within {self.timeout:g} s"
                ) from None
            except aiohttp.ClientError as exc:
                detail = f"{self._host} did not answer: {type(exc).__name__}: {exc}"
                raise EngineError(502, self._scrub(detail)) from None

    def _content(self, text: str) -> str:
        """The first choice's message text ('' when the model wrote none)."""
        try:
            message = json.loads(text)["choices"][0]["message"]
            content = message.get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise EngineError(
                502, f"{self._host} answered 200 without a chat completion: {text[:200]!r}"
            ) from None
        return content if isinstance(content, str) else ""

    def _failure(self, status: int, text: str, retry_after: str | None) -> EngineError:
        """The endpoint's answer to a backend error: 429 and 5xx passed on (other 5xx as 502,
        a 408 as 504), any other 4xx as 400, which a client does not retry."""
        try:
            error = json.loads(text)
            inner = error.get("error", error) if isinstance(error, dict) else error
            message = inner.get("message", inner) if isinstance(inner, dict) else inner
        except ValueError:
            message = text
        detail = self._scrub(f"{self._host} answered {status}: {str(message)[:300]}")
        if status in _PASSED_ON:
            return EngineError(status, detail, retry_after)
        if status >= 500:
            return EngineError(502, detail)
        return EngineError(504 if status == 408 else 400, detail)

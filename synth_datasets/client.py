"""HTTP client for Collinear's ``POST /api/v1/synth_data/generate``.

Every failure (connection, timeout, 429/5xx, a body that breaks off or does not parse) spends one
``urllib3`` ``Retry`` budget; arguments are checked before anything is sent.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import HTTPError, MaxRetryError, ProtocolError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from ._version import __version__
from .config import (
    ENDPOINT_PATH,
    ENGINE_HEADER,
    ClientConfig,
    is_loopback,
    resolve_model_id,
    takes_options,
    validate_model_id,
    validate_multiplier,
    validate_prompt,
)
from .errors import (
    APIConnectionError,
    APIStatusError,
    ConfigurationError,
    ResponseFormatError,
    SynthError,
    scrub,
    status_error_class,
)
from .framing import parse_body
from .throttle import Throttle

__all__ = ["Generation", "SynthClient", "check_api_key", "identify_engine", "validate_examples"]

logger = logging.getLogger("synth_datasets.client")

# What _make_session builds: not pickled, built again in the receiving process. A throttle
# belongs to its process (its places and counts): a pickled client arrives without one.
_SESSION_STATE = frozenset(
    {"_session", "_template", "_retry", "_headers", "_timeout", "_pool", "_request_url", "throttle"}
)


@dataclass(frozen=True, slots=True)
class Generation:
    """One generated item: the example it came from and the raw ``generated`` text."""

    original: dict[str, Any]
    generated: str


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What one ``generate`` call cost: for the expansion's statistics."""

    request_id: str | None
    attempts: int
    elapsed: float
    body: bytes = b""  # the answer as received, for the request cache
    content_type: str | None = None


class _Retry(Retry):
    """``Retry`` whose ``Retry-After`` wait is capped (minutes of it would stall the expansion)
    and spread by the jitter, and whose waits go through the client's throttle."""

    # urllib3 >= 2.6 has a cap of its own, declared as int (and its default as Final); it only
    # compares and assigns it, so a fractional cap works there too. Set by the client.
    retry_after_max: float  # type: ignore[assignment]
    throttle: Throttle | None = None

    def parse_retry_after(self, retry_after: str) -> float:
        # Some servers send fractional seconds ("0.5"); urllib3 only reads integers or dates.
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return super().parse_retry_after(retry_after)

    def new(self, **kw: Any) -> _Retry:
        retry = super().new(**kw)  # urllib3 rebuilds from __init__ arguments: carry ours over
        retry.retry_after_max = self.retry_after_max
        retry.throttle = self.throttle
        return retry

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, self.retry_after_max)

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        """Wait before the next attempt: the ``Retry-After`` plus up to ``backoff_jitter``
        (requests refused together must not all come back at the same instant, to be refused
        together again), else the exponential backoff; without holding a throttle's place."""
        seconds = self.get_retry_after(response) if response is not None else None
        if seconds:
            seconds += random.random() * self.backoff_jitter
        else:
            seconds = self.get_backoff_time()
        if self.throttle is None:
            time.sleep(seconds)
        else:
            self.throttle.wait(response.status if response is not None else None, seconds)


def identify_engine(base_url: str, timeout: float = 5.0) -> str | None:
    """What a server on loopback says it is: the ``X-Synth-Engine`` header of its ``GET /health``
    (the bundled reference server names its offline engine there), else None.

    Asked once per run, before any request, so the provenance can tell rows of the offline
    engine from Collinear's, whichever port it serves on. Remote hosts are never asked (plain
    http goes to loopback only) and the token is never sent.
    """
    host = urlsplit(base_url).hostname
    if not host or not is_loopback(host):
        return None
    url = base_url.rstrip("/") + "/health"
    with requests.Session() as session:
        session.trust_env = False  # loopback: no proxy, no ~/.netrc
        try:
            with session.get(url, timeout=timeout, allow_redirects=False) as response:
                return response.headers.get(ENGINE_HEADER) or None
        except requests.RequestException:
            return None


def validate_examples(examples: object) -> list[dict[str, Any]]:
    if isinstance(examples, (str, bytes, Mapping)) or not isinstance(examples, Sequence):
        raise ConfigurationError(
            f"examples must be a non-empty list of JSON objects, got {type(examples).__name__}"
        )
    if not examples:
        raise ConfigurationError("examples must be a non-empty list of JSON objects, got []")
    for i, example in enumerate(examples):
        if not isinstance(example, Mapping):
            raise ConfigurationError(
                f"examples[{i}] must be a JSON object (dict), got {type(example).__name__}"
            )
    return [dict(e) for e in examples]


def check_api_key(api_key: str | None) -> str:
    """The token given, else ``COLLINEAR_API_KEY``, fit for a header; never quoted back."""
    key = (api_key if api_key is not None else os.environ.get("COLLINEAR_API_KEY") or "").strip()
    if not key:
        raise ConfigurationError(
            "no API key: set COLLINEAR_API_KEY or pass api_key=", option="api_key"
        )
    if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
        given = "COLLINEAR_API_KEY" if api_key is None else "api_key="
        raise ConfigurationError(
            f"the API key in {given} holds spaces, line breaks or non-ASCII characters"
        )
    return key


@takes_options(ClientConfig)
class SynthClient:
    """Client for the synth-data endpoint; ``pool_maxsize`` should match the requests in flight.

    A ``throttle`` (the expansion gives one) gates every attempt, retries included.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        pool_maxsize: int = 16,
        throttle: Throttle | None = None,
        **options: Any,
    ) -> None:
        self._api_key = check_api_key(api_key)
        self.config = ClientConfig(base_url=base_url, **options)
        assert self.config.base_url is not None
        self.base_url: str = self.config.base_url
        self.pool_maxsize = max(1, pool_maxsize)
        self.throttle = throttle
        self._session = self._make_session()

    @property
    def url(self) -> str:
        return self.base_url + ENDPOINT_PATH

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    def _make_session(self) -> requests.Session:
        # Immutable: each retry makes a new one from it.
        self._retry = _Retry(
            total=self.config.max_retries,
            other=0,
            allowed_methods=frozenset({"POST"}),
            status_forcelist=frozenset({429, 500, 502, 503, 504}),
            backoff_factor=self.config.backoff_factor,
            backoff_max=self.config.backoff_max,
            backoff_jitter=self.config.backoff_factor,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self._retry.retry_after_max = self.config.retry_after_max
        self._retry.throttle = self.throttle
        session = requests.Session()
        # The environment is read once here, not on every request (requests would re-scan it
        # per call, a measurable cost at thousands of requests); and never from ~/.netrc, whose
        # credentials would silently replace the Bearer token. Loopback never goes through a
        # proxy: its plain http would hand the token to the proxy in clear. Any other base URL
        # is https (config refuses the rest), which a proxy can only tunnel (CONNECT).
        session.trust_env = False
        if not is_loopback(urlsplit(self.base_url).hostname or ""):
            session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle:
            session.verify = ca_bundle
        adapter = HTTPAdapter(
            pool_connections=1, pool_maxsize=self.pool_maxsize, max_retries=self._retry
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update(
            {
                "Authorization": f"Bearer {self._api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"synth-datasets/{__version__}",
            }
        )
        # Every call is the same POST but for its body: prepared once, with its headers.
        self._template = session.prepare_request(requests.Request("POST", self.url, data=b"{}"))
        # All str (ours and requests' defaults), though requests types them as str | bytes.
        self._headers = cast(
            "dict[str, str]",
            {k: v for k, v in self._template.headers.items() if k.lower() != "content-length"},
        )
        connect, read = cast("tuple[float, float]", self.config.timeout)  # checked: a pair
        self._timeout = Timeout(connect=connect, read=read)
        # The adapter's own pool (proxy and TLS settings applied), called directly: requests'
        # per-call layers cost more CPU than the exchange, and urlopen reads the whole body, so
        # a body that breaks off is retried like every other failure. Built here, before any
        # thread can post: built lazily, a thread could see the pool before its request URL.
        self._pool: HTTPConnectionPool = adapter.get_connection_with_tls_context(
            self._template, verify=session.verify, proxies=session.proxies
        )
        self._request_url = adapter.request_url(self._template, session.proxies)
        return session

    def __repr__(self) -> str:
        return (
            f"SynthClient(base_url={self.base_url!r}, api_key='***', "
            f"max_retries={self.config.max_retries})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # num_proc workers receive the client through a pipe; the session is rebuilt there.
        return {k: v for k, v in self.__dict__.items() if k not in _SESSION_STATE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.throttle = None
        self._session = self._make_session()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> SynthClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(
        self,
        *,
        model_id: str | uuid.UUID | None = None,
        prompt: str,
        examples: Sequence[Mapping[str, Any]],
        multiplier: int,
    ) -> list[Generation]:
        """Send one request; ``model_id`` defaults to ``COLLINEAR_MODEL_ID``."""
        body = self.build_body(
            model_id=resolve_model_id(model_id),
            prompt=prompt,
            examples=examples,
            multiplier=multiplier,
        )
        items, _ = self.post(body)
        return [Generation(item["original"], item["generated"]) for item in items]

    @staticmethod
    def build_body(
        *, model_id: object, prompt: object, examples: object, multiplier: object
    ) -> bytes:
        """The exact request body, after every check: nothing invalid leaves the machine. It
        depends on no client, so the expansion can measure a body before it opens one."""
        body: dict[str, Any] = {
            "model_id": validate_model_id(model_id),
            "multiplier": validate_multiplier(multiplier),
            "examples": validate_examples(examples),
            "prompt": validate_prompt(prompt),
        }
        try:
            return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            for i, example in enumerate(body["examples"]):  # name the example at fault
                try:
                    json.dumps(example, allow_nan=False)
                except (TypeError, ValueError) as inner:
                    raise ConfigurationError(
                        f"examples[{i}] is not JSON-serialisable: {inner}"
                    ) from None
            raise ConfigurationError(f"request body is not JSON-serialisable: {exc}") from None

    def post(self, body: bytes) -> tuple[list[dict[str, Any]], CallInfo]:
        """Send a built body until an answer parses or the retries are spent.

        A server may quote the request back, Authorization included: errors mask the token.
        """
        try:
            return self._post(body)
        except SynthError as exc:
            raise scrub(exc, self._api_key) from None

    def _post(self, body: bytes) -> tuple[list[dict[str, Any]], CallInfo]:
        started = time.monotonic()
        retry: Retry = self._retry
        throttle = self.throttle
        while True:
            if throttle is not None:
                throttle.acquire()
            status: int | None = None
            try:
                response = self._pool.urlopen(
                    "POST",
                    self._request_url,
                    body=body,
                    headers=self._headers,
                    retries=retry,
                    redirect=False,
                    assert_same_host=False,
                    timeout=self._timeout,
                    preload_content=True,  # buffer the whole body before parsing
                    decode_content=True,
                )
                status = response.status
            except (HTTPError, OSError) as exc:  # urllib3 already spent the retries
                raise self._connection_error(exc) from None
            finally:
                if throttle is not None:
                    throttle.release(status)
            if response.retries is not None:
                retry = response.retries  # what is left of the budget, and every retry so far
            status = response.status
            headers = response.headers
            content = response.data
            request_id = (
                headers.get("x-request-id") or headers.get("request-id") or headers.get("cf-ray")
            )
            if status >= 300:  # a redirect is never followed: the token would go along
                raise _status_error(status, request_id, content, self.host, headers, len(body))
            try:
                items = parse_body(
                    content,
                    content_type=headers.get("Content-Type"),
                    status_code=status,
                    request_id=request_id,
                )
            except ResponseFormatError as exc:
                # A truncated or garbled answer: the same retry budget as the rest.
                message = scrub(exc, self._api_key).message  # also kept in the retry's own error
                try:
                    retry = retry.increment(
                        method="POST", url=ENDPOINT_PATH, error=ProtocolError(message)
                    )
                except MaxRetryError:
                    raise exc from None
                logger.debug("retrying after an unreadable body from %s: %s", self.host, message)
                retry.sleep()
                continue
            elapsed = time.monotonic() - started
            attempts = 1 + len(retry.history)  # each retry, of a status or of a body, is in it
            logger.debug(
                "POST %s -> %d, %d items, request id %s, %d attempt(s), %.3fs",
                self.host,
                status,
                len(items),
                request_id,
                attempts,
                elapsed,
            )
            return items, CallInfo(
                request_id, attempts, elapsed, content, headers.get("Content-Type")
            )

    def _connection_error(self, exc: BaseException) -> APIConnectionError:
        reason = exc.reason if isinstance(exc, MaxRetryError) and exc.reason else exc
        tail = f"after {self.config.max_retries} retries; check COLLINEAR_BASE_URL and your network"
        if isinstance(reason, ProtocolError):
            return APIConnectionError(
                f"the answer from {self.host} broke off while being read {tail}"
            )
        name = type(reason).__name__
        kind = "timed out" if "Timeout" in name else "failed"
        return APIConnectionError(f"connection to {self.host} {kind} ({name}) {tail}")


def _server_message(content: bytes) -> tuple[str, Any]:
    try:
        body = json.loads(content)
    except ValueError:
        text = content.decode("utf-8", "replace").strip().replace("\n", " ")
        return (text[:200] + ("…" if len(text) > 200 else "")), None
    if isinstance(body, dict):
        detail = body.get("detail", body.get("error", body.get("message")))
        if isinstance(detail, list):
            parts = []
            for d in detail[:5]:
                if isinstance(d, dict):
                    loc = ".".join(str(x) for x in d.get("loc", []))
                    parts.append(f"{loc}: {d.get('msg')}")
                else:
                    parts.append(str(d))
            return "; ".join(parts), body
        if detail is not None:
            return str(detail)[:300], body
    return json.dumps(body)[:200], body


def _status_error(
    status: int,
    request_id: str | None,
    content: bytes,
    host: str,
    headers: Mapping[str, str],
    body_size: int,
) -> APIStatusError:
    message, body = _server_message(content)
    if status < 400:
        message = f"redirected to {_location(headers.get('Location'))}, not followed"
    rid = f" (request id {request_id})" if request_id else ""
    head = f"{status} from {host}: {message}{rid}"
    cls = status_error_class(status)
    next_step = cls.next_step
    if status < 400:
        next_step = "the Authorization header would go along: check base_url"
    elif status == 413:
        next_step = f"set max_request_bytes below this body's {body_size} bytes"
    text = f"{head}; {next_step}" if next_step else head
    error = cls(text, status_code=status, request_id=request_id, body=body)
    if status < 400 or status == 413:  # else the class's own (RateLimitError: max_concurrency)
        error.option = "base_url" if status < 400 else "max_request_bytes"
    return error


def _location(value: str | None) -> str:
    """A redirect's target without what may be secret: credentials, query, fragment."""
    if not value:
        return "nowhere (no Location header)"
    parts = urlsplit(value)
    netloc = parts.netloc.rpartition("@")[2]
    hidden = "?…" if parts.query or parts.fragment else ""
    return f"{parts.scheme}://{netloc}{parts.path}{hidden}" if netloc else parts.path + hidden

"""Every option of the client and of an expansion, defined once.

A field holds the option's name, default, check and the line of help that ``help(expand)``,
``help(SynthMapper)``, ``help(expand_ray)``, ``help(SynthClient)`` and the command line show.
Entry points take the options as keywords (``takes_options`` gives them the fields as their
signature), build one frozen config that checks itself once, and hand it on. A config never holds
the token: it crosses into ``num_proc`` workers and Ray's task graph.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import ipaddress
import json
import os
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from ._version import __version__
from .errors import ConfigurationError

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "ENDPOINT_PATH",
    "ClientConfig",
    "ExpandConfig",
    "given_model_id",
    "option_fields",
    "resolve_model_id",
    "takes_options",
    "validate_base_url",
    "validate_model_id",
    "validate_multiplier",
    "validate_prompt",
]

DEFAULT_BASE_URL = "https://api.collinear.ai"
ENDPOINT_PATH = "/api/v1/synth_data/generate"
# Generation with a large multiplier is slow: the read timeout has to cover the whole answer.
DEFAULT_TIMEOUT = (10.0, 600.0)
# About a thousand output rows per map call: datasets' own cost per call is paid rarely, and far
# fewer calls than its 1000-task window (past which it keeps finished outputs in memory).
ROWS_PER_MAP_CALL = 1024

_F = TypeVar("_F", bound=Callable[..., Any])


# -- checks (each raises one line naming the option) ----------------------------------------------


def _fail(name: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"{name} {problem}", option=name)


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(name, f"must be an int >= {minimum}, got {value!r:.40}")
    return value


def _positive(name: str, value: Any) -> int:
    return _int(name, value, 1)


def _non_negative(name: str, value: Any) -> int:
    return _int(name, value, 0)


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise _fail(name, f"must be a number of seconds >= 0, got {value!r:.40}")
    return float(value)


def _timeout(name: str, value: Any) -> tuple[float, float]:
    pair = tuple(value) if isinstance(value, (tuple, list)) and len(value) == 2 else None
    seconds = [_seconds(name, v) for v in pair or (value,)]
    if 0 in seconds:
        raise _fail(name, "must be > 0 seconds")
    return (seconds[0], seconds[1]) if pair else (min(seconds[0], DEFAULT_TIMEOUT[0]), seconds[0])


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda name, value: None if value is None else check(name, value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(name, f"must be a non-empty string, got {value!r:.40}")
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(name, f"must be True or False, got {value!r:.40}")
    return value


def _on_error(name: str, value: Any) -> str:
    if value not in ("raise", "keep"):
        raise _fail(name, f"must be 'raise' or 'keep', got {value!r:.40}")
    return str(value)


def _columns(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _fail(name, f"must be a list of column names, got {type(value).__name__}")
    return tuple(value)


def _path(name: str, value: Any) -> str:
    try:
        return str(os.fspath(value))
    except TypeError:
        raise _fail(name, f"must be a path, got {type(value).__name__}") from None


def _features(name: str, value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise _fail(name, f"must be a datasets.Features or a dict, got {type(value).__name__}")
    from datasets import Features  # datasets is slow to import; only this option needs it here

    return Features(dict(value))


def validate_prompt(prompt: object) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise _fail("prompt", "must be a non-empty string")
    return prompt


def validate_multiplier(multiplier: object) -> int:
    return _int("multiplier", multiplier, 1)


def validate_model_id(model_id: object) -> str:
    """A UUID (``str`` or ``uuid.UUID``) as the canonical string the API expects."""
    if isinstance(model_id, uuid.UUID):
        return str(model_id)
    if isinstance(model_id, str):
        try:
            return str(uuid.UUID(model_id.strip()))
        except ValueError:
            pass
    raise _fail(
        "model_id",
        f"must be a UUID such as '123e4567-e89b-12d3-a456-426614174000', got {model_id!r:.60}",
    )


def given_model_id(model_id: object) -> object:
    """The argument, else ``COLLINEAR_MODEL_ID``, else None: what the user gave, unchecked."""
    return (os.environ.get("COLLINEAR_MODEL_ID") or None) if model_id is None else model_id


def resolve_model_id(model_id: object) -> str:
    """The argument, else ``COLLINEAR_MODEL_ID``; a clear error when neither is set."""
    model_id = given_model_id(model_id)
    if model_id is None:
        raise _fail("model_id", "is not set: pass model_id= or set COLLINEAR_MODEL_ID")
    return validate_model_id(model_id)


def validate_base_url(base_url: object) -> str:
    """The endpoint's root: ``https://``, or plain ``http://`` to loopback only.

    The endpoint path is appended to it, so a query or fragment would swallow the path; and
    credentials in it would replace the Bearer token and show in every message naming the URL:
    those are refused without being quoted back.
    """
    from urllib.parse import urlsplit

    if not isinstance(base_url, str):
        raise _fail("base_url", f"must be a URL string, got {type(base_url).__name__}")
    base_url = base_url.strip().rstrip("/")
    parts = urlsplit(base_url)
    if "@" in parts.netloc:
        raise _fail(
            "base_url",
            "holds credentials (user:password@host): refused, not sent; the API token is the "
            "only credential (COLLINEAR_API_KEY)",
        )
    if "?" in base_url or "#" in base_url:
        raise _fail(
            "base_url",
            "has a query (?) or fragment (#): give the endpoint root only, "
            f"such as {DEFAULT_BASE_URL}",
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(
            "base_url", f"must start with https:// (or http:// for loopback), got {base_url!r:.80}"
        )
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise _fail("base_url", "has an invalid port: it must be a number from 1 to 65535")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise _fail(
            "base_url",
            f"is plain http to {parts.hostname}: refusing to send the API token; use https://",
        )
    return base_url


def _base_url(name: str, value: Any) -> str:
    if value is not None:
        return validate_base_url(value)
    if not os.environ.get("COLLINEAR_BASE_URL"):
        return validate_base_url(DEFAULT_BASE_URL)
    try:
        return validate_base_url(os.environ["COLLINEAR_BASE_URL"])
    except ConfigurationError as exc:  # name where the URL came from
        raise ConfigurationError(str(exc).replace(name, "COLLINEAR_BASE_URL", 1)) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the fields -----------------------------------------------------------------------------------


def _option(
    default: Any,
    help: str,
    check: Callable[[str, Any], Any],
    *,
    flag: str | None = None,
    cli: bool = True,
    output: bool = False,
) -> Any:
    """A config field. ``flag``: the command line's spelling when it is not ``--<name>``;
    ``output``: the option changes the rows, so it is part of the map fingerprint."""
    metadata = {"help": help, "check": check, "flag": flag, "cli": cli, "output": output}
    return field(default=default, metadata=metadata)


def _required(help: str, check: Callable[[str, Any], Any], **kw: Any) -> Any:
    return _option(dataclasses.MISSING, help, check, output=True, **kw)


class _Checked:
    """Each field's check runs once, when the config is built (and on ``replace``)."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, f.metadata["check"](f.name, value))

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class ClientConfig(_Checked):
    """How the client reaches the endpoint (the token is not here: it never leaves the client)."""

    base_url: str | None = _option(
        None,
        "endpoint root (default COLLINEAR_BASE_URL, else https://api.collinear.ai)",
        _base_url,
        output=True,
    )
    timeout: float | tuple[float, float] = _option(
        DEFAULT_TIMEOUT, "seconds: read timeout, or (connect, read)", _timeout
    )
    max_retries: int = _option(5, "retries per request after the first attempt", _non_negative)
    backoff_factor: float = _option(
        0.5, "seconds: retries wait backoff_factor x 2, x 4, ... plus jitter", _seconds
    )
    backoff_max: float = _option(30.0, "seconds: the longest wait between retries", _seconds)
    retry_after_max: float = _option(
        120.0, "seconds: the longest Retry-After a server may ask for", _seconds
    )


@dataclass(frozen=True, kw_only=True)
class ExpandConfig(ClientConfig):
    """Everything an expansion needs but the token and the data."""

    prompt: str = _required(
        "instruction prompt sent with every request",
        lambda name, value: validate_prompt(value),
        cli=False,
    )
    multiplier: int = _required(
        "generations per seed row", lambda name, value: validate_multiplier(value)
    )
    model_id: str | None = _option(
        None,
        "model UUID (default COLLINEAR_MODEL_ID)",
        lambda name, value: resolve_model_id(value),
        output=True,
    )
    columns: Sequence[str] | None = _option(
        None,
        "columns to send (default all); the others pass through",
        _optional(_columns),
        output=True,
    )
    generated_features: Mapping[str, Any] | None = _option(
        None,
        "features of the generated columns (default those of the sent columns)",
        _optional(_features),
        cli=False,
        output=True,
    )
    request_size: int = _option(8, "examples per request", _positive, output=True)
    max_concurrency: int = _option(16, "requests in flight", _positive)
    keep_original: bool = _option(
        True, "keep the `original` column", _bool, flag="--no-original", output=True
    )
    on_error: str = _option(
        "raise",
        "raise: stop on a failed request; keep: keep one error row per seed",
        _on_error,
        output=True,
    )
    cache: bool = _option(True, "read and write the request cache", _bool, flag="--no-cache")
    cache_dir: str | None = _option(
        None, "request cache folder (default SYNTH_DATASETS_CACHE, ...)", _optional(_path)
    )
    run_id: str | None = _option(
        None, "ask for fresh samples: a new id misses the cache", _optional(_text), output=True
    )
    index_column: str | None = _option(
        None,
        "column of global row indices to use as source_index (neither sent nor kept)",
        _optional(_text),
        output=True,
    )
    max_request_bytes: int | None = _option(
        None,
        "cap on a request body; a row too large on its own is refused up front",
        _optional(_positive),
        output=True,
    )
    requests_per_map_batch: int | None = _option(
        None, "requests per map call (default: about 1024 output rows)", _optional(_positive)
    )

    @property
    def client(self) -> ClientConfig:
        return ClientConfig(**{f.name: getattr(self, f.name) for f in fields(ClientConfig)})

    @property
    def requests_per_call(self) -> int:
        """``requests_per_map_batch``, or as many as make about ``ROWS_PER_MAP_CALL`` rows."""
        if self.requests_per_map_batch is not None:
            return self.requests_per_map_batch
        return max(1, -(-ROWS_PER_MAP_CALL // (self.request_size * self.multiplier)))

    @property
    def map_batch_size(self) -> int:
        return self.request_size * self.requests_per_call

    def fingerprint(self, **extra: Any) -> str:
        """A key of everything that changes the rows (never the token), plus ``extra``."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["output"]}
        values.pop("generated_features")  # in the layout's features, passed by the caller
        text = json.dumps({"library": __version__, **values, **extra}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def provenance(self, layout: Any, source: Mapping[str, Any]) -> dict[str, Any]:
        """The generation config recorded with the data: the options that made the rows, the
        endpoint without credentials, the columns as planned; never the token."""
        import datetime
        from urllib.parse import urlsplit

        assert self.base_url is not None
        parts = urlsplit(self.base_url)
        port = f":{parts.port}" if parts.port else ""
        return {
            "library": "synth_datasets",
            "version": __version__,
            "endpoint": f"{parts.scheme}://{parts.hostname}{port}{ENDPOINT_PATH}",
            "endpoint_host": parts.hostname,
            "model_id": self.model_id,
            "prompt": self.prompt,
            "multiplier": self.multiplier,
            "request_size": self.request_size,
            "max_concurrency": self.max_concurrency,
            "columns": list(layout.columns),
            "generated_columns": list(layout.generated_features),
            "passthrough_columns": list(layout.passthrough),
            "keep_original": self.keep_original,
            "index_column": self.index_column,
            "on_error": self.on_error,
            "run_id": self.run_id,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": dict(source),
        }


def option_fields(config: type = ExpandConfig) -> list[dataclasses.Field[Any]]:
    """The config's fields, its own before those it inherits (the expansion's before the
    client's): the order help texts list them in."""
    return sorted(fields(config), key=lambda f: f.name not in config.__annotations__)


def takes_options(config: type, exclude: Sequence[str] = ()) -> Callable[[_F], _F]:
    """Give a function (or a class's constructor) taking ``**options`` the config's fields as
    keyword parameters.

    ``help()`` and ``inspect.signature`` then list every option with its default, and the
    docstring gains one line per option, so each is written once, here.
    """

    def decorate(obj: _F) -> _F:
        target: Any = obj
        if isinstance(obj, type):
            target = getattr(obj, "__new__" if "__new__" in vars(obj) else "__init__")
        signature = inspect.signature(target)
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        names = {p.name for p in own} | set(exclude)
        hints = typing.get_type_hints(config)
        added = [f for f in option_fields(config) if f.name not in names]
        target.__signature__ = signature.replace(
            parameters=[
                *own,
                *(
                    inspect.Parameter(
                        f.name,
                        inspect.Parameter.KEYWORD_ONLY,
                        default=(
                            inspect.Parameter.empty
                            if f.default is dataclasses.MISSING
                            else f.default
                        ),
                        annotation=hints.get(f.name, inspect.Parameter.empty),
                    )
                    for f in added
                ),
            ]
        )
        lines = "\n".join(f"    {f.name}: {f.metadata['help']}" for f in added)
        obj.__doc__ = (obj.__doc__ or "").rstrip() + f"\n\n    Options:\n{lines}\n"
        return obj

    return decorate

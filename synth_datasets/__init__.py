"""synth_datasets: expand a small Hugging Face dataset into a large synthetic one."""

from ._version import __version__
from .errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    ConfigurationError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    SynthError,
    ValidationError,
)

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
    "__version__",
]

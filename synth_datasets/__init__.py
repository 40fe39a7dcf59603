"""synth_datasets: expand a small Hugging Face dataset into a large synthetic one."""

from ._version import __version__
from .client import Generation, SynthClient
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
from .expand import expand, get_provenance
from .mapper import ExpansionStats, SynthMapper

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "AuthenticationError",
    "ConfigurationError",
    "ExpansionStats",
    "Generation",
    "RateLimitError",
    "ResponseFormatError",
    "ServerError",
    "SynthClient",
    "SynthError",
    "SynthMapper",
    "ValidationError",
    "__version__",
    "expand",
    "get_provenance",
]

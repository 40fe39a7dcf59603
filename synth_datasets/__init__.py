"""synth_datasets: expand a small Hugging Face dataset into a large synthetic one."""

from . import errors
from ._version import __version__
from .card import build_card
from .client import Generation, SynthClient
from .errors import *  # noqa: F403  (the whole error tree is public)
from .expand import expand
from .hub import PushResult, push_to_hub
from .mapper import ExpansionStats, SynthMapper
from .prep import (
    EvalSet,
    decontaminate,
    drop_duplicates,
    drop_errors,
    drop_lineage,
    mix_in_seeds,
    split_by_seed,
    to_messages,
)
from .provenance import get_provenance
from .report import QualityReport, quality_report

__all__ = [
    *errors.__all__,
    "EvalSet",
    "ExpansionStats",
    "Generation",
    "PushResult",
    "QualityReport",
    "SynthClient",
    "SynthMapper",
    "__version__",
    "build_card",
    "decontaminate",
    "drop_duplicates",
    "drop_errors",
    "drop_lineage",
    "expand",
    "get_provenance",
    "mix_in_seeds",
    "push_to_hub",
    "quality_report",
    "split_by_seed",
    "to_messages",
]

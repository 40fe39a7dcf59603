"""A reference server of Collinear's synth-data endpoint, on loopback, for tests and demos.

``ReferenceServer`` answers ``POST /api/v1/synth_data/generate`` as documented, so the client and
whole pipelines run over real HTTP without an account; its default engine is **not a language
model**, and ``OpenAIEngine`` answers from your own model behind an OpenAI-compatible server.
``Faults`` injects the failures a real service produces, randomly or in a scripted order.

Modules: ``faults``, ``engine`` (the ``Engine`` interface and the offline engine),
``openai_engine``, ``validation`` (from the shipped OpenAPI document), ``server`` and ``serve``
(the command). Only ``server`` imports aiohttp at import time (``openai_engine`` when it starts);
the names of ``server`` and ``validation`` load on first use, so the ``serve`` parser imports no
aiohttp or jsonschema.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .engine import Engine, EngineError, OfflineEngine
from .faults import Faults
from .openai_engine import OpenAIEngine
from .serve import PARSER_DESCRIPTION, add_serve_arguments, main, run_serve

if TYPE_CHECKING:
    from .server import ReferenceServer
    from .validation import GENERATE_PATH, MAX_GENERATIONS_PER_REQUEST

__all__ = [
    "GENERATE_PATH",
    "MAX_GENERATIONS_PER_REQUEST",
    "PARSER_DESCRIPTION",
    "Engine",
    "EngineError",
    "Faults",
    "OfflineEngine",
    "OpenAIEngine",
    "ReferenceServer",
    "add_serve_arguments",
    "main",
    "run_serve",
]

_LAZY = {
    "ReferenceServer": "server",
    "MAX_GENERATIONS_PER_REQUEST": "validation",
    "GENERATE_PATH": "validation",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)

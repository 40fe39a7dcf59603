"""A reference server of Collinear's synth-data endpoint, on loopback, for tests and demos.

``ReferenceServer`` answers ``POST /api/v1/synth_data/generate`` as documented, so the client and
whole pipelines run over real HTTP without an account; its engine is **not a language model**.
``Faults`` injects the failures a real service produces, randomly or in a scripted order.

Modules: ``faults``, ``engine`` (offline), ``validation`` (from the shipped OpenAPI document),
``server`` (the only one importing aiohttp) and ``serve`` (the command). The names of ``server``
and ``validation`` load on first use, so the ``serve`` parser imports no aiohttp or jsonschema.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .faults import Faults
from .serve import PARSER_DESCRIPTION, add_serve_arguments, main, run_serve

if TYPE_CHECKING:
    from .server import ReferenceServer
    from .validation import GENERATE_PATH, MAX_GENERATIONS_PER_REQUEST

__all__ = [
    "GENERATE_PATH",
    "MAX_GENERATIONS_PER_REQUEST",
    "PARSER_DESCRIPTION",
    "Faults",
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

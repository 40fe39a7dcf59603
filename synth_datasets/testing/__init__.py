"""A reference server of Collinear's synth-data endpoint, on loopback, for tests and demos.

``ReferenceServer`` implements ``POST /api/v1/synth_data/generate`` with the documented request,
response and error shapes, so the client, the ``ds.map`` adapter and whole pipelines can be
exercised over real HTTP without an account. Its engine is **not a language model**: it rewrites
each example's string leaves deterministically. ``Faults`` injects the failures a real service
produces, randomly with a seeded RNG or in a fixed order through ``Faults.script``.

Modules, one job each: ``faults`` (the ``Faults`` value), ``engine`` (the offline engine),
``validation`` (request checks derived from the shipped OpenAPI document), ``server`` (the
aiohttp application, the only module importing aiohttp) and ``serve`` (the command).
``ReferenceServer`` and the names of ``server`` and ``validation`` load on first use, so that
``synth-datasets`` builds its ``serve`` parser without importing aiohttp or jsonschema.
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
    """Import the module of a lazily exported name when it is first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)

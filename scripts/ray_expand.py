#!/usr/bin/env python
"""Expand a seed dataset on Ray Data: Hugging Face in, Ray actors in the middle, Hugging Face out.

    # no account, no cluster: a local Ray and the bundled reference server
    python scripts/ray_expand.py synth_datasets/data/sample_seeds.jsonl --local \\
        --prompt-file synth_datasets/data/sample_prompt.txt --columns conv_prefix,response \\
        --multiplier 4 --output out/ray-demo

    # an existing cluster; the token travels in the job's runtime_env, never in the task graph
    COLLINEAR_API_KEY=... COLLINEAR_MODEL_ID=... python scripts/ray_expand.py seeds.jsonl \\
        --address ray://head-node:10001 --prompt "..." --actors 8 --output out/big

Every node of the cluster needs this package with its ray extra (``pip install '.[ray]'`` in a
clone, or a wheel of it; or add it to the runtime_env, ``--runtime-pip``). The output folder is
the one ``synth-datasets expand --output`` writes: ``data/train-00000-of-00001.parquet`` (the
generation config in its schema), ``README.md`` (the dataset card) and ``synth_manifest.json``,
so ``synth-datasets push`` and ``load_dataset(folder)`` take it as it is.

Exit codes: 0 done, 2 usage or configuration error (nothing sent), 1 failure, 3 stopped at the
budget (--max-requests, --max-generations, shared by all actors: what was received is written).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from typing import Any

API_KEY_ENV = "COLLINEAR_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    from synth_datasets.flags import add_card_options, add_expand_arguments, add_output_arguments

    p = argparse.ArgumentParser(
        prog="ray_expand.py",
        description="Expand SOURCE (a .jsonl/.json/.csv/.parquet file, a save_to_disk folder or "
        "a Hub dataset id) on Ray Data: ray.data.Dataset in, actors sending the requests, "
        "a datasets.Dataset out, every row linked to its seed by source_index.",
    )
    add_expand_arguments(p, exclude=["index_column"])
    p.add_argument("--actors", type=int, default=2, help="Ray actors (expand_ray concurrency=)")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join, e.g. ray://head-node:10001 or auto (default: a local Ray)",
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray")
    p.add_argument(
        "--runtime-pip",
        action="append",
        default=[],
        metavar="SPEC",
        help="pip requirement to install on the workers through runtime_env (repeatable)",
    )
    add_output_arguments(p, help="write the data and the manifest to this folder", formats=False)
    p.add_argument("--show", type=int, default=3, help="print this many result rows")
    add_card_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from synth_datasets.guard import run_guarded

    return run_guarded("ray_expand.py", run, args, describe=one_line)


def one_line(exc: BaseException) -> str:
    """Ray's task errors carry the worker's traceback: keep our error's own line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("synth_datasets.errors.")]
    if ours:
        return ours[-1].removeprefix("synth_datasets.errors.")
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def run(args: argparse.Namespace) -> int:
    import ray

    from synth_datasets.cli import budget_exit, load_seeds, make_card, print_offline_notice
    from synth_datasets.client import check_api_key
    from synth_datasets.errors import UsageError
    from synth_datasets.flags import expand_options
    from synth_datasets.folder import MANIFEST, README, check_output, write_output
    from synth_datasets.ray import expand_ray, from_huggingface, to_huggingface

    if args.local and args.address:
        raise UsageError("--local serves on this machine's loopback: drop --address")
    if args.output is not None:
        check_output(args.output, overwrite=args.overwrite)
    ds, source = load_seeds(args)
    source["fingerprint"] = ds._fingerprint

    with ExitStack() as stack:
        options = expand_options(args, stack)
        token = check_api_key(options.pop("api_key", None))  # --local's, or the environment's

        # The token goes to every worker's environment through the job's runtime_env; it is
        # never an argument of a task or an actor, so it is not in Ray's task graph.
        runtime_env: dict[str, Any] = {"env_vars": {API_KEY_ENV: token}}
        if args.runtime_pip:
            runtime_env["pip"] = list(args.runtime_pip)
        init: dict[str, Any] = {"runtime_env": runtime_env, "log_to_driver": False}
        if args.address:
            init["address"] = args.address
        else:
            init.update(include_dashboard=False, num_cpus=args.num_cpus)
        ray.init(**init)
        stack.callback(ray.shutdown)
        ray.data.DataContext.get_current().enable_progress_bars = False

        started = time.monotonic()
        seeds = from_huggingface(ds)  # keeps the order of ds: source_index is ds's row index
        out = expand_ray(seeds, concurrency=args.actors, source=source, **options)
        result = to_huggingface(out)  # parquet in between; sorted by source_index
        elapsed = time.monotonic() - started

    print_offline_notice(result)
    errors = sum(1 for e in result["error"] if e is not None)
    linked = len({i for i in result["source_index"] if i is not None})
    print(
        f"expanded {len(ds)} seed rows into {len(result)} rows on {args.actors} Ray actor(s) in "
        f"{elapsed:.1f}s ({linked} seeds linked, {errors} rows with an error)"
    )
    for row in result.select(range(min(args.show, len(result)))):
        print(json.dumps(row, ensure_ascii=False, default=str)[:400])
    if args.output is not None:
        card = make_card(result, args.output, args, None)
        target = write_output(result, args.output, "parquet", card, overwrite=args.overwrite)
        print(f"wrote {len(result)} rows to {target}, the card to {README} and {MANIFEST}")
    return budget_exit("ray_expand.py", result)


if __name__ == "__main__":
    sys.exit(main())

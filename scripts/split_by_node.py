#!/usr/bin/env python
"""Split an expansion across machines with plain datasets: one shard per node, merged afterwards.

Each node runs the same command with its own ``--rank`` and writes its own output folder; any
machine then merges the folders. ``source_index`` stays the seed's index in the whole dataset:

    # on node r of n (here 2 nodes, run on each):
    python scripts/split_by_node.py expand seeds.jsonl --rank 0 --world-size 2 \\
        --prompt "..." --columns conv_prefix,response --output out/node-0
    python scripts/split_by_node.py expand seeds.jsonl --rank 1 --world-size 2 \\
        --prompt "..." --columns conv_prefix,response --output out/node-1
    # anywhere, once all nodes are done:
    python scripts/split_by_node.py merge out/node-0 out/node-1 --output out/merged

``--local`` uses the bundled reference server (each node its own; no account needed). A budget
(``--max-requests``, ``--max-generations``) is each node's own; a node that stops at it, and a
merge of its folder, exit 3 and record the data as partial.

The recipe (``expand_shard`` below): ``datasets.distributed.split_dataset_by_node`` gives each
node a contiguous slice, and ``expand`` numbers a slice's rows from 0. So a global index column is
added *before* the split and named as ``expand(..., index_column=...)``: it becomes
``source_index`` and is neither sent nor kept. Merging in rank order keeps the rows
grouped by ``source_index``. Requests are cut per shard: when every shard's length is a multiple
of ``--request-size`` (e.g. ``len(ds)`` divisible by ``world_size * request_size``) the request
bodies, hence the cache keys, are exactly those of a single-machine run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

GLOBAL_INDEX = "__seed_index"


def expand_shard(ds: Any, *, rank: int, world_size: int, **expand_kwargs: Any) -> Any:
    """Node ``rank``'s part of ``expand(ds, ...)``, with ``source_index`` global."""
    import numpy as np
    from datasets.distributed import split_dataset_by_node

    from synth_datasets import expand

    indexed = ds.add_column(GLOBAL_INDEX, np.arange(len(ds), dtype=np.int64))
    shard = split_dataset_by_node(indexed, rank=rank, world_size=world_size)
    return expand(shard, index_column=GLOBAL_INDEX, **expand_kwargs)


def build_parser() -> argparse.ArgumentParser:
    from synth_datasets.flags import add_expand_arguments, add_output_arguments

    p = argparse.ArgumentParser(
        prog="split_by_node.py",
        description="Expand one node's shard of a seed dataset (expand), or merge the nodes' "
        "output folders (merge).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("expand", help="expand this node's shard")
    e.add_argument("--rank", type=int, required=True, help="this node's rank, 0..world-size-1")
    e.add_argument("--world-size", type=int, required=True, help="number of nodes")
    add_output_arguments(e, help="this node's output folder", required=True, formats=False)
    add_expand_arguments(e, exclude=["index_column"])
    m = sub.add_parser("merge", help="concatenate the nodes' folders in rank order")
    m.add_argument("folders", nargs="+", type=Path, help="node output folders, rank 0 first")
    add_output_arguments(m, help="the merged folder", required=True, formats=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from synth_datasets.guard import run_guarded

    return run_guarded(
        "split_by_node.py", cmd_expand if args.command == "expand" else cmd_merge, args
    )


def cmd_expand(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from synth_datasets.cli import budget_exit, load_seeds
    from synth_datasets.errors import UsageError
    from synth_datasets.flags import expand_options
    from synth_datasets.folder import check_output, write_output

    if not 0 <= args.rank < args.world_size:
        raise UsageError(f"--rank must be in 0..{args.world_size - 1}, got {args.rank}")
    check_output(args.output, overwrite=args.overwrite, card=False)
    ds, _ = load_seeds(args)
    with ExitStack() as stack:
        options = expand_options(args, stack)
        out = expand_shard(ds, rank=args.rank, world_size=args.world_size, **options)
    target = write_output(out, args.output, "parquet", overwrite=args.overwrite)
    first, last = out["source_index"][0], out["source_index"][-1]
    print(f"node {args.rank}/{args.world_size}: {len(out)} rows (seeds {first}-{last}) -> {target}")
    return budget_exit("split_by_node.py", out)


def cmd_merge(args: argparse.Namespace) -> int:
    from datasets import concatenate_datasets

    from synth_datasets import get_provenance
    from synth_datasets.cli import budget_exit
    from synth_datasets.folder import check_output, load_result, write_output
    from synth_datasets.provenance import attach_provenance

    check_output(args.output, overwrite=args.overwrite, card=False)
    parts = [load_result(folder) for folder in args.folders]
    merged = concatenate_datasets(parts)
    recorded = [get_provenance(part) for part in parts]
    if recorded[0] is not None:
        provenance = {**recorded[0], "nodes": len(parts)}
        shards = [(p or {}).get("source", {}).get("num_rows") for p in recorded]
        source = dict(provenance.get("source") or {})
        # Each node recorded its own shard's size; the source is all of them.
        source["num_rows"] = sum(shards) if all(isinstance(n, int) for n in shards) else None
        provenance["source"] = source
        # Nodes that stopped at their budget: the merge misses what they did not send.
        partial = [p["partial"] for p in recorded if p and p.get("partial")]
        provenance["partial"] = None
        if partial:
            provenance["partial"] = {
                **partial[0],
                "requests_sent": None,  # counted per node
                "generations_sent": None,
                "requests_not_sent": sum(p["requests_not_sent"] for p in partial),
                "seed_rows_not_sent": sum(p["seed_rows_not_sent"] for p in partial),
            }
        attach_provenance(merged, provenance)
    index = [i for i in merged["source_index"] if i is not None]
    if index != sorted(index):
        print("split_by_node.py: warning: folders not in rank order", file=sys.stderr)
    target = write_output(merged, args.output, "parquet", overwrite=args.overwrite)
    print(f"merged {len(parts)} node folders: {len(merged)} rows -> {target}")
    return budget_exit("split_by_node.py", merged)


if __name__ == "__main__":
    sys.exit(main())

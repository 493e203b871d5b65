"""Mirage mining cost versus the number of training graphs: the training split repeated 1x, 4x and 16x,
mined at the same fractional support. Prints time (tree extraction + FP-growth) and peak memory per
scale, and their growth relative to the growth in graphs (1.0 = linear). Each scale runs in a fresh
process so that its peak RSS is its own.

    python benchmarks/mirage_scaling.py [--name NCI1] [--scales 1 4 16] [--depth 2] [--support 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(args: argparse.Namespace, scale: int) -> dict:
    from datamodules.graphs import TUDataModule
    from modules.mirage_mining import mine

    root = args.tu if Path(args.tu, args.name, "raw").is_dir() else None
    dm = TUDataModule(root=root, name=args.name)
    dm.setup()
    graphs = dm.train_set * scale
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = mine(
        graphs,
        depth=args.depth,
        support=args.support,
        num_node_labels=dm.num_features,
        num_edge_labels=dm.num_edge_labels,
    )
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {
        "dataset": args.name if root else "planted-motif (no TU data found)",
        "graphs": len(graphs),
        "nodes": sum(g.num_nodes for g in graphs),
        "extract_s": result.extraction_seconds,
        "mine_s": result.mining_seconds,
        "samples": sum(result.num_samples.values()),
        "peak_mb": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="NCI1")
    parser.add_argument("--tu", default=str(ROOT.parent / "shared" / "data" / "tu"))
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--support", type=float, default=0.1)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args, args.worker)))
        return
    rows = []
    for scale in args.scales:
        cmd = [sys.executable, __file__, "--worker", str(scale), *sys.argv[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"Mirage mining on {rows[0]['dataset']}, depth {args.depth}, support {args.support} of each class")
    print(
        f"{'graphs':>8s} {'nodes':>10s} {'extract s':>10s} {'mine s':>8s} {'total s':>8s} {'peak MB':>8s} "
        f"{'samples':>8s} {'time growth / size growth':>26s} {'memory growth / size growth':>28s}"
    )
    first = rows[0]
    for r in rows:
        size = r["graphs"] / first["graphs"]
        total, total0 = r["extract_s"] + r["mine_s"], first["extract_s"] + first["mine_s"]
        mem = max(r["peak_mb"], 1e-3) / max(first["peak_mb"], 1e-3)
        print(
            f"{r['graphs']:8d} {r['nodes']:10d} {r['extract_s']:10.2f} {r['mine_s']:8.2f} {total:8.2f} "
            f"{r['peak_mb']:8.1f} {r['samples']:8d} {total / total0 / size:26.2f} {mem / size:28.2f}"
        )


if __name__ == "__main__":
    main()

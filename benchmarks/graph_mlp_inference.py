"""Inference speed of the distilled MLP versus its GCN teacher, printed as ratios, with peak memory.

Two regimes, as GLNN measures them:
- full graph: logits for every node (the MLP reads features only; the GCN also propagates over edges,
  as one sparse CSR matmul per layer);
- a batch of target nodes: the MLP reads the targets' rows; the GCN must first gather their L-hop
  neighbourhood (k_hop_subgraph) and run on it, which is where GLNN's 146-273x speed-ups come from.
Cases: Cora with the zoo's networks (if the data is at --planetoid), and a generated graph with
--nodes nodes (default 1M) and average degree --degree (default 10), randomly initialised networks
of the same shape family. Peak memory is the growth of the process's peak RSS (CPU) or
torch.cuda.max_memory_allocated (GPU), measured for each model in a fresh subprocess.

    python benchmarks/graph_mlp_inference.py [--nodes 1000000] [--degree 10] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import time_call  # noqa: E402


def load_case(case: str, args: argparse.Namespace):
    from modules.graph_mlp import GNN, MLP

    if case == "cora":
        import zoo
        from datamodules.graphs import PlanetoidDataModule

        dm = PlanetoidDataModule(root=args.planetoid, name="Cora")
        dm.setup("test")
        data = next(iter(dm.test_dataloader()))
        return data.x, data.edge_index, zoo.load("gcn-cora"), zoo.load("ffg2m-cora-gcn-mlp")
    g = torch.Generator().manual_seed(0)
    n, f = args.nodes, args.features
    x = (torch.rand(n, f, generator=g) < 0.05).float()
    half = n * args.degree // 2
    src, dst = torch.randint(0, n, (half,), generator=g), torch.randint(0, n, (half,), generator=g)
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    kw = dict(in_channels=f, hidden_channels=256, out_channels=16, num_layers=3)
    return x, edge_index, GNN(**kw).eval(), MLP(**kw).eval()


def worker(case: str, model: str, args: argparse.Namespace) -> dict:
    """Runs in a fresh process: times one model and reports its peak memory growth."""
    from torch_geometric.utils import k_hop_subgraph, to_torch_csr_tensor

    x, edge_index, gcn, mlp = load_case(case, args)
    device = args.device
    x, edge_index = x.to(device), edge_index.to(device)
    # Full-graph GCN propagates with a sparse CSR adjacency (one spmm per layer, built once, untimed):
    # PyG's per-edge message tensors would need |E| x hidden floats (10 GB on the 1M-node graph).
    adj = to_torch_csr_tensor(edge_index, size=(x.size(0), x.size(0))) if model == "gcn" else None
    net = (gcn if model == "gcn" else mlp).to(device)
    targets = torch.randperm(x.size(0), generator=torch.Generator().manual_seed(1))[: args.batch].to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def full():
        with torch.no_grad():
            return net(x, adj) if model == "gcn" else net(x)

    def batch():
        with torch.no_grad():
            if model == "mlp":
                return net(x[targets])
            subset, sub_edges, mapping, _ = k_hop_subgraph(
                targets, net.init_args["num_layers"], edge_index, relabel_nodes=True, num_nodes=x.size(0)
            )
            return net(x[subset], sub_edges)[mapping]

    out = {"full_s": time_call(full, device, args.repeats), "batch_s": time_call(batch, device, args.repeats)}
    if device == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    out["nodes"], out["edges"] = x.size(0), edge_index.size(1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--degree", type=int, default=10)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1000, help="target nodes per batch in the batch regime")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--planetoid", default=str(ROOT.parent / "shared" / "data" / "planetoid"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args)))
        return
    cases = (["cora"] if Path(args.planetoid, "Cora", "raw").is_dir() else []) + ["generated"]
    print(f"device {args.device}, {torch.get_num_threads()} threads; median of {args.repeats} runs after a warm-up")
    header = (
        f"{'case':10s} {'model':4s} {'full graph':>12s} {'nodes/s':>12s} {f'{args.batch} targets':>14s} {'peak MB':>9s}"
    )
    print(header)
    for case in cases:
        res = {}
        for model in ("gcn", "mlp"):
            cmd = [sys.executable, __file__, "--worker", case, model, *sys.argv[1:]]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ, check=True)
            res[model] = json.loads(proc.stdout.strip().splitlines()[-1])
            r = res[model]
            print(
                f"{case:10s} {model:4s} {1000 * r['full_s']:10.1f}ms {r['nodes'] / r['full_s']:12.3g} "
                f"{1000 * r['batch_s']:12.2f}ms {r['peak_mb']:9.1f}"
            )
        g, m = res["gcn"], res["mlp"]
        print(
            f"{case:10s} ratio GCN/MLP: full graph {g['full_s'] / m['full_s']:.1f}x, "
            f"{args.batch} targets {g['batch_s'] / m['batch_s']:.1f}x, "
            f"peak memory {g['peak_mb'] / max(m['peak_mb'], 1e-3):.1f}x "
            f"({g['nodes']:,} nodes, {g['edges']:,} directed edges)"
        )


if __name__ == "__main__":
    main()

"""Planted-motif graph classification shaped like a TU dataset with categorical node labels (MUTAG, NCI1).

The generator is the embedded default of :class:`datamodules.graphs.TUDataModule`: a list of small graphs
with one-hot node labels, an undirected edge list and one graph label each, in the same tensors and dtypes
as ``torch_geometric.datasets.TUDataset`` returns, small and seeded, needing no download.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

__all__ = ["MOTIF_EDGES", "MOTIF_LABELS", "planted_motif_graphs"]

# Class -> node labels of the planted motif, in cycle order, and its edges between motif positions.
MOTIF_LABELS: dict[int, tuple[int, ...]] = {0: (0, 1, 2, 3), 1: (0, 1, 2)}
MOTIF_EDGES: dict[int, tuple[tuple[int, int], ...]] = {
    0: ((0, 1), (1, 2), (2, 3), (3, 0)),  # 4-cycle labelled 0-1-2-3
    1: ((0, 1), (1, 2), (2, 0)),  # triangle labelled 0, 1, 2
}


def planted_motif_graphs(
    num_graphs: int = 600,
    num_node_labels: int = 4,
    min_nodes: int = 15,
    max_nodes: int = 30,
    edge_prob: float = 0.15,
    seed: int = 0,
) -> list[Data]:
    """Sample a balanced two-class set of random graphs, each carrying a planted, labelled motif.

    Class labels are balanced (class sizes differ by at most one) and assigned in a random order. A graph
    has ``n`` nodes, ``n`` uniform in ``[min_nodes, max_nodes]``, with labels in ``[0, num_node_labels)``:
    four nodes carry labels 0, 1, 2, 3 and the other ``n - 4`` are uniform, whatever the class, so the label
    histogram has the same distribution in both classes and alone says nothing about the class. Class 1
    plants a triangle on the nodes labelled 0, 1, 2 of those four; class 0 plants a 4-cycle 0-1-2-3 on all
    four. The other nodes form the background, an Erdős–Rényi graph with edge probability ``edge_prob``
    (not necessarily connected), and the motif is attached to it by one or two random edges, each from a
    distinct motif node to a random background node. Node ids are shuffled, so the motif sits anywhere.
    Background triangles or 4-cycles may match the other class's motif by chance, as real data is noisy.

    Args:
        num_graphs: number of graphs, at least 2.
        num_node_labels: number of categorical node labels, at least 4 (the 4-cycle uses labels 0-3).
        min_nodes: fewest nodes in a graph, at least 5 (the 4-cycle plus one background node).
        max_nodes: most nodes in a graph, at least ``min_nodes``.
        edge_prob: probability of each background edge, in [0, 1].
        seed: seed of the numpy Generator used for every draw; the global RNG state is never touched.

    Returns:
        ``num_graphs`` graphs, each a ``Data`` with ``x`` float32 one-hot [n, num_node_labels], ``edge_index``
        int64 [2, 2M] holding both directions of every undirected edge, without self loops or duplicates,
        sorted by (source, target), ``y`` int64 [1] in {0, 1} and ``num_nodes``; no ``edge_attr``.
    """
    if num_graphs < 2:
        raise ValueError(f"num_graphs must be >= 2 (one graph per class at least), got {num_graphs}")
    if num_node_labels < 4:
        raise ValueError(f"num_node_labels must be >= 4 (the class-0 4-cycle uses labels 0-3), got {num_node_labels}")
    if min_nodes < 5:
        raise ValueError(f"min_nodes must be >= 5 (a 4-node motif plus one background node), got {min_nodes}")
    if max_nodes < min_nodes:
        raise ValueError(f"max_nodes must be >= min_nodes={min_nodes}, got {max_nodes}")
    if not 0.0 <= edge_prob <= 1.0:
        raise ValueError(f"edge_prob must be in [0, 1], got {edge_prob}")

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_graphs) % 2)
    return [_motif_graph(rng, int(c), num_node_labels, min_nodes, max_nodes, edge_prob) for c in labels]


def _motif_graph(
    rng: np.random.Generator, cls: int, num_node_labels: int, min_nodes: int, max_nodes: int, edge_prob: float
) -> Data:
    n = int(rng.integers(min_nodes, max_nodes + 1))
    # Before shuffling, nodes 0-3 carry labels 0-3 and the motif uses the first len(motif) of them.
    node_label = np.concatenate([np.arange(4), rng.integers(0, num_node_labels, size=n - 4)])
    motif_size = len(MOTIF_LABELS[cls])
    motif_edges = np.asarray(MOTIF_EDGES[cls], dtype=np.int64)

    background = np.arange(motif_size, n)
    b = background.size
    upper = np.triu(rng.random((b, b)) < edge_prob, k=1)
    bu, bv = np.nonzero(upper)
    num_attach = int(rng.integers(1, 3))
    attach_u = rng.choice(motif_size, size=num_attach, replace=False)
    attach_v = rng.choice(background, size=num_attach)

    u = np.concatenate([motif_edges[:, 0], background[bu], attach_u])
    v = np.concatenate([motif_edges[:, 1], background[bv], attach_v])

    perm = rng.permutation(n)  # old id -> new id
    u, v = perm[u], perm[v]
    x_label = np.empty(n, dtype=np.int64)
    x_label[perm] = node_label

    src = np.concatenate([u, v])
    dst = np.concatenate([v, u])
    order = np.lexsort((dst, src))
    edge_index = np.stack([src[order], dst[order]]).astype(np.int64)
    x = np.zeros((n, num_node_labels), dtype=np.float32)
    x[np.arange(n), x_label] = 1.0
    return Data(
        x=torch.from_numpy(x),
        edge_index=torch.from_numpy(edge_index),
        y=torch.tensor([cls], dtype=torch.long),
        num_nodes=n,
    )

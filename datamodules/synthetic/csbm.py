"""Contextual stochastic block model shaped like a Planetoid citation graph (Cora).

The generator is the embedded default of :class:`datamodules.graphs.PlanetoidDataModule`: a graph with
binary bag-of-words node features, integer class labels and an undirected edge list, in the same tensors
and dtypes as ``torch_geometric.datasets.Planetoid`` returns, small and seeded, needing no download.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

__all__ = ["contextual_sbm"]


def contextual_sbm(
    num_nodes: int = 2000,
    num_classes: int = 7,
    num_features: int = 256,
    avg_degree: float = 4.0,
    homophily: float = 0.8,
    words_per_node: int = 18,
    topic_purity: float = 0.22,
    seed: int = 0,
) -> Data:
    """Sample a contextual SBM graph with Cora-like bag-of-words features.

    Labels are balanced (class sizes differ by at most one) and assigned in a random order. Each class owns
    a topic: a disjoint slice of the vocabulary. Each node draws ``words_per_node`` distinct words; each word
    comes with probability ``topic_purity`` from the node's class topic (uniform over it) and otherwise from
    a shared Zipf-shaped background distribution over the whole vocabulary. Edges are sampled uniformly
    without replacement among the intra-class pairs (``round(homophily * M)`` of them) and among the
    inter-class pairs (the rest), where ``M = round(num_nodes * avg_degree / 2)`` undirected edges, so the
    expected degree is ``avg_degree`` and the edge homophily is ``homophily`` up to rounding.

    The defaults are calibrated on the Planetoid-public-style split of ``PlanetoidDataModule`` (20 per class
    train, 500 val, 1000 test): a 2-layer MLP on row-normalised features reaches about 55-59% test accuracy
    and a 2-layer GCN about 94-96% (seeds 0-2; real Cora: about 59% and 82%). The GCN gains more than on
    Cora because SBM degrees are Poisson, with none of Cora's many degree-1 nodes.

    Args:
        num_nodes: N, number of nodes.
        num_classes: C, number of classes; needs ``1 <= C <= min(N, num_features)``.
        num_features: F, vocabulary size.
        avg_degree: expected node degree (both directions of an undirected edge count once per endpoint).
        homophily: fraction of edges joining two nodes of the same class, in [0, 1].
        words_per_node: distinct words per node, in [1, F].
        topic_purity: probability that a word is drawn from the node's class topic, in [0, 1].
        seed: seed of the numpy Generator used for every draw; the global RNG state is never touched.

    Returns:
        ``Data`` with ``x`` float32 [N, F] in {0, 1}, ``y`` int64 [N] in [0, C), ``edge_index`` int64
        [2, 2M] holding both directions of every undirected edge, without self loops or duplicates,
        sorted by (source, target).
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
    if not 1 <= num_classes <= min(num_nodes, num_features):
        limit = min(num_nodes, num_features)
        raise ValueError(f"num_classes must be in [1, min(num_nodes, num_features)] = [1, {limit}], got {num_classes}")
    if not 1 <= words_per_node <= num_features:
        raise ValueError(f"words_per_node must be in [1, num_features={num_features}], got {words_per_node}")
    if avg_degree < 0:
        raise ValueError(f"avg_degree must be >= 0, got {avg_degree}")
    for name, value in (("homophily", homophily), ("topic_purity", topic_purity)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")

    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(num_nodes) % num_classes)
    x = _bag_of_words(rng, y, num_classes, num_features, words_per_node, topic_purity)
    edge_index = _sbm_edges(rng, y, num_classes, avg_degree, homophily)
    return Data(
        x=torch.from_numpy(x),
        y=torch.from_numpy(y.astype(np.int64)),
        edge_index=torch.from_numpy(edge_index),
        num_nodes=num_nodes,
    )


def _bag_of_words(
    rng: np.random.Generator,
    y: np.ndarray,
    num_classes: int,
    num_features: int,
    words_per_node: int,
    topic_purity: float,
) -> np.ndarray:
    """Binary [N, F] float32 rows with exactly ``words_per_node`` ones each."""
    n = y.shape[0]
    vocab = rng.permutation(num_features)
    topic_of_word = np.empty(num_features, dtype=np.int64)
    for c, words in enumerate(np.array_split(vocab, num_classes)):
        topic_of_word[words] = c
    topic_size = np.bincount(topic_of_word, minlength=num_classes)

    # Zipf-shaped background, so a few words are common to every class, as in real abstracts.
    background = 1.0 / (np.arange(num_features) + 10.0)
    log_background = np.log(background / background.sum())[rng.permutation(num_features)]

    n_topic = np.minimum(rng.binomial(words_per_node, topic_purity, size=n), topic_size[y])

    # Gumbel top-k: the k largest of log-weight + Gumbel noise are a weighted draw without replacement.
    in_topic = topic_of_word[None, :] == y[:, None]
    topic_scores = np.where(in_topic, rng.gumbel(size=(n, num_features)), -np.inf)
    chosen = _rank_rows(topic_scores) < n_topic[:, None]
    background_scores = np.where(chosen, -np.inf, log_background[None, :] + rng.gumbel(size=(n, num_features)))
    chosen |= _rank_rows(background_scores) < (words_per_node - n_topic)[:, None]
    return chosen.astype(np.float32)


def _rank_rows(scores: np.ndarray) -> np.ndarray:
    """Rank of each entry within its row, 0 for the largest."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(scores.shape[1]), scores.shape), axis=1)
    return ranks


def _sbm_edges(
    rng: np.random.Generator, y: np.ndarray, num_classes: int, avg_degree: float, homophily: float
) -> np.ndarray:
    """Undirected SBM edges as an int64 [2, 2M] array holding both directions."""
    n = y.shape[0]
    nodes_by_class = np.argsort(y, kind="stable")
    sizes = np.bincount(y, minlength=num_classes).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    # Every intra-class pair is one index into the concatenation of per-class lower triangles, and every
    # inter-class pair one index into the concatenation of per-class-pair rectangles, so distinct indices
    # drawn without replacement are distinct edges with no self loops, and nothing loops over edges.
    intra_sizes = sizes * (sizes - 1) // 2
    ca, cb = np.triu_indices(num_classes, k=1)
    inter_sizes = sizes[ca] * sizes[cb]
    num_edges = round(n * avg_degree / 2)
    num_intra = min(round(homophily * num_edges), int(intra_sizes.sum()))
    num_inter = min(num_edges - num_intra, int(inter_sizes.sum()))

    block, local = _draw_pair_indices(rng, intra_sizes, num_intra)
    row = ((np.sqrt(8.0 * local + 1.0) + 1.0) // 2).astype(np.int64)
    row -= row * (row - 1) // 2 > local  # float rounding guard for very large indices
    row += (row + 1) * row // 2 <= local
    col = local - row * (row - 1) // 2
    intra_u = nodes_by_class[starts[block] + row]
    intra_v = nodes_by_class[starts[block] + col]

    block, local = _draw_pair_indices(rng, inter_sizes, num_inter)
    width = sizes[cb[block]]
    inter_u = nodes_by_class[starts[ca[block]] + local // width]
    inter_v = nodes_by_class[starts[cb[block]] + local % width]

    u = np.concatenate([intra_u, inter_u])
    v = np.concatenate([intra_v, inter_v])
    src = np.concatenate([u, v])
    dst = np.concatenate([v, u])
    order = np.lexsort((dst, src))
    return np.stack([src[order], dst[order]]).astype(np.int64)


def _draw_pair_indices(rng: np.random.Generator, block_sizes: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``count`` distinct indices into concatenated blocks; return (block id, index within block)."""
    total = int(block_sizes.sum())
    if count <= 0 or total == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    flat = rng.choice(total, size=count, replace=False).astype(np.int64)
    ends = np.cumsum(block_sizes)
    block = np.searchsorted(ends, flat, side="right")
    return block, flat - (ends[block] - block_sizes[block])

"""Mirage mining: computation trees, canonical codes, per-class FP-growth and the distilled samples."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data

from modules.mirage_mining import (
    Tree,
    TreeVocabulary,
    assign_tree_ids,
    build_distilled_graphs,
    canonical_code,
    categorical_labels,
    class_transactions,
    computation_trees,
    mine,
    mine_class_patterns,
    node_codes,
    resolve_support,
    tensor_bytes,
)

NUM_NODE_LABELS, NUM_EDGE_LABELS = 5, 2
TRIANGLE, CYCLE = [1, 2, 3], [1, 2, 3, 2]  # motif node labels; the first motif node links to the connector


def undirected(edges: list[tuple[int, int]]) -> torch.Tensor:
    e = torch.tensor(edges, dtype=torch.long).t()
    return torch.cat([e, e.flip(0)], dim=1)


def motif_graph(motif: list[int], path_len: int, cls: int) -> Data:
    """Motif (ring, edge label 1) -- connector (label 4) -- path of label-0 nodes (edge label 0)."""
    k = len(motif)
    labels = motif + [4] + [0] * path_len
    edges = [(i, (i + 1) % k) for i in range(k)]
    edge_labels = [1] * k
    chain = [0, k, *range(k + 1, k + 1 + path_len)]
    edges += list(itertools.pairwise(chain))
    edge_labels += [0] * (len(chain) - 1)
    return Data(
        x=F.one_hot(torch.tensor(labels), NUM_NODE_LABELS).float(),
        edge_index=undirected(edges),
        edge_attr=F.one_hot(torch.tensor(edge_labels * 2), NUM_EDGE_LABELS).float(),
        y=torch.tensor([cls]),
    )


def toy_dataset(per_class: int = 10, seed: int = 0) -> list[Data]:
    rng = random.Random(seed)
    graphs = []
    for _ in range(per_class):
        graphs.append(motif_graph(CYCLE, rng.randint(2, 5), 0))
        graphs.append(motif_graph(TRIANGLE, rng.randint(2, 5), 1))
    return graphs


def path_graph() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """0 -(0)- 1 -(1)- 2 with node labels 5, 6, 7."""
    return torch.tensor([5, 6, 7]), undirected([(0, 1), (1, 2)]), torch.tensor([0, 1, 0, 1])


# ------------------------------------------------------------------ computation trees and codes


def test_computation_trees_of_a_path_unroll_back_edges_by_hand():
    labels, edge_index, edge_labels = path_graph()
    t0, t1, t2 = computation_trees(labels, edge_index, edge_labels, depth=2)
    # node 0: 0 -> 1 -> {0 (back edge), 2}
    assert t0.origin == (0, 1, 0, 2)
    assert (t0.labels, t0.parents, t0.edge_labels) == ((5, 6, 5, 7), (-1, 0, 1, 1), (-1, 0, 0, 1))
    # node 1: 1 -> {0, 2}; 0 -> {1}; 2 -> {1}
    assert t1.origin == (1, 0, 2, 1, 1)
    assert (t1.labels, t1.parents, t1.edge_labels) == ((6, 5, 7, 6, 6), (-1, 0, 0, 1, 2), (-1, 0, 1, 0, 1))
    # node 2: 2 -> 1 -> {0, 2 (back edge)}
    assert t2.origin == (2, 1, 0, 2)
    assert (t2.labels, t2.parents, t2.edge_labels) == ((7, 6, 5, 7), (-1, 0, 1, 1), (-1, 1, 0, 1))
    # depth 1 and the roots argument
    (only,) = computation_trees(labels, edge_index, edge_labels, depth=1, roots=[1])
    assert only.origin == (1, 0, 2) and only.parents == (-1, 0, 0)


def test_isolated_node_and_edgeless_graph_give_one_node_trees():
    labels = torch.tensor([3, 1, 2])
    trees = computation_trees(labels, undirected([(0, 1)]), None, depth=3)
    assert trees[2] == Tree((2,), (-1,), (-1,)) and trees[0].num_nodes == 4  # 0 -> 1 -> 0 -> 1
    empty = computation_trees(labels, torch.zeros(2, 0, dtype=torch.long), None, depth=2)
    assert [t.num_nodes for t in empty] == [1, 1, 1]


def test_node_codes_equal_the_codes_of_the_materialised_trees():
    gen = torch.Generator().manual_seed(0)
    for depth in (0, 1, 2, 3):
        for _ in range(5):
            n = int(torch.randint(2, 9, (1,), generator=gen))
            pairs = torch.randint(0, n, (2, n + 2), generator=gen)
            pairs = pairs[:, pairs[0] != pairs[1]]
            edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)
            edge_labels = torch.randint(0, 3, (pairs.shape[1],), generator=gen).repeat(2)
            labels = torch.randint(0, 4, (n,), generator=gen)
            trees = computation_trees(labels, edge_index, edge_labels, depth)
            assert [canonical_code(t) for t in trees] == node_codes(labels, edge_index, edge_labels, depth)


def test_codes_ignore_child_order_and_see_every_label():
    # root 1 with children a: 2 (whose child is 4) and b: 3; listed in the two possible orders
    tree = Tree(labels=(1, 2, 3, 4), parents=(-1, 0, 0, 1), edge_labels=(-1, 0, 1, 0))
    permuted = Tree(labels=(1, 3, 2, 4), parents=(-1, 0, 0, 2), edge_labels=(-1, 1, 0, 0))
    assert canonical_code(tree) == canonical_code(permuted)
    leaf_label = Tree(labels=(1, 2, 3, 5), parents=(-1, 0, 0, 1), edge_labels=(-1, 0, 1, 0))
    edge_label = Tree(labels=(1, 2, 3, 4), parents=(-1, 0, 0, 1), edge_labels=(-1, 0, 1, 1))
    moved_leaf = Tree(labels=(1, 2, 3, 4), parents=(-1, 0, 0, 2), edge_labels=(-1, 0, 1, 0))
    codes = {canonical_code(t) for t in (tree, leaf_label, edge_label, moved_leaf)}
    assert len(codes) == 4
    # multi-digit labels cannot run into each other (the official Python integer code collides here)
    a = Tree(labels=(19, 19, 0, 19), parents=(-1, 0, 1, 1), edge_labels=(-1, 0, 0, 0))
    b = Tree(labels=(19, 0, 10, 19), parents=(-1, 0, 1, 1), edge_labels=(-1, 0, 0, 0))
    assert canonical_code(a) != canonical_code(b)


def test_vocabulary_keeps_the_first_representative():
    vocab = TreeVocabulary()
    labels, edge_index, edge_labels = path_graph()
    ids = assign_tree_ids(labels, edge_index, edge_labels, 2, vocab)
    assert ids == [0, 1, 2] and len(vocab) == 3
    mirrored = assign_tree_ids(torch.tensor([7, 6, 5]), edge_index, edge_labels.flip(0), 2, vocab)
    assert mirrored == [2, 1, 0] and len(vocab) == 3
    assert vocab.tree(0).origin == (0, 1, 0, 2) and vocab.id_of(canonical_code(vocab.tree(1))) == 1


def test_tree_root_sees_what_message_passing_sees():
    """After L sum-aggregation layers on a distilled sample (edges child -> parent), each root's embedding
    equals its node's embedding in the original undirected graph."""
    gen = torch.Generator().manual_seed(1)
    graph = toy_dataset(per_class=1)[1]
    labels, edge_labels = categorical_labels(graph)
    depth = 2
    vocab = TreeVocabulary()
    ids = assign_tree_ids(labels, graph.edge_index, edge_labels, depth, vocab)
    (sample,) = build_distilled_graphs({1: [frozenset(ids)]}, vocab, NUM_NODE_LABELS, NUM_EDGE_LABELS)
    dims = [NUM_NODE_LABELS] + [8] * depth
    weights = [
        tuple(torch.randn(rows, dims[k + 1], generator=gen, dtype=torch.float64) for rows in (dims[k], dims[k], 2))
        for k in range(depth)
    ]

    def gnn(x, edge_index, edge_attr):
        h = x.double()
        for a, b, c in weights:  # h_i <- tanh(A h_i + sum_{j -> i} (B h_j + C e_ji))
            msg = h[edge_index[0]] @ b + edge_attr.double() @ c
            h = torch.tanh(h @ a + torch.zeros(h.shape[0], a.shape[1], dtype=h.dtype).index_add_(0, edge_index[1], msg))
        return h

    h_graph = gnn(graph.x, graph.edge_index, graph.edge_attr)
    h_sample = gnn(sample.x, sample.edge_index, sample.edge_attr)
    roots = sample.root_mask.nonzero().view(-1)
    origins = [vocab.tree(t).origin[0] for t in sorted(set(ids))]
    assert len(roots) == len(origins)
    assert torch.allclose(h_sample[roots], h_graph[origins], atol=1e-10)
    # a tree one level too shallow gives a different embedding
    shallow = TreeVocabulary()
    ids1 = assign_tree_ids(labels, graph.edge_index, edge_labels, depth - 1, shallow)
    (s1,) = build_distilled_graphs({1: [frozenset(ids1)]}, shallow, NUM_NODE_LABELS, NUM_EDGE_LABELS)
    h1 = gnn(s1.x, s1.edge_index, s1.edge_attr)[s1.root_mask]
    assert not torch.allclose(h1, h_graph[[shallow.tree(t).origin[0] for t in sorted(set(ids1))]], atol=1e-6)


# ------------------------------------------------------------------ mining


def test_fpgrowth_supports_match_brute_force():
    rng = random.Random(3)
    transactions = [frozenset(rng.sample(range(8), rng.randint(0, 5))) for _ in range(40)]
    theta = 7
    mined = mine_class_patterns(transactions, theta)
    for pattern, count in mined.items():
        assert count == sum(pattern <= tx for tx in transactions) >= theta
    expected = {
        frozenset(c)
        for k in (1, 2, 3, 4, 5)
        for c in itertools.combinations(range(8), k)
        if sum(set(c) <= tx for tx in transactions) >= theta
    }
    assert set(mined) == expected
    assert all(len(p) <= 2 for p in mine_class_patterns(transactions, theta, max_len=2))
    assert list(mined.values()) == sorted(mined.values(), reverse=True)


def test_mining_finds_the_class_motifs_and_builds_child_to_parent_samples():
    graphs = toy_dataset()
    result = mine(graphs, depth=2, support={0: 8, 1: 8}, drop_shared=True)
    assert result.support == {0: 8, 1: 8} and result.num_graphs == {0: 10, 1: 10}
    assert result.num_samples[0] > 0 and result.num_samples[1] > 0
    assert result.num_edge_labels == NUM_EDGE_LABELS and result.num_node_labels == NUM_NODE_LABELS

    # a triangle node's tree is frequent in class 1 only; a 4-cycle node's tree in class 0 only
    def tree_id(motif: list[int], node: int) -> int:
        g = motif_graph(motif, 3, 0)
        labels, edge_labels = categorical_labels(g)
        return result.vocabulary.id_of(node_codes(labels, g.edge_index, edge_labels, 2)[node])

    tri, cyc = tree_id(TRIANGLE, 1), tree_id(CYCLE, 2)
    items = {c: set().union(*ps) for c, ps in result.patterns.items()}
    assert tri in items[1] and tri not in items[0]
    assert cyc in items[0] and cyc not in items[1]
    assert result.patterns[1][frozenset({tri})] == 10
    assert not set(result.patterns[0]) & set(result.patterns[1])

    for data, pattern, count in zip(result.graphs, result.sample_patterns, result.sample_supports):
        cls = int(data.y)
        assert data.y.shape == (1,) and result.patterns[cls][pattern] == count >= 8
        n = data.num_nodes
        assert n == sum(result.vocabulary.tree(t).num_nodes for t in pattern)
        out_degree = torch.bincount(data.edge_index[0], minlength=n)
        assert torch.equal(data.root_mask, out_degree == 0)
        assert (out_degree[~data.root_mask] == 1).all() and int(data.root_mask.sum()) == len(pattern)
        assert data.edge_index.shape[1] == n - len(pattern)  # a forest: one edge per non-root
        assert torch.equal(data.x.sum(1), torch.ones(n)) and data.x.shape[1] == NUM_NODE_LABELS
        assert data.edge_attr.shape == (data.edge_index.shape[1], NUM_EDGE_LABELS)

    # without drop_shared, the label-0 path trees (common to both classes) give shared patterns
    kept = mine(graphs, depth=2, support={0: 8, 1: 8})
    assert set(kept.patterns[0]) & set(kept.patterns[1])
    assert kept.num_patterns[1] > result.num_patterns[1]
    first = result.graphs[0]
    expected = 4 * first.x.numel() + 8 * first.edge_index.numel() + 4 * first.edge_attr.numel() + first.num_nodes + 8
    assert tensor_bytes(result.graphs[:1]) == expected
    assert tensor_bytes(graphs) == sum(
        4 * g.x.numel() + 8 * g.edge_index.numel() + 4 * g.edge_attr.numel() + 8 for g in graphs
    )


def test_support_too_high_names_the_largest_usable_support():
    graphs = toy_dataset()
    with pytest.raises(ValueError, match=r"class 1: .*support 11 among 10 graphs.*largest usable support .* is 10"):
        mine(graphs, depth=2, support={0: 8, 1: 11})
    # min_tree_count counts node occurrences: a motif node's tree occurs 10 times per class (the 4-cycle's
    # two label-2 nodes share one tree, 20 times), a path tree at most 9 times
    kept = mine(graphs, depth=2, support={0: 10, 1: 10}, min_tree_count=9)
    assert kept.num_patterns == {0: 15, 1: 15}  # the 4 motif-and-connector trees, all non-empty subsets
    with pytest.raises(ValueError, match="class 0: .* no tree with more than one node survives"):
        mine(graphs, depth=2, support={0: 8, 1: 8}, min_tree_count=20)
    with pytest.raises(ValueError, match="no entry for classes"):
        mine(graphs, depth=2, support={0: 8})


def test_fractional_support_and_edgeless_graphs():
    graphs = toy_dataset()
    edgeless = Data(x=F.one_hot(torch.tensor([0, 1]), NUM_NODE_LABELS).float(), edge_index=torch.zeros(2, 0).long())
    edgeless.y = torch.tensor(0)
    result = mine([*graphs, edgeless], depth=2, support=0.75)
    assert result.support == {0: 9, 1: 8} and result.num_graphs == {0: 11, 1: 10}
    assert resolve_support(0.3, {0: 10}) == {0: 3}
    tx = class_transactions([[0, 1], [0]], [0, 0], result.vocabulary)
    assert all(result.vocabulary.tree(t).num_nodes > 1 for t in tx[0][0])


def test_continuous_features_are_refused_unless_labels_are_given():
    graphs = toy_dataset(per_class=2)
    graphs[3] = Data(x=torch.randn(4, 3), edge_index=undirected([(0, 1), (1, 2)]), y=torch.tensor([1]))
    with pytest.raises(ValueError, match="graph 3: x is not one-hot"):
        mine(graphs, depth=2, support=1.0)
    labels = [categorical_labels(g)[0] if i != 3 else torch.tensor([0, 1, 0, 4]) for i, g in enumerate(graphs)]
    result = mine(graphs, depth=2, support=0.5, node_labels=labels)
    assert result.num_node_labels == NUM_NODE_LABELS and result.num_edge_labels == NUM_EDGE_LABELS


def test_mining_is_deterministic():
    a = mine(toy_dataset(), depth=2, support={0: 6, 1: 6}, drop_shared=True)
    b = mine(toy_dataset(), depth=2, support={0: 6, 1: 6}, drop_shared=True)
    assert len(a.graphs) == len(b.graphs) > 2 and a.sample_patterns == b.sample_patterns
    for ga, gb in zip(a.graphs, b.graphs):
        assert ga.keys() == gb.keys()
        assert all(torch.equal(ga[k], gb[k]) for k in ga.keys())

"""Mirage (Gupta et al., ICLR 2024, arXiv 2310.09486): model-agnostic graph dataset distillation by mining
frequent computation-tree sets.

Pipeline, as pure functions (tensors and ints in, plain data out; no Lightning, no file I/O):

1. :func:`computation_trees`: the depth-L computation tree of every node, i.e. the BFS unrolling that L rounds
   of message passing see, back edges and repeated nodes included (official ``get_MPTree`` in
   ``NCI1/graph-nci-finalize-reduce-curr.py`` and the BFS in ``ogbg-molhiv/pygcanl/pygcanl.cpp``).
2. :func:`canonical_code`: an isomorphism-invariant string of a rooted labelled tree (children sorted), and
   :class:`TreeVocabulary` mapping codes to dense ids with one representative :class:`Tree` per id
   (``pygcanl.cpp::get_can_lab_tree`` and ``data_utils.py::canonical_label_to_naturals``).
3. :func:`class_transactions`: each graph becomes the SET of its tree ids, grouped by class.
4. :func:`mine_patterns`: per-class FP-growth with an absolute support, via ``mlxtend.frequent_patterns.fpgrowth``
   (official: ``pyfpgrowth.find_frequent_patterns`` in ``data_utils.py::pyfpgrowth_wrapper``).
5. :func:`build_distilled_graphs`: one sample per pattern, the disjoint union of its trees with edges directed
   child -> parent and the roots marked (``utils.py::disjointed_union`` and ``roots_to_embed``).
   :func:`mine` runs 1-5 in one call, :class:`MirageMiner` wraps it as the callable a recipe hands to
   ``datamodules.graphs.MirageDataModule(miner=...)``; :func:`tensor_bytes` measures compression.

One file over the usual 600 lines because the five steps are one pipeline whose data types (trees, codes,
vocabulary, transactions) pass from each step to the next; split, each file would import all the others.

Departures from the official code, all deliberate:

- Codes are strings with explicit delimiters, ``label[edge>child,edge>child]`` with the child strings sorted,
  hence injective. The C++ variant is also injective (space-separated tokens closed by ``$``); the Python
  variant's ``int(f'1{label+2}{children}0')`` has no delimiter, so once a node or edge label reaches 8 (two
  digits after the shift) different trees can share a code, e.g. ``19[19[0, 19]]`` and ``19[0[10, 19]]`` at
  depth 2 (NCI1 has 37 node labels).
- :func:`mine` computes every node's code by dynamic programming over the graph (the depth-k code of ``v`` is
  built from the depth-(k-1) codes of its neighbours) instead of materialising one tree per node; the string
  is identical to ``canonical_code(computation_trees(...)[v])`` and a tree is built only for the first node
  of each new code, which keeps depth 3 on OGB-sized sets cheap.
- Children are the in-neighbours of ``edge_index`` (the sources of edges into the node, as PyG message
  passing sees them), duplicate directed edges are merged (as ``nx.to_undirected`` and the C++
  ``edge_pair_to_ind`` do) and neighbours are visited in ascending id, so representatives do not depend on
  the order of ``edge_index``. The official code symmetrises the graph first; for the undirected graphs it is
  given (both directions stored) the trees are the same.
- One-node trees (isolated nodes) are left out of the transactions, as the Python variant does at
  extraction; the C++ variant keeps them in the transactions and drops them only when building samples,
  which can only add duplicate samples. :func:`build_distilled_graphs` still skips them for patterns
  supplied by the caller.
- ``min_tree_count`` counts node-level occurrences of a tree in a class, as the Python variant does, but
  without its off-by-one: its counter starts at 2 on the first occurrence, so its ``freq > 1`` filter keeps
  every tree. ``min_tree_count=0`` (the default) reproduces that and the C++ variant, which has no filter.
- ``drop_shared`` drops a pattern mined in ANY other class; the Python variant only handles two classes
  (``patterns_dict[1 - classid]``). The C++ variant (``mine_trees.py``) keeps shared patterns.
- mlxtend takes a relative support; it is passed as ``(theta - 0.5) / n`` so that mlxtend's
  ``ceil(min_support * n)`` gives exactly ``theta`` whatever the float rounding, and trees below ``theta`` are
  removed before the one-hot frame is built, because mlxtend densifies the frame to count single items.
- The support sweep (``theta`` lowered step by step, keeping the best validation AUC), the training and the
  evaluation are not part of mining and live elsewhere.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from mlxtend.frequent_patterns import fpgrowth
from torch import Tensor
from torch_geometric.data import Data

from zoo.datasets import tensor_bytes  # re-exported: the data-size measure lives in the bottom layer

__all__ = [
    "MirageMiner",
    "MiningResult",
    "Tree",
    "TreeVocabulary",
    "assign_tree_ids",
    "build_distilled_graphs",
    "canonical_code",
    "categorical_labels",
    "class_transactions",
    "computation_trees",
    "mine",
    "mine_class_patterns",
    "mine_patterns",
    "node_codes",
    "resolve_support",
    "tensor_bytes",
]


# ----------------------------------------------------------------------------------------------------------
# 1. Computation trees
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tree:
    """A rooted labelled tree in BFS order (root first, every parent before its children).

    ``labels[i]``: node label of tree node ``i``; ``parents[i]``: index of its parent (``-1`` for the root,
    otherwise ``< i``); ``edge_labels[i]``: label of the edge to its parent (``-1`` for the root);
    ``origin[i]``: the graph node it unrolls (official ``nodeorigid``), kept for inspection and ignored by
    ``==`` and :func:`canonical_code`.
    """

    labels: tuple[int, ...]
    parents: tuple[int, ...]
    edge_labels: tuple[int, ...]
    origin: tuple[int, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if n == 0 or len(self.parents) != n or len(self.edge_labels) != n:
            raise ValueError("a Tree needs at least one node and equally long labels, parents and edge_labels")
        if self.parents[0] != -1 or any(not 0 <= p < i for i, p in enumerate(self.parents) if i > 0):
            raise ValueError(f"parents must be -1 for the root and point to an earlier node, got {self.parents}")

    @property
    def num_nodes(self) -> int:
        return len(self.labels)


def _as_numpy_long(t: Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
    if isinstance(t, Tensor):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=np.int64)


def _in_neighbour_csr(
    num_nodes: int, edge_index: Tensor | np.ndarray, edge_labels: Tensor | np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-neighbour CSR: the children of node ``u`` are ``nbr[ptr[u]:ptr[u+1]]`` (ascending), reached over edges
    labelled ``lab[ptr[u]:ptr[u+1]]``. Duplicate directed edges are merged, keeping the first one's label."""
    ei = _as_numpy_long(edge_index)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(ei.shape)}")
    num_edges = ei.shape[1]
    lab = np.zeros(num_edges, dtype=np.int64) if edge_labels is None else _as_numpy_long(edge_labels).reshape(-1)
    if lab.shape[0] != num_edges:
        raise ValueError(f"edge_labels has {lab.shape[0]} entries for {num_edges} edges")
    if num_edges and (ei.min() < 0 or ei.max() >= num_nodes):
        raise ValueError(f"edge_index refers to nodes outside [0, {num_nodes})")
    src, dst = ei
    _, first = np.unique(dst * max(num_nodes, 1) + src, return_index=True)  # sorted by (dst, src)
    src, dst, lab = src[first], dst[first], lab[first]
    ptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=num_nodes), out=ptr[1:])
    return ptr, src, lab


def computation_trees(
    node_labels: Tensor,
    edge_index: Tensor,
    edge_labels: Tensor | None,
    depth: int,
    roots: Sequence[int] | Tensor | None = None,
) -> list[Tree]:
    """The depth-``depth`` computation tree of every node (or of ``roots``), as message passing sees it.

    node_labels: LongTensor [n]; edge_index: LongTensor [2, E] (undirected graphs store both directions);
    edge_labels: LongTensor [E] or None (all 0). Returns one :class:`Tree` per root, in root order.

    BFS from the root: every tree node at hop < ``depth`` gets as children ALL in-neighbours of its graph
    node, including the one it was reached from, so nodes repeat (official ``get_MPTree``). An isolated node
    gives a one-node tree. All roots of a graph are unrolled together with array operations.
    """
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    labels = _as_numpy_long(node_labels).reshape(-1)
    n = labels.shape[0]
    ptr, nbr, lab = _in_neighbour_csr(n, edge_index, edge_labels)
    root_nodes = np.arange(n, dtype=np.int64) if roots is None else _as_numpy_long(roots).reshape(-1)
    if root_nodes.size and (root_nodes.min() < 0 or root_nodes.max() >= n):
        raise ValueError(f"roots must lie in [0, {n})")
    num_roots = root_nodes.shape[0]
    if num_roots == 0:
        return []

    # One level at a time for all roots at once. Expanding a level in order keeps every root's nodes grouped
    # and in BFS order inside the group, so a stable sort by root yields each tree contiguously.
    level_node = [root_nodes]
    level_root = [np.arange(num_roots, dtype=np.int64)]
    level_parent = [np.full(num_roots, -1, dtype=np.int64)]  # index into the concatenation of all levels
    level_edge = [np.full(num_roots, -1, dtype=np.int64)]
    offset = 0
    for _ in range(depth):
        cur = level_node[-1]
        deg = ptr[cur + 1] - ptr[cur]
        total = int(deg.sum())
        if total == 0:
            break
        which = np.repeat(np.arange(cur.shape[0], dtype=np.int64), deg)
        within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(deg) - deg, deg)
        eid = ptr[cur][which] + within
        level_node.append(nbr[eid])
        level_edge.append(lab[eid])
        level_root.append(level_root[-1][which])
        level_parent.append(offset + which)
        offset += cur.shape[0]

    node = np.concatenate(level_node)
    root = np.concatenate(level_root)
    parent = np.concatenate(level_parent)
    edge = np.concatenate(level_edge)
    order = np.argsort(root, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    sizes = np.bincount(root, minlength=num_roots)
    starts = np.cumsum(sizes) - sizes
    local_parent = np.where(parent >= 0, rank[np.maximum(parent, 0)] - starts[root], -1)

    node_s = node[order].tolist()
    label_s = labels[node[order]].tolist()
    parent_s = local_parent[order].tolist()
    edge_s = edge[order].tolist()
    trees = []
    for s, k in zip(starts.tolist(), sizes.tolist()):
        e = s + k
        trees.append(Tree(tuple(label_s[s:e]), tuple(parent_s[s:e]), tuple(edge_s[s:e]), tuple(node_s[s:e])))
    return trees


# ----------------------------------------------------------------------------------------------------------
# 2. Canonical codes and the vocabulary
# ----------------------------------------------------------------------------------------------------------


def canonical_code(tree: Tree) -> str:
    """Isomorphism-invariant code of a rooted tree with node and edge labels.

    ``code(u) = f"{label(u)}[" + ",".join(sorted(f"{edge(u, c)}>{code(c)}" for children c)) + "]"``: sorting the
    children makes the order of children irrelevant; brackets, ``>`` and ``,`` make the string parse back to a
    unique ordered tree, so non-isomorphic trees never share a code. Example: a root labelled 5 with one leaf
    labelled 7 over an edge labelled 1 is ``"5[1>7[]]"``.
    """
    n = tree.num_nodes
    children: list[list[str]] = [[] for _ in range(n)]
    codes = [""] * n
    for i in range(n - 1, -1, -1):  # BFS order puts children after parents, so reverse is bottom-up
        kids = children[i]
        kids.sort()
        codes[i] = f"{tree.labels[i]}[{','.join(kids)}]"
        if i:
            children[tree.parents[i]].append(f"{tree.edge_labels[i]}>{codes[i]}")
    return codes[0]


def node_codes(node_labels: Tensor, edge_index: Tensor, edge_labels: Tensor | None, depth: int) -> list[str]:
    """``canonical_code`` of every node's depth-``depth`` computation tree, without building the trees.

    node_labels [n], edge_index [2, E], edge_labels [E] or None -> list of n strings. The depth-k tree of ``v``
    is ``v`` with the depth-(k-1) trees of its in-neighbours as children, so its code is built from theirs
    (the 1-WL refinement, with full strings instead of compressed colours).
    """
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    labels = _as_numpy_long(node_labels).reshape(-1).tolist()
    n = len(labels)
    ptr_a, nbr_a, lab_a = _in_neighbour_csr(n, edge_index, edge_labels)
    ptr, nbr, lab = ptr_a.tolist(), nbr_a.tolist(), lab_a.tolist()
    codes = [f"{lbl}[]" for lbl in labels]
    for _ in range(depth):
        new = []
        for v in range(n):
            s, e = ptr[v], ptr[v + 1]
            kids = sorted([f"{lab[i]}>{codes[nbr[i]]}" for i in range(s, e)])
            new.append(f"{labels[v]}[{','.join(kids)}]")
        codes = new
    return codes


class TreeVocabulary:
    """Dense integer ids for canonical codes, in order of first appearance, with one representative tree each
    (the first one added, like the official ``map_label_to_mptree`` keeps the last)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._codes: list[str] = []
        self._trees: list[Tree] = []

    def __len__(self) -> int:
        return len(self._codes)

    def __contains__(self, code: object) -> bool:
        return code in self._ids

    def add(self, tree: Tree, code: str | None = None) -> int:
        """Id of ``tree`` (its code is computed unless given), registering it as representative if new."""
        code = canonical_code(tree) if code is None else code
        tree_id = self._ids.get(code)
        if tree_id is None:
            tree_id = len(self._codes)
            self._ids[code] = tree_id
            self._codes.append(code)
            self._trees.append(tree)
        return tree_id

    def get(self, code: str) -> int | None:
        """Id of ``code``, or None if unseen."""
        return self._ids.get(code)

    def id_of(self, code: str) -> int:
        """Id of ``code``; KeyError if unseen."""
        return self._ids[code]

    def code(self, tree_id: int) -> str:
        return self._codes[tree_id]

    def tree(self, tree_id: int) -> Tree:
        return self._trees[tree_id]


def assign_tree_ids(
    node_labels: Tensor,
    edge_index: Tensor,
    edge_labels: Tensor | None,
    depth: int,
    vocabulary: TreeVocabulary,
) -> list[int]:
    """Vocabulary id of every node's computation tree (length n), adding unseen trees to ``vocabulary``.

    Trees are materialised (with :func:`computation_trees`) only for the first node of each unseen code.
    """
    codes = node_codes(node_labels, edge_index, edge_labels, depth)
    new_nodes: dict[str, int] = {}
    for v, code in enumerate(codes):
        if code not in vocabulary and code not in new_nodes:
            new_nodes[code] = v
    if new_nodes:
        trees = computation_trees(node_labels, edge_index, edge_labels, depth, roots=list(new_nodes.values()))
        for code, tree in zip(new_nodes, trees):
            vocabulary.add(tree, code)
    return [vocabulary.id_of(code) for code in codes]


# ----------------------------------------------------------------------------------------------------------
# Input graphs
# ----------------------------------------------------------------------------------------------------------


def _onehot_argmax(t: Tensor, what: str, graph_index: int) -> Tensor:
    if t.dim() != 2:
        raise ValueError(f"graph {graph_index}: {what} must be a 2-D one-hot matrix, got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    binary = (t == 0) | (t == 1)
    ones = (t == 1).sum(dim=1)
    bad = (~binary.all(dim=1)) | (ones != 1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"graph {graph_index}: {what} is not one-hot (row {row} = {t[row].tolist()}); Mirage mines categorical "
            "labels, so discretise continuous features first or pass precomputed integer labels"
        )
    return t.argmax(dim=1).long().cpu()


def categorical_labels(graph: Data, graph_index: int = 0) -> tuple[Tensor, Tensor]:
    """Integer labels of a PyG graph with one-hot ``x`` [n, F] and optional one-hot ``edge_attr`` [E, D].

    Returns (node labels LongTensor [n], edge labels LongTensor [E]); edge labels are 0 without ``edge_attr``.
    Raises ValueError naming ``graph_index`` if a row is not one-hot (continuous features).
    """
    if graph.x is None:
        raise ValueError(f"graph {graph_index} has no node features x; pass precomputed node labels")
    return _onehot_argmax(graph.x, "x", graph_index), _categorical_edge_labels(graph, graph_index)


def _categorical_edge_labels(graph: Data, graph_index: int) -> Tensor:
    num_edges = graph.edge_index.shape[1]
    edge_attr = getattr(graph, "edge_attr", None)
    if edge_attr is None:
        return torch.zeros(num_edges, dtype=torch.long)
    edge = _onehot_argmax(edge_attr, "edge_attr", graph_index)
    if edge.shape[0] != num_edges:
        raise ValueError(f"graph {graph_index}: edge_attr has {edge.shape[0]} rows for {num_edges} edges")
    return edge


def _graph_class(graph: Data, graph_index: int) -> int:
    y = getattr(graph, "y", None)
    if y is None or (isinstance(y, Tensor) and y.numel() != 1):
        raise ValueError(f"graph {graph_index}: y must hold one class id, got {y!r}")
    return int(y.reshape(-1)[0]) if isinstance(y, Tensor) else int(y)


# ----------------------------------------------------------------------------------------------------------
# 3. Transactions  4. Frequent tree sets
# ----------------------------------------------------------------------------------------------------------


def class_transactions(
    tree_ids: Sequence[Sequence[int]],
    classes: Sequence[int],
    vocabulary: TreeVocabulary,
    min_tree_count: int = 0,
) -> dict[int, list[frozenset[int]]]:
    """Per class, one transaction per graph (in input order): the SET of the graph's tree ids.

    tree_ids[g] lists the tree id of every node of graph g. One-node trees are left out (they carry no
    pattern). With ``min_tree_count = m > 0`` only trees occurring more than m times among the nodes of the
    class are kept (the Python variant's pre-filter, ``m = 1`` there). Graphs may end up with empty
    transactions; they still count towards the class size.
    """
    if len(tree_ids) != len(classes):
        raise ValueError(f"{len(tree_ids)} graphs but {len(classes)} classes")
    by_class: dict[int, list[Sequence[int]]] = {}
    for ids, c in zip(tree_ids, classes):
        by_class.setdefault(int(c), []).append(ids)
    out: dict[int, list[frozenset[int]]] = {}
    for c in sorted(by_class):
        graphs = by_class[c]
        keep: set[int] | None = None
        if min_tree_count > 0:
            counts = Counter(t for ids in graphs for t in ids)
            keep = {t for t, k in counts.items() if k > min_tree_count}
        txs = []
        for ids in graphs:
            items = {t for t in ids if vocabulary.tree(t).num_nodes > 1}
            txs.append(frozenset(items if keep is None else items & keep))
        out[c] = txs
    return out


def resolve_support(support: Mapping[int, int] | float, class_sizes: Mapping[int, int]) -> dict[int, int]:
    """Absolute minimum support per class: a mapping is checked and returned; a float in (0, 1] is a fraction
    of each class's graph count, ``ceil(fraction * n_c)`` (what mlxtend's relative support means)."""
    if isinstance(support, Mapping):
        missing = sorted(set(class_sizes) - set(support))
        if missing:
            raise ValueError(f"support has no entry for classes {missing}")
        out = {int(c): int(support[c]) for c in class_sizes}
        bad = {c: s for c, s in out.items() if s < 1}
        if bad:
            raise ValueError(f"absolute supports must be >= 1, got {bad}")
        return out
    frac = float(support)
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"a fractional support must lie in (0, 1], got {frac}")
    # The small slack keeps e.g. 0.3 * 10 = 3.0000000000000004 from becoming 4.
    return {int(c): max(1, math.ceil(frac * n - 1e-9)) for c, n in class_sizes.items()}


def _largest_usable_support(transactions: Sequence[frozenset[int]]) -> int:
    counts = Counter(t for tx in transactions for t in tx)
    return max(counts.values(), default=0)


def mine_class_patterns(
    transactions: Sequence[frozenset[int]],
    min_support: int,
    max_len: int | None = None,
    class_id: int | None = None,
) -> dict[frozenset[int], int]:
    """Frequent tree sets of one class: every itemset contained in at least ``min_support`` transactions.

    Returns {pattern (frozenset of tree ids): absolute support}, ordered by decreasing support, then by the
    sorted ids. Raises ValueError, naming the class, the support, the number of graphs and the largest usable
    support (the highest support of a single tree), if nothing is frequent.
    """
    n = len(transactions)
    counts = Counter(t for tx in transactions for t in tx)
    frequent = sorted(t for t, k in counts.items() if k >= min_support)
    if not frequent:
        largest = max(counts.values(), default=0)
        name = "" if class_id is None else f"class {class_id}: "
        hint = (
            f"the largest usable support for this class is {largest}"
            if largest
            else "no tree with more than one node survives, so no support is usable"
        )
        raise ValueError(f"{name}no frequent tree set at support {min_support} among {n} graphs; {hint}")
    column = {t: j for j, t in enumerate(frequent)}
    indptr, indices = [0], []
    for tx in transactions:
        indices.extend(sorted(column[t] for t in tx if t in column))
        indptr.append(len(indices))
    matrix = sp.csr_matrix(
        (np.ones(len(indices), dtype=bool), np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
        shape=(n, len(frequent)),
    )
    frame = pd.DataFrame.sparse.from_spmatrix(matrix, columns=list(range(len(frequent))))
    # (theta - 0.5) / n: mlxtend turns it back into ceil(min_support * n) = theta, robust to float rounding.
    found = fpgrowth(frame, min_support=(min_support - 0.5) / n, max_len=max_len)
    result = []
    for rel, itemset in zip(found["support"].tolist(), found["itemsets"].tolist()):
        count = round(rel * n)
        if count >= min_support:
            result.append((count, tuple(sorted(frequent[j] for j in itemset))))
    result.sort(key=lambda r: (-r[0], len(r[1]), r[1]))
    return {frozenset(ids): count for count, ids in result}


def mine_patterns(
    transactions_by_class: Mapping[int, Sequence[frozenset[int]]],
    support: Mapping[int, int],
    max_len: int | None = None,
    drop_shared: bool = False,
) -> dict[int, dict[frozenset[int], int]]:
    """Frequent tree sets per class at absolute supports ``support[c]``, see :func:`mine_class_patterns`.

    ``drop_shared``: drop patterns that are also mined in another class (the official NCI1/IMDB Python
    scripts; the OGB C++ pipeline keeps them). Raises ValueError if a class ends up with no pattern.
    """
    mined = {
        c: mine_class_patterns(txs, support[c], max_len=max_len, class_id=c)
        for c, txs in sorted(transactions_by_class.items())
    }
    if not drop_shared:
        return mined
    out = {}
    for c, patterns in mined.items():
        others = [p for o, ps in mined.items() if o != c for p in ps]
        shared = set(others)
        kept = {p: k for p, k in patterns.items() if p not in shared}
        if not kept:
            raise ValueError(
                f"class {c}: all {len(patterns)} patterns mined at support {support[c]} are also mined in another "
                "class; lower the support or set drop_shared=False"
            )
        out[c] = kept
    return out


# ----------------------------------------------------------------------------------------------------------
# 5. Distilled set
# ----------------------------------------------------------------------------------------------------------


def _pattern_sample(trees: Sequence[Tree], class_id: int, num_node_labels: int, num_edge_labels: int) -> Data | None:
    trees = [t for t in trees if t.num_nodes > 1]  # official disjointed_union skips one-node trees
    if not trees:
        return None
    labels, src, dst, edge_labels, roots = [], [], [], [], []
    offset = 0
    for tree in trees:
        labels.extend(tree.labels)
        roots.append(offset)
        src.extend(range(offset + 1, offset + tree.num_nodes))
        dst.extend(offset + p for p in tree.parents[1:])
        edge_labels.extend(tree.edge_labels[1:])
        offset += tree.num_nodes
    node = torch.tensor(labels, dtype=torch.long)
    if int(node.min()) < 0 or int(node.max()) >= num_node_labels:
        raise ValueError(f"node labels must lie in [0, {num_node_labels}), got {node.min()}..{node.max()}")
    root_mask = torch.zeros(offset, dtype=torch.bool)
    root_mask[roots] = True
    data = Data(
        x=F.one_hot(node, num_node_labels).float(),
        edge_index=torch.tensor([src, dst], dtype=torch.long),
        root_mask=root_mask,
        y=torch.tensor([class_id], dtype=torch.long),
    )
    if num_edge_labels > 0:
        edge = torch.tensor(edge_labels, dtype=torch.long)
        if int(edge.min()) < 0 or int(edge.max()) >= num_edge_labels:
            raise ValueError(f"edge labels must lie in [0, {num_edge_labels}), got {edge.min()}..{edge.max()}")
        data.edge_attr = F.one_hot(edge, num_edge_labels).float()
    return data


def build_distilled_graphs(
    patterns_by_class: Mapping[int, Iterable[frozenset[int]]],
    vocabulary: TreeVocabulary,
    num_node_labels: int,
    num_edge_labels: int,
) -> list[Data]:
    """One PyG sample per pattern: the disjoint union of its trees (ascending tree id), classes ascending.

    Each sample has ``x`` float [n, num_node_labels] (one-hot), ``edge_index`` [2, e] directed CHILD -> PARENT
    (messages flow leaves -> root, so after ``depth`` GNN layers a root's embedding equals its node's embedding
    in the original graph), ``edge_attr`` float [e, num_edge_labels] (one-hot, only if num_edge_labels > 0),
    ``root_mask`` bool [n] (each tree's root; exactly the nodes without an out-edge) and ``y`` long [1].
    One-node trees are skipped, and so is a pattern made only of them. Mapping values (supports) are ignored.
    """
    out = []
    for c in sorted(patterns_by_class):
        for pattern in patterns_by_class[c]:
            trees = [vocabulary.tree(t) for t in sorted(pattern)]
            data = _pattern_sample(trees, int(c), num_node_labels, num_edge_labels)
            if data is not None:
                out.append(data)
    return out


# ----------------------------------------------------------------------------------------------------------
# One-call entry point
# ----------------------------------------------------------------------------------------------------------


@dataclass
class MiningResult:
    """Output of :func:`mine`.

    ``graphs``: the distilled samples; ``sample_patterns[i]`` / ``sample_supports[i]``: the pattern and its
    absolute support behind ``graphs[i]``; ``patterns``: per class, {pattern: support} after ``drop_shared``;
    ``support``: the absolute supports used; ``num_graphs`` / ``unique_trees`` / ``num_patterns`` /
    ``num_samples``: per-class counts (``unique_trees`` counts every distinct tree, one-node ones included,
    before ``min_tree_count``); ``extraction_seconds``: labels, trees, codes and ids; ``mining_seconds``:
    transactions, FP-growth and ``drop_shared``; ``build_seconds``: assembling the samples.
    """

    graphs: list[Data]
    sample_patterns: list[frozenset[int]]
    sample_supports: list[int]
    patterns: dict[int, dict[frozenset[int], int]]
    vocabulary: TreeVocabulary
    support: dict[int, int]
    num_graphs: dict[int, int]
    unique_trees: dict[int, int]
    num_patterns: dict[int, int]
    num_samples: dict[int, int]
    num_node_labels: int
    num_edge_labels: int
    extraction_seconds: float
    mining_seconds: float
    build_seconds: float


def _infer_width(graphs: Sequence[Data], key: str) -> int | None:
    widths = {int(getattr(g, key).shape[-1]) for g in graphs if getattr(g, key, None) is not None}
    if len(widths) > 1:
        raise ValueError(f"graphs disagree on the width of {key}: {sorted(widths)}")
    return widths.pop() if widths else None


def mine(
    graphs: Sequence[Data],
    depth: int,
    support: Mapping[int, int] | float,
    *,
    node_labels: Sequence[Tensor] | None = None,
    edge_labels: Sequence[Tensor | None] | None = None,
    num_node_labels: int | None = None,
    num_edge_labels: int | None = None,
    drop_shared: bool = False,
    min_tree_count: int = 0,
    max_len: int | None = None,
) -> MiningResult:
    """Distil ``graphs`` (the training set) into frequent computation-tree sets, one sample per pattern.

    graphs: PyG ``Data`` with ``edge_index`` [2, E] (both directions), ``y`` (one class id) and, unless
    ``node_labels`` is given, one-hot ``x`` [n, F] (label = argmax); optional one-hot ``edge_attr`` [E, D]
    (absent: label 0). ``node_labels`` / ``edge_labels``: precomputed LongTensor labels per graph ([n] / [E]
    or None), e.g. after discretising continuous features. ``depth``: the number of hops L (official
    ``n_hops``; match it to the GNN depth). ``support``: absolute minimum support per class, or a fraction of
    each class's graph count. ``num_node_labels`` / ``num_edge_labels``: one-hot widths of the samples;
    default ``x.shape[1]`` / ``edge_attr.shape[1]`` (0, i.e. no ``edge_attr``, if no graph has one) or, with
    precomputed labels, the largest label + 1. See :func:`class_transactions` and :func:`mine_patterns` for
    ``min_tree_count``, ``drop_shared`` and ``max_len`` (the largest pattern size, passed to fpgrowth).
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if not graphs:
        raise ValueError("no graphs to mine")
    if node_labels is not None and len(node_labels) != len(graphs):
        raise ValueError(f"{len(node_labels)} node label tensors for {len(graphs)} graphs")
    if edge_labels is not None and len(edge_labels) != len(graphs):
        raise ValueError(f"{len(edge_labels)} edge label tensors for {len(graphs)} graphs")

    t0 = time.perf_counter()
    classes = [_graph_class(g, i) for i, g in enumerate(graphs)]
    vocabulary = TreeVocabulary()
    tree_ids: list[list[int]] = []
    max_node, max_edge = -1, -1
    for i, g in enumerate(graphs):
        if node_labels is None:
            if g.x is None:
                raise ValueError(f"graph {i} has no node features x; pass precomputed node_labels")
            nodes = _onehot_argmax(g.x, "x", i)
        else:
            nodes = torch.as_tensor(node_labels[i], dtype=torch.long).reshape(-1)
            if nodes.shape[0] != g.num_nodes:
                raise ValueError(f"graph {i}: {nodes.shape[0]} node labels for {g.num_nodes} nodes")
        if edge_labels is not None and edge_labels[i] is not None:
            edges = torch.as_tensor(edge_labels[i], dtype=torch.long).reshape(-1)
        else:
            edges = _categorical_edge_labels(g, i)
        if nodes.numel():
            max_node = max(max_node, int(nodes.max()))
        if edges.numel():
            max_edge = max(max_edge, int(edges.max()))
        tree_ids.append(assign_tree_ids(nodes, g.edge_index, edges, depth, vocabulary))
    extraction_seconds = time.perf_counter() - t0

    if num_node_labels is None:
        num_node_labels = _infer_width(graphs, "x") if node_labels is None else max_node + 1
    if not num_node_labels:
        raise ValueError("could not infer num_node_labels (no node in any graph); pass it explicitly")
    if num_edge_labels is None:
        has_edge_labels = edge_labels is not None and any(e is not None for e in edge_labels)
        width = _infer_width(graphs, "edge_attr")
        num_edge_labels = max_edge + 1 if has_edge_labels else (width or 0)

    t1 = time.perf_counter()
    class_sizes = dict(sorted(Counter(classes).items()))
    unique_trees: dict[int, set[int]] = {c: set() for c in class_sizes}
    for ids, c in zip(tree_ids, classes):
        unique_trees[c].update(ids)
    theta = resolve_support(support, class_sizes)
    transactions = class_transactions(tree_ids, classes, vocabulary, min_tree_count=min_tree_count)
    patterns = mine_patterns(transactions, theta, max_len=max_len, drop_shared=drop_shared)
    mining_seconds = time.perf_counter() - t1

    t2 = time.perf_counter()
    samples, sample_patterns, sample_supports = [], [], []
    num_samples = {c: 0 for c in class_sizes}
    for c, class_patterns in patterns.items():
        for pattern, count in class_patterns.items():
            data = _pattern_sample([vocabulary.tree(t) for t in sorted(pattern)], c, num_node_labels, num_edge_labels)
            if data is not None:
                samples.append(data)
                sample_patterns.append(pattern)
                sample_supports.append(count)
                num_samples[c] += 1
    build_seconds = time.perf_counter() - t2

    return MiningResult(
        graphs=samples,
        sample_patterns=sample_patterns,
        sample_supports=sample_supports,
        patterns=patterns,
        vocabulary=vocabulary,
        support=theta,
        num_graphs=class_sizes,
        unique_trees={c: len(s) for c, s in unique_trees.items()},
        num_patterns={c: len(p) for c, p in patterns.items()},
        num_samples=num_samples,
        num_node_labels=num_node_labels,
        num_edge_labels=num_edge_labels,
        extraction_seconds=extraction_seconds,
        mining_seconds=mining_seconds,
        build_seconds=build_seconds,
    )


class MirageMiner:
    """Mirage's distillation (Gupta et al., ICLR 2024, Sec. 3; official ``ogbg-molhiv/mine_trees.py``) as a
    callable: ``miner(train_graphs) -> distilled samples``, i.e. :func:`mine` with these arguments.

    A recipe builds it (``data.init_args.miner: {class_path: modules.mirage_mining.MirageMiner, init_args:
    {depth: 2, support: 0.1}}``) and hands it to ``datamodules.graphs.MirageDataModule``, so the datamodule gets
    the mined set as data and never imports a method. The one-hot widths of the samples are those of the
    graphs it is given (``x`` of the first graph; ``edge_attr`` of the first graph with one, else none), unless
    ``num_node_labels`` / ``num_edge_labels`` fix them. After a call, ``result`` is the :class:`MiningResult`
    and ``stats`` its times (``extraction_seconds``, ``mining_seconds``).
    """

    def __init__(
        self,
        depth: int = 2,
        support: float | dict[int, int] = 0.1,
        drop_shared: bool = False,
        min_tree_count: int = 0,
        max_len: int | None = None,
        num_node_labels: int | None = None,
        num_edge_labels: int | None = None,
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth, self.support, self.drop_shared = depth, support, drop_shared
        self.min_tree_count, self.max_len = min_tree_count, max_len
        self.num_node_labels, self.num_edge_labels = num_node_labels, num_edge_labels
        self.result: MiningResult | None = None

    def __call__(self, graphs: list[Data]) -> list[Data]:
        if not graphs:
            raise ValueError("no graphs to mine")
        num_node_labels = self.num_node_labels
        if num_node_labels is None and graphs[0].x is not None:
            num_node_labels = int(graphs[0].x.size(-1))
        num_edge_labels = self.num_edge_labels
        if num_edge_labels is None:
            edge_attr = next((g.edge_attr for g in graphs if g.get("edge_attr") is not None), None)
            num_edge_labels = 0 if edge_attr is None else int(edge_attr.size(-1)) if edge_attr.dim() > 1 else 1
        self.result = mine(
            graphs,
            self.depth,
            self.support,
            num_node_labels=num_node_labels,
            num_edge_labels=num_edge_labels,
            drop_shared=self.drop_shared,
            min_tree_count=self.min_tree_count,
            max_len=self.max_len,
        )
        return list(self.result.graphs)

    @property
    def stats(self) -> dict[str, float]:
        """The last call's ``extraction_seconds`` and ``mining_seconds`` (empty before a call)."""
        if self.result is None:
            return {}
        return {"extraction_seconds": self.result.extraction_seconds, "mining_seconds": self.result.mining_seconds}

    def __repr__(self) -> str:
        return f"MirageMiner(depth={self.depth}, support={self.support!r}, drop_shared={self.drop_shared})"

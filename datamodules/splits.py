"""Seeded train/val/test splits shared by every datamodule: a plain random split, a split stratified by class and
a split by group (patient, speaker, ...), all with one size convention.

**Sizes.** ``fractions`` are ``(train, val, test)``, each >= 0, summing to 1. Of ``n`` items the two held-out
splits get ``floor(f * n + 1/2)`` items each (round half up: 12.5 -> 13, never Python's round-half-to-even),
and train gets the rest, so train absorbs the rounding and the held-out sizes never depend on each other.
:func:`random_split` and :func:`grouped_split` also take explicit held-out counts (``{"val": 8}``) instead.
A stratified split applies the convention to each class on its own; a grouped split applies it to the number
of groups (and, by default, gives each held-out split with a fraction > 0 at least one group).

**Order.** The items (or the groups, or each class's members) are permuted by ``torch.randperm`` with a
generator seeded by ``seed``; consecutive slices of that permutation go to the splits in ``order``
(default train, val, test). A stratified split permutes every class, in label order, with the same generator.

**Output.** split name -> sorted int64 indices into the input; the splits are disjoint and cover every index.
A split whose fraction is > 0 but comes out empty raises ValueError naming every split's size.

These reproduce, index for index, the splits the published entries were made with: the TU graph splits
(``order=("test", "val", "train")``), the multi-view and CT splits (the default order) and the LibriSpeech
speaker split (held-out count, ``order=("val", "train", "test")``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["SPLITS", "grouped_split", "random_split", "split_sizes", "stratified_split"]

SPLITS = ("train", "val", "test")
HELD_OUT = ("val", "test")


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """``fractions`` as a (train, val, test) tuple, or ValueError unless they are 3 values >= 0 with val and test
    below 1, train above 0 and a sum of 1 (within 1e-6)."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or min(values) < 0 or values[0] <= 0 or max(values[1:]) >= 1 or abs(sum(values) - 1) > 1e-6:
        raise ValueError(
            f"fractions must be (train, val, test), each >= 0, train > 0, summing to 1; got {tuple(fractions)}"
        )
    return values  # type: ignore[return-value]


def _check_order(order: Sequence[str]) -> tuple[str, ...]:
    if sorted(order) != sorted(SPLITS):
        raise ValueError(f"order must name each of {SPLITS} once, got {tuple(order)}")
    return tuple(order)


def split_sizes(n: int, fractions: Sequence[float], min_held_out: int = 0) -> dict[str, int]:
    """The sizes of the three splits of ``n`` items by the module's convention (see the module docstring).

    Args:
        n: the number of items (samples, members of one class, or groups).
        fractions: (train, val, test), see :func:`check_fractions`.
        min_held_out: the least size of a held-out split whose fraction is > 0 (0: no floor).

    Returns:
        ``{"train": n - val - test, "val": floor(f_val n + 1/2), "test": floor(f_test n + 1/2)}``; train may be
        negative when ``min_held_out`` asks for more than ``n`` holds (the callers raise then).
    """
    _, f_val, f_test = check_fractions(fractions)
    sizes = {}
    for name, f in (("val", f_val), ("test", f_test)):
        size = math.floor(f * n + 0.5)
        sizes[name] = max(size, min_held_out) if f > 0 else size
    return {"train": n - sizes["val"] - sizes["test"], **sizes}


def _sizes(n: int, fractions: Sequence[float] | Mapping[str, int], min_held_out: int) -> dict[str, int]:
    """Sizes from fractions, or from explicit held-out counts (``{"val": 8, "test": 0}``, train the rest)."""
    if isinstance(fractions, Mapping):
        unknown = set(fractions) - set(HELD_OUT)
        if unknown or any(int(c) < 0 for c in fractions.values()):
            raise ValueError(f"held-out counts must map 'val'/'test' to counts >= 0, got {dict(fractions)}")
        counts = {s: int(fractions.get(s, 0)) for s in HELD_OUT}
        return {"train": n - counts["val"] - counts["test"], **counts}
    return split_sizes(n, fractions, min_held_out)


def _wanted(fractions: Sequence[float] | Mapping[str, int]) -> list[str]:
    """The splits that must not come out empty: those with a fraction (or count) > 0, and train."""
    if isinstance(fractions, Mapping):
        return ["train", *(s for s in HELD_OUT if int(fractions.get(s, 0)) > 0)]
    return [s for s, f in zip(SPLITS, check_fractions(fractions)) if f > 0]


def _carve(items: Tensor, sizes: Mapping[str, int], order: Sequence[str]) -> dict[str, Tensor]:
    """Consecutive slices of ``items`` of the given sizes, taken by the splits in ``order``."""
    chunks = items.split([sizes[s] for s in order])
    return dict(zip(order, chunks))


def _check_nonempty(out: Mapping[str, Tensor], wanted: Sequence[str], n: int, what: str) -> None:
    sizes = ", ".join(f"{s}={out[s].numel()}" for s in SPLITS)
    for s in wanted:
        if out[s].numel() == 0:
            raise ValueError(f"the {s} split is empty ({sizes} of {n} {what}); use more {what} or larger fractions")


def random_split(
    n: int,
    fractions: Sequence[float] | Mapping[str, int],
    seed: int,
    *,
    order: Sequence[str] = SPLITS,
    what: str = "samples",
) -> dict[str, Tensor]:
    """A plain seeded split of ``range(n)``: ``torch.randperm(n)`` seeded by ``seed``, sliced in ``order``.

    Args:
        n: the number of items.
        fractions: (train, val, test) fractions, or held-out counts ``{"val": k, "test": m}``.
        seed: seed of the permutation.
        order: which split takes the first slice of the permutation, the second, the third.
        what: how to name the items in errors.

    Returns:
        split -> sorted int64 indices into ``range(n)``.
    """
    order = _check_order(order)
    sizes = _sizes(n, fractions, 0)
    if sizes["train"] < 0:
        raise ValueError(f"{n} {what} cannot hold the held-out sizes {sizes}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out = {s: idx.sort().values for s, idx in _carve(perm, sizes, order).items()}
    _check_nonempty(out, _wanted(fractions), n, what)
    return {s: out[s] for s in SPLITS}


def stratified_split(
    labels: Tensor,
    fractions: Sequence[float],
    seed: int,
    *,
    order: Sequence[str] = SPLITS,
    what: str = "samples",
) -> dict[str, Tensor]:
    """A seeded split stratified by class: each class is split by the size convention on its own.

    The classes (the distinct values of ``labels``, in increasing order) are visited in turn; the indices of a
    class's ``n_c`` members are permuted by one generator seeded by ``seed`` (shared by all classes) and
    sliced in ``order``: ``floor(f_val n_c + 1/2)`` val, ``floor(f_test n_c + 1/2)`` test, the rest train.
    So every split holds each class in proportion, within half an item.

    Args:
        labels: int [N], one class per item (any integers).
        fractions: (train, val, test).
        seed: seed of the permutations.
        order: which split takes the first slice of each class's permutation, the second, the third.
        what: how to name the items in errors, e.g. ``"graphs"``.

    Returns:
        split -> sorted int64 indices into ``labels``.
    """
    order = _check_order(order)
    check_fractions(fractions)
    labels = labels.reshape(-1).cpu()
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[Tensor]] = {s: [] for s in SPLITS}
    for c in torch.unique(labels).tolist():
        members = (labels == c).nonzero().view(-1)
        members = members[torch.randperm(members.numel(), generator=generator)]
        for s, chunk in _carve(members, split_sizes(members.numel(), fractions), order).items():
            parts[s].append(chunk)
    empty = torch.zeros(0, dtype=torch.long)
    out = {s: torch.cat(p).sort().values if p else empty for s, p in parts.items()}
    _check_nonempty(out, _wanted(fractions), labels.numel(), what)
    return out


def grouped_split(
    groups: Tensor,
    fractions: Sequence[float] | Mapping[str, int],
    seed: int,
    *,
    order: Sequence[str] = SPLITS,
    min_held_out: int = 1,
    what: str = "groups",
) -> dict[str, Tensor]:
    """A seeded split by group (patient, speaker, ...): no group is in two splits.

    The distinct groups (in increasing order) are permuted by ``torch.randperm`` seeded by ``seed`` and sliced
    in ``order`` with the size convention applied to the number of groups G; a held-out split with a fraction
    > 0 gets at least ``min_held_out`` groups. Every item goes where its group went.

    Args:
        groups: int [N], the group of each item.
        fractions: (train, val, test) fractions of the groups, or held-out group counts ``{"val": k}``.
        seed: seed of the permutation.
        order: which split takes the first slice of the group permutation, the second, the third.
        min_held_out: the least number of groups of a held-out split with a fraction > 0.
        what: how to name the groups in errors, e.g. ``"patients"``.

    Returns:
        split -> sorted int64 indices into ``groups``.

    Raises:
        ValueError: the groups cannot fill the splits (naming G), or a wanted split is empty.
    """
    order = _check_order(order)
    groups = groups.reshape(-1).cpu()
    ids = torch.unique(groups)
    n = ids.numel()
    sizes = _sizes(n, fractions, min_held_out)
    if sizes["train"] < 1:
        shown = dict(fractions) if isinstance(fractions, Mapping) else tuple(fractions)
        raise ValueError(f"{n} {what} cannot fill train/val/test with split {shown}; train would get {sizes['train']}")
    chosen = ids[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    chunks = _carve(chosen, sizes, order)
    _check_nonempty(chunks, _wanted(fractions), n, what)  # counted in groups
    return {s: torch.isin(groups, chunks[s]).nonzero().view(-1) for s in SPLITS}

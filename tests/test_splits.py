"""Property checks of the shared splits (datamodules.splits) over many seeds, sizes and fractions: disjoint,
covering, sized by the documented rounding (held-out splits round half up, train takes the rest), classes kept
in every split when large enough, groups never in two splits."""

from __future__ import annotations

import math

import pytest
import torch

from datamodules.splits import SPLITS, grouped_split, random_split, split_sizes, stratified_split

FRACTIONS = [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.5, 0.25, 0.25), (0.7, 0.15, 0.15), (0.9, 0.0, 0.1)]
ORDERS = [SPLITS, ("test", "val", "train"), ("val", "train", "test")]


def cases(count: int, low: int, high: int):
    """``count`` (n, fractions, seed, order) cases drawn from a fixed generator."""
    g = torch.Generator().manual_seed(2024)
    for case in range(count):
        n = int(torch.randint(low, high, (1,), generator=g))
        yield n, FRACTIONS[case % len(FRACTIONS)], case, ORDERS[case % len(ORDERS)], g


def expected_sizes(n: int, fractions) -> dict[str, int]:
    val, test = (math.floor(f * n + 0.5) for f in fractions[1:])
    return {"train": n - val - test, "val": val, "test": test}


def assert_partition(parts: dict[str, torch.Tensor], n: int) -> None:
    assert list(parts) == list(SPLITS)
    for idx in parts.values():
        assert idx.dtype == torch.long and torch.equal(idx, idx.sort().values)  # sorted indices
    everything = torch.cat(list(parts.values()))
    assert everything.numel() == n and torch.equal(everything.sort().values, torch.arange(n))  # each index once


def test_sizes_round_half_up_and_train_takes_the_rest():
    assert split_sizes(125, (0.8, 0.1, 0.1)) == {"train": 99, "val": 13, "test": 13}  # 12.5 -> 13, not 12
    assert split_sizes(63, (0.8, 0.1, 0.1)) == {"train": 51, "val": 6, "test": 6}
    assert split_sizes(200, (0.6, 0.2, 0.2)) == {"train": 120, "val": 40, "test": 40}
    assert split_sizes(3, (0.8, 0.1, 0.1), min_held_out=1) == {"train": 1, "val": 1, "test": 1}
    assert split_sizes(10, (0.9, 0.0, 0.1), min_held_out=1)["val"] == 0  # a zero fraction stays empty
    for n in range(0, 300):
        for fractions in FRACTIONS:
            sizes = split_sizes(n, fractions)
            assert sizes == expected_sizes(n, fractions) and sizes["train"] >= 0


def test_random_split_partitions_with_the_documented_sizes():
    for n, fractions, seed, order, _ in cases(200, 10, 500):
        parts = random_split(n, fractions, seed, order=order)
        assert_partition(parts, n)
        assert {s: p.numel() for s, p in parts.items()} == expected_sizes(n, fractions)
        again = random_split(n, fractions, seed, order=order)
        assert all(torch.equal(parts[s], again[s]) for s in SPLITS)
    # the slices of one seeded permutation, in ``order``
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    parts = random_split(10, (0.6, 0.2, 0.2), 3, order=("test", "val", "train"))
    assert parts["test"].tolist() == sorted(perm[:2].tolist()) and parts["val"].tolist() == sorted(perm[2:4].tolist())
    assert random_split(20, (0.6, 0.2, 0.2), 0)["val"].tolist() != random_split(20, (0.6, 0.2, 0.2), 1)["val"].tolist()


def test_random_split_takes_held_out_counts():
    parts = random_split(30, {"val": 7}, seed=1, order=("val", "train", "test"))
    assert_partition(parts, 30)
    assert [parts[s].numel() for s in SPLITS] == [23, 7, 0]


def test_stratified_split_sizes_each_class_and_keeps_large_enough_classes_everywhere():
    for n, fractions, seed, order, g in cases(150, 20, 400):
        labels = torch.randint(0, int(torch.randint(1, 6, (1,), generator=g)), (n,), generator=g)
        try:
            parts = stratified_split(labels, fractions, seed, order=order)
        except ValueError as err:  # only when a split with a fraction > 0 has no member of any class
            assert "split is empty" in str(err)
            continue
        assert_partition(parts, n)
        for c in torch.unique(labels).tolist():
            n_c = int((labels == c).sum())
            want = expected_sizes(n_c, fractions)
            got = {s: int((labels[parts[s]] == c).sum()) for s in SPLITS}
            assert got == want, (n_c, fractions)
            if n_c >= 1 / min(f for f in fractions if f > 0):  # large enough: every split is owed one or more
                assert all(got[s] >= 1 for s, f in zip(SPLITS, fractions) if f > 0), (n_c, fractions, got)


def test_stratified_split_of_the_published_tu_shape():
    # MUTAG: 125 + 63 graphs; 10% of 125 is 12.5, which rounds up to 13 (the published split)
    labels = torch.cat([torch.zeros(125), torch.ones(63)]).long()
    parts = stratified_split(labels, (0.8, 0.1, 0.1), 0, order=("test", "val", "train"))
    assert [parts[s].numel() for s in SPLITS] == [150, 19, 19]
    assert [int((labels[parts["test"]] == c).sum()) for c in (0, 1)] == [13, 6]


def test_grouped_split_never_splits_a_group():
    for n, fractions, seed, order, g in cases(150, 3, 200):
        groups = torch.randint(0, n, (int(torch.randint(n, 4 * n + 1, (1,), generator=g)),), generator=g)
        num_groups = torch.unique(groups).numel()
        try:
            parts = grouped_split(groups, fractions, seed, order=order)
        except ValueError as err:
            assert "cannot fill" in str(err) and num_groups <= 3
            continue
        assert_partition(parts, groups.numel())
        owners = {s: set(groups[p].tolist()) for s, p in parts.items()}
        assert not (
            owners["train"] & owners["val"] or owners["train"] & owners["test"] or owners["val"] & owners["test"]
        )
        want = split_sizes(num_groups, fractions, min_held_out=1)
        assert {s: len(o) for s, o in owners.items()} == want


def test_grouped_split_with_a_held_out_count_is_the_speaker_split():
    speakers = torch.arange(20)
    parts = grouped_split(speakers, {"val": 4}, 7, order=("val", "train", "test"))
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(7))
    assert parts["val"].tolist() == sorted(perm[:4].tolist()) and parts["test"].numel() == 0
    assert_partition(parts, 20)


def test_bad_fractions_orders_and_empty_splits_raise():
    with pytest.raises(ValueError, match="fractions must be"):
        random_split(10, (0.5, 0.5), 0)
    with pytest.raises(ValueError, match="fractions must be"):
        stratified_split(torch.zeros(10), (0.5, 0.3, 0.3), 0)
    with pytest.raises(ValueError, match="order must name"):
        random_split(10, (0.6, 0.2, 0.2), 0, order=("train", "train", "test"))
    with pytest.raises(ValueError, match=r"the val split is empty \(train=2, val=0, test=2 of 4 graphs\)"):
        stratified_split(torch.tensor([0, 0, 1, 1]), (0.6, 0.1, 0.3), 0, order=("test", "val", "train"), what="graphs")
    with pytest.raises(ValueError, match="2 patients cannot fill"):
        grouped_split(torch.tensor([0, 0, 1]), (0.8, 0.1, 0.1), 0, what="patients")

"""Golden values for the shared losses and FF-G2M's edge losses, each worked by hand with math."""

from __future__ import annotations

import math

import pytest
import torch

from modules.core.losses import cosine_distance, feature_mse, feature_smooth_l1, kd_kl
from modules.graph_mlp import hfd_loss, lfd_loss


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_kd_kl_temperature_one():
    # teacher logits (ln 3, 0) -> (0.75, 0.25); student (0, 0) -> uniform.
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    value = kd_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]))
    assert value.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.1308121, abs=1e-6)


def test_kd_kl_temperature_scales_by_t_squared_and_averages_rows():
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0], [1.0, 0.0]])  # second row: identical, KL 0
    p_t = [math.sqrt(3) / (math.sqrt(3) + 1), 1 / (math.sqrt(3) + 1)]  # softmax((ln 3)/2, 0)
    row = kl(p_t, [0.5, 0.5])
    assert kd_kl(student, teacher, temperature=2.0).item() == pytest.approx(4 * row / 2, abs=1e-6)
    assert kd_kl(student, teacher, temperature=2.0, scale_t2=False).item() == pytest.approx(row / 2, abs=1e-6)


def test_feature_losses():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert cosine_distance(a, b).item() == pytest.approx((1.0 + (1 - 1 / math.sqrt(2))) / 2, abs=1e-6)
    assert feature_mse(torch.tensor([1.0, 2.0]), torch.zeros(2)).item() == pytest.approx(2.5)
    # smooth L1, beta 1: 0.5 * 0.5^2 for |d| = 0.5, |d| - 0.5 for |d| = 2.
    assert feature_smooth_l1(torch.tensor([0.5, 2.0]), torch.zeros(2)).item() == pytest.approx((0.125 + 1.5) / 2)


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"kd_kl: student shape \(1, 3\) != teacher shape \(1, 2\)"):
        kd_kl(torch.zeros(1, 3), torch.zeros(1, 2))


def test_lfd_hfd_golden_on_a_two_node_graph():
    # Nodes 0 and 1 joined by one undirected edge.
    h = [[0.0, 0.0], [1.0, 0.0]]  # student logits
    z = [[2.0, 0.0], [0.0, 1.0]]  # teacher logits
    edges = torch.tensor([[0, 1], [1, 0]])
    loops = torch.tensor([[0, 1, 0, 1], [1, 0, 0, 1]])
    # LFD: for each (j -> i) in E+, KL(p_T(j) || p_S(i)), averaged over the 4 rows.
    pairs = [(0, 1), (1, 0), (0, 0), (1, 1)]
    lfd = sum(kl(softmax(z[j]), softmax(h[i])) for j, i in pairs) / 4
    got = lfd_loss(torch.tensor(h), torch.tensor(z), loops)
    assert got.item() == pytest.approx(lfd, abs=1e-6)
    # HFD: |h0 - h1| = (1, 0), |z0 - z1| = (2, 1) on both directed edges; tau = 1.5, no tau^2.
    tau = 1.5
    hfd = kl(softmax([2 / tau, 1 / tau]), softmax([1 / tau, 0.0]))
    got = hfd_loss(torch.tensor(h), torch.tensor(z), edges, tau)
    assert got.item() == pytest.approx(hfd, abs=1e-6)


def test_kd_kl_per_row_and_cosine_distance_per_position_match_hand_worked_values():
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    # row 0: p_t = (3/4, 1/4), p_s = (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.130812; row 1: equal -> 0
    rows = kd_kl(student, teacher, reduction="none")
    assert torch.allclose(rows, torch.tensor([0.130812, 0.0]), atol=1e-6)
    assert torch.isclose(kd_kl(student, teacher), rows.mean())
    a, b = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    assert torch.allclose(cosine_distance(a, b, reduction="none"), torch.tensor([1.0, 0.0]), atol=1e-6)
    with pytest.raises(ValueError, match="reduction must be one of"):
        cosine_distance(a, b, reduction="sum")

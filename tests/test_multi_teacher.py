"""The core's multi-teacher set: per-teacher sources, projectors and normalisation; missing features masked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modules.core import Teacher, TeacherSet, masked_cosine_distance, masked_mean


def test_masked_mean_ignores_invalid_rows_and_is_zero_without_any():
    values = torch.tensor([1.0, 100.0, 3.0], requires_grad=True)
    assert masked_mean(values, torch.tensor([True, False, True])).item() == pytest.approx(2.0)
    none = masked_mean(values, torch.zeros(3, dtype=torch.bool))
    assert none.item() == 0.0
    none.backward()  # still part of the graph
    with pytest.raises(ValueError, match="same shape"):
        masked_mean(values, torch.ones(2, dtype=torch.bool))


def test_missing_teacher_rows_do_not_pull_the_student():
    torch.manual_seed(0)
    s, t = torch.randn(4, 8), torch.randn(4, 8)
    t[1] = 0.0
    ts = TeacherSet({"exo": None}, {"exo": 8}, student_dim=8, projector="identity")
    loss = ts.cosine_losses(s, {"features": {"exo": t}})["exo"]
    keep = torch.tensor([0, 2, 3])
    assert loss.item() == pytest.approx(masked_cosine_distance(s[keep], t[keep], torch.ones(3, dtype=bool)).item())
    # an explicit mask wins over the zero-row rule
    explicit = ts.cosine_losses(s, {"features": {"exo": t}, "mask": {"exo": torch.tensor([1, 1, 0, 0]).bool()}})
    assert explicit["exo"].item() == pytest.approx(
        masked_cosine_distance(s[:2], t[:2], torch.ones(2, dtype=bool)).item()
    )


def test_each_teacher_has_its_own_source_width_projector_and_normalisation():
    torch.manual_seed(0)
    net = Teacher(nn.Linear(5, 3))
    ts = TeacherSet(
        {"depth": net, "skeleton": None},
        {"depth": 3, "skeleton": 6},
        student_dim=4,
        input_keys={"depth": "depth_view"},
        mean={"skeleton": [1.0] * 6},
        std={"skeleton": [2.0] * 6},
    )
    batch = {"depth_view": torch.randn(2, 5), "features": {"skeleton": torch.full((2, 6), 3.0)}}
    targets = ts.targets(batch)
    assert targets["depth"][0].shape == (2, 3) and torch.allclose(targets["skeleton"][0], torch.ones(2, 6))
    student = torch.randn(2, 4, requires_grad=True)
    losses = ts.cosine_losses(student, batch)
    sum(losses.values()).backward()
    assert ts.projectors["depth"].weight.shape == (3, 4) and ts.projectors["skeleton"].weight.shape == (6, 4)
    assert all(p.grad is None for p in net.parameters())  # the teacher network stays frozen
    assert student.grad.abs().sum() > 0


def test_bad_teacher_sets_are_refused_by_name():
    with pytest.raises(ValueError, match=r"no feature width given for teacher\(s\) \['b'\]"):
        TeacherSet({"a": None, "b": None}, {"a": 2}, student_dim=2)
    with pytest.raises(ValueError, match="need input_keys"):
        TeacherSet({"a": Teacher(nn.Linear(2, 2))}, {"a": 2}, student_dim=2)
    with pytest.raises(KeyError, match="precomputed teacher 'a'"):
        TeacherSet({"a": None}, {"a": 2}, student_dim=2).targets({"features": {}})

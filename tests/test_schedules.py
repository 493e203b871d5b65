"""MAE's warmup + half-cycle cosine, per epoch: values worked by hand."""

import pytest
import torch

from modules.core.schedules import WarmupCosine


def test_warmup_then_half_cycle_cosine_worked_by_hand():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = WarmupCosine(opt, warmup_epochs=2, max_epochs=6, min_lr_ratio=0.0)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # warmup at epoch midpoints: 0.25, 0.75; then 0.5 * (1 + cos(pi * t)) for t = 0, 1/4, 2/4, 3/4
    assert lrs == pytest.approx([0.25, 0.75, 1.0, 0.853553, 0.5, 0.146447], abs=1e-6)
    with pytest.raises(ValueError, match="need 0 <= warmup_epochs < max_epochs"):
        WarmupCosine(opt, warmup_epochs=6, max_epochs=6)

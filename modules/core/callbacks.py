"""Best-epoch selection where a tie counts as an improvement (``val >= best``).

Official research loops (FF-G2M ``train_and_eval.py``, GLNN ``train_student.py``) keep the *later*
of two epochs with equal validation accuracy and reset early stopping on a tie; Lightning's
callbacks use strict comparisons. On Planetoid, where validation accuracy moves in steps of 1/500,
ties are common and the choice changes the reported test accuracy.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

TIE_IS_BETTER = {"min": torch.le, "max": torch.ge}


class BestOrEqualCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also saves when the monitored value ties the best one."""

    def check_monitor_top_k(self, trainer: L.Trainer, current: torch.Tensor | None = None) -> bool:
        if current is None:
            return False
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        better = TIE_IS_BETTER[self.mode](current, self.best_k_models[self.kth_best_model_path])
        return trainer.strategy.reduce_boolean_decision(bool(better))


class PatientEarlyStopping(EarlyStopping):
    """``EarlyStopping`` whose patience counter also resets on a tie with the best value."""

    mode_dict = TIE_IS_BETTER

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The parent derives these from "is the op torch.gt / torch.lt"; set them for >= and <=.
        self.min_delta = abs(self.min_delta) * (1 if self.mode == "max" else -1)
        self.best_score = torch.tensor(-torch.inf if self.mode == "max" else torch.inf)

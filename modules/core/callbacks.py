"""Callbacks: best-epoch selection where a tie counts as an improvement (``val >= best``), and a random state
that survives a resume (:class:`ResumableRandomState`).

On ties: official research loops (FF-G2M ``train_and_eval.py``, GLNN ``train_student.py``) keep the *later*
of two epochs with equal validation accuracy and reset early stopping on a tie; Lightning's
callbacks use strict comparisons. On Planetoid, where validation accuracy moves in steps of 1/500,
ties are common and the choice changes the reported test accuracy.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

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


class ResumableRandomState(Callback):
    """Keeps the global random state (torch, CUDA, numpy, Python) in every checkpoint and restores it when a fit
    resumes from one, so a fit interrupted at an epoch boundary and resumed draws the same crops, masks and
    dropout as one that never stopped (the shuffled loaders' own generators are the datamodule's checkpoint
    state: ``datamodules.base.BaseDataModule.state_dict``). Without it a resumed fit restarts the generators
    from ``seed_everything`` and continues as another run. The state is held as tensors, ints and lists (a
    checkpoint loaded with ``weights_only`` keeps it) and applied at ``on_train_start``, after everything a
    resumed fit builds first (the network, the sanity check) has drawn its numbers; a test or validation from a
    checkpoint leaves the generators alone. Under DDP the state saved is rank 0's."""

    def __init__(self) -> None:
        self._resumed: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, state, py_gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": [version, list(state), py_gauss],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._resumed = self._resumed, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, py_state, py_gauss = state["python"]
        random.setstate((version, tuple(py_state), py_gauss))

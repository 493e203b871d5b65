"""Fit the toy distillation task under FSDP on every visible GPU (Lightning's FSDP needs CUDA and
relaunches this script for the other ranks); rank 0 writes whether the teacher stayed frozen, unmoved
and in eval to OUT/result.txt for tests/test_core.py to check."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]

from conftest import ToyData, ToyDistill, ToyNet  # noqa: E402


def main(out: Path) -> None:
    torch.manual_seed(0)
    teacher = ToyNet()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = ToyDistill(student=ToyNet(), teacher=teacher)
    trainer = L.Trainer(
        accelerator="gpu",
        devices=torch.cuda.device_count(),
        strategy="fsdp",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(out),
    )
    trainer.fit(module, datamodule=ToyData())
    moved = [k for k, v in module.teacher.network.state_dict().items() if not torch.equal(v, before[k])]
    frozen = all(not p.requires_grad for p in module.teacher.parameters())
    if trainer.global_rank == 0:
        result = f"world={trainer.world_size} frozen={frozen} moved={moved} eval={not module.teacher.training}"
        (out / "result.txt").write_text(result)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

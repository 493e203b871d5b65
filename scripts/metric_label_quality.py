"""How good are the labels each MetricAnything student arm learns from? The training scenes' noisy sources (the
student trained on the sources directly) against the prompt teacher's dense depth (the distilled student), both
scored against the exact depth, per source type:

    python scripts/metric_label_quality.py [--samples 4000] [--density 0.01] [--teacher zoo:NAME]

Per source type and pooled: the share of exact-depth pixels the label covers; pooled AbsRel and SILog of the label
against the exact depth on the pixels it covers; and the per-image metric scale of the label, exp(median of log(label /
exact)) over the image's covered pixels, as its mean log (a bias) and the std of the log across images (a per-image
scale error, which SILog with lambda 0.85 penalises only at 0.15 and AbsRel in full). The teacher is prompted as the
distilled student's training prompts it: ``--density`` of each image's own source, a fixed draw per run. Scenes are
the distil recipe's training set (scene seed 0, 64 x 64, every training band; ``--samples`` its first N).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import zoo  # noqa: E402
from datamodules.images import MetricDepthDataModule  # noqa: E402
from modules.metric_depth import SOURCE_KINDS, PooledDepthMetric, sample_prompt  # noqa: E402


class LabelScore:
    """Coverage, pooled AbsRel and SILog, and per-image log-scale statistics of one label kind in one group."""

    def __init__(self) -> None:
        self.absrel, self.silog = PooledDepthMetric("absrel"), PooledDepthMetric("silog")
        self.covered = self.total = 0
        self.log_scales: list[float] = []

    def update(self, label: torch.Tensor, depth: torch.Tensor) -> None:
        covered = (label > 0) & (depth > 0)
        self.covered += int(covered.sum())
        self.total += int((depth > 0).sum())
        if not bool(covered.any()):
            return
        target = torch.where(covered, depth, torch.zeros_like(depth))
        self.absrel.update(label.clamp(min=1e-6), target)
        self.silog.update(label.clamp(min=1e-6), target)
        self.log_scales.append(float((label[covered].log() - depth[covered].log()).median()))

    def row(self) -> list[str]:
        s = torch.tensor(self.log_scales or [math.nan], dtype=torch.float64)
        return [
            f"{100 * self.covered / max(self.total, 1):6.1f}%",
            f"{float(self.absrel.compute()):.3f}",
            f"{float(self.silog.compute()):.3f}",
            f"{float(s.mean()):+.3f}",
            f"{float(s.std()) if len(s) > 1 else math.nan:.3f}",
        ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=4000, help="training scenes scored (the recipe has 4,000)")
    p.add_argument("--density", type=float, default=0.01, help="prompt share of the source (label_density)")
    p.add_argument("--teacher", default="zoo:metric-prompt-teacher-scenes")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)

    dm = MetricDepthDataModule(size=(64, 64), train_samples=args.samples, batch_size=args.batch_size)
    teacher = zoo.load(args.teacher.removeprefix("zoo:")).eval()
    groups = ["all", *SOURCE_KINDS]
    scores = {(label, g): LabelScore() for label in ("source", "teacher") for g in groups}
    generator = torch.Generator().manual_seed(0)
    loader = dm.loader(dm.dataset("train"), shuffle=False)
    with torch.no_grad():
        for batch in loader:
            source, depth = batch["source"], batch["depth"]
            usable = (source > 0).flatten(1).any(1)
            dense = torch.zeros_like(source)
            if bool(usable.any()):
                prompt = sample_prompt(source[usable], args.density, generator=generator)
                dense[usable] = teacher(batch["image"][usable], prompt)
            for i in range(len(source)):
                for g in ("all", SOURCE_KINDS[int(batch["kind"][i])]):
                    scores["source", g].update(source[i], depth[i])
                    if bool(usable[i]):
                        scores["teacher", g].update(dense[i], depth[i])

    head = ["label", "group", "covers", "AbsRel", "SILog", "log-scale mean", "log-scale std"]
    rows = [[label, g, *scores[label, g].row()] for g in groups for label in ("source", "teacher")]
    widths = [max(len(str(r[j])) for r in [head, *rows]) for j in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
    print(f"({args.samples} training scenes; the teacher prompted with {100 * args.density:g}% of each own source)")


if __name__ == "__main__":
    main()

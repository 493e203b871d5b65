"""Figures for the MetricAnything cards: real frames with ground truth, the prompt teacher and the prompt-free
student side by side, and the teacher's scaling and prompt-density curves.

    python scripts/plot_metric_depth.py [--entry metric-student-scenes] [--keep runs/publish/ENTRY] [--per-dataset 2]

``frames``: the first ``--per-dataset`` real frames of each dataset (Middlebury 2014, NYU, KITTI) in the entry's
test set: the image, its ground-truth depth (invalid pixels black), the teacher ``zoo:metric-prompt-teacher-scenes``
prompted with 1% of the ground truth (as its real-frame rows are), and the student from the image and its focal
length alone, all on the ground truth's colour range; each panel's AbsRel in its title. The student is
``--student`` (``zoo:NAME``, a ``.safetensors`` path or a Lightning ``.ckpt``), else the publish arm's seed-0
checkpoint in ``--keep``. ``curves``: AbsRel (mean and std over the recorded seeds) of the teacher trained on 1, 2
and 4 source types and on 4x the data, and of the same teachers prompted with 0.1-3% of the own source (the test's
``d*pct`` metrics) with the clean-prompt bound, on generated and real frames, read from the metafile. Writes
docs/figures/<entry>-frames.png and -curves.png.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cli  # noqa: E402
import zoo  # noqa: E402
from modules.metric_depth import PromptDepthTeacher, density_tag  # noqa: E402
from zoo import evidence, export, publish, registry  # noqa: E402

TEACHER = "zoo:metric-prompt-teacher-scenes"
REFERENCE = "teacher, 1% prompts from the image's own source"
SCALING = [  # (arm, x label)
    ("teacher scaling: 1 source type (LiDAR)", "1 source"),
    ("teacher scaling: 2 source types (LiDAR, MVS)", "2 sources"),
    (REFERENCE, "4 sources"),
    ("teacher scaling: 4x data (16,000 scenes, the same steps)", "4 sources,\n4x data"),
]
STUDENTS = [("student on the noisy sources directly", "--"), ("student distilled from the teacher (SILog)", ":")]
DENSITIES = [0.1, 0.3, 1, 3]  # % of the own source's pixels, the teacher recipe's test_densities


def load_network(source: str):
    return export.load_student(source) if source.endswith(".ckpt") else zoo.load(source)


def absrel(pred: torch.Tensor, depth: torch.Tensor) -> float:
    valid = depth > 0
    return float(((pred[valid] - depth[valid]).abs() / depth[valid]).mean())


def real_frames(name: str, per_dataset: int) -> list[dict]:
    """The first ``per_dataset`` real test frames of each dataset, as the reader gives them (batch 1)."""
    arm = registry.get(name, pending=True).meta.evidence.arm(registry.get(name, pending=True).meta.publish.arm)
    data = cli.lightning_main([*(f"--config={c}" for c in arm.config), *arm.args], run=False).datamodule
    data.setup("test")
    loaders = data.test_dataloader()
    if not isinstance(loaders, list):
        raise SystemExit(f"{name}'s publish arm has no real frames (give the data real_roots and $DISTILLZOO_DATA)")
    picked: dict[str, list[dict]] = {}
    for batch in loaders[1]:
        frames = picked.setdefault(batch["dataset"][0], [])
        if len(frames) < per_dataset:
            frames.append(batch)
    return [b for frames in picked.values() for b in frames]


def plot_frames(name: str, student_source: str, per_dataset: int, out: Path) -> None:
    teacher = PromptDepthTeacher(load_network(TEACHER)).eval()
    student = load_network(student_source).eval()
    frames = real_frames(name, per_dataset)
    fig, axes = plt.subplots(len(frames), 4, figsize=(11, 2.1 * len(frames)), squeeze=False, layout="constrained")
    for row, batch in zip(axes, frames):
        depth = batch["depth"][0]
        with torch.no_grad():
            taught = teacher.predict_depth(batch)[0][0]
            alone = student(batch["image"], batch["f_px"])[0]
        valid = depth[depth > 0]
        lo, hi = torch.quantile(valid, 0.02).item(), torch.quantile(valid, 0.98).item()
        shown = depth.masked_fill(depth <= 0, float("nan"))
        row[0].imshow(batch["image"][0].permute(1, 2, 0).numpy())
        row[0].set_title(f"{batch['dataset'][0]}, f = {float(batch['f_px'][0]):.0f} px", fontsize=8)
        panels = [
            ("ground truth (m)", shown, None),
            ("teacher, 1% GT prompt", taught, absrel(taught, depth)),
            ("student, image + f_px", alone, absrel(alone, depth)),
        ]
        for ax, (title, image, score) in zip(row[1:], panels):
            shown_image = ax.imshow(image.numpy(), cmap="turbo", vmin=lo, vmax=hi)
            ax.set_facecolor("black")
            ax.set_title(title + ("" if score is None else f": AbsRel {score:.3f}"), fontsize=8)
        fig.colorbar(shown_image, ax=row[1:].tolist(), fraction=0.02, pad=0.01)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{name}: real frames, metric depth without alignment", fontsize=9)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def recorded(name: str, arm: str, metric: str) -> list[float]:
    """``metric`` of each recorded run of ``arm`` (none yet while the grid runs); an arm the entry lacks raises."""
    meta = registry.get(name, pending=True).meta
    meta.evidence.arm(arm)  # a renamed arm fails here, not as a silently missing point
    runs = meta.results.runs.get(arm, []) if meta.results else []
    return [r.test[metric] for r in runs if metric in r.test]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def plot_curves(name: str, out: Path) -> None:
    fig, (scaling, density) = plt.subplots(1, 2, figsize=(10, 4.8))
    drawn = False
    for prefix, label, marker in (("", "generated, held-out focal lengths", "o"), ("real_", "real frames", "s")):
        points = [(x, recorded(name, arm, f"test/{prefix}absrel")) for x, (arm, _) in enumerate(SCALING)]
        points = [(x, mean_std(v)) for x, v in points if v]
        if points:
            xs, stats = zip(*points)
            scaling.errorbar(xs, [m for m, _ in stats], [s for _, s in stats], marker=marker, capsize=3, label=label)
            drawn = True
        sweep = [(d, recorded(name, REFERENCE, f"test/{prefix}{density_tag(d / 100)}_absrel")) for d in DENSITIES]
        sweep = [(d, mean_std(v)) for d, v in sweep if v]
        if sweep:
            ds, stats = zip(*sweep)
            prompted = "prompts from the ground truth" if prefix else "own source"
            line = density.errorbar(ds, [m for m, _ in stats], [s for _, s in stats], marker=marker, capsize=3,
                                    label=f"{label}, {prompted}")  # fmt: skip
            clean = recorded(name, REFERENCE, f"test/{prefix}clean_absrel") if not prefix else []
            if clean:
                m, s = mean_std(clean)
                density.errorbar([1], [m], [s], marker="*", ms=10, ls="none", color=line[0].get_color(),
                                 label=f"{label}, 1% clean depth (bound)")  # fmt: skip
            drawn = True
    for arm, style in STUDENTS:  # the prompt-free students' level on the generated test, for scale
        values = recorded(name, arm, "test/absrel")
        if values:
            density.axhline(statistics.fmean(values), color="grey", ls=style, lw=1, label=f"{arm}, generated")
    if not drawn:
        raise SystemExit(f"{name} has no recorded teacher runs yet (run zoo evidence {name} first)")
    scaling.set_xticks(range(len(SCALING)), [x for _, x in SCALING], fontsize=8)
    scaling.set_title("teacher scaling (1% prompts)", fontsize=9)
    density.set_xscale("log")
    density.set_xticks(DENSITIES, [f"{d:g}%" for d in DENSITIES])
    density.set_title("teacher prompt density (4 sources)", fontsize=9)
    for ax in (scaling, density):
        ax.set_ylabel("AbsRel (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    fig.suptitle(f"{name}: mean ± std over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entry", default="metric-student-scenes")
    parser.add_argument("--keep", type=Path, help="the publish's kept checkpoints (default runs/publish/ENTRY)")
    parser.add_argument("--student", help="zoo:NAME, a .safetensors path or a .ckpt (default: the kept publish arm)")
    parser.add_argument("--per-dataset", type=int, default=2)
    args = parser.parse_args()
    figures = ROOT / "docs" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    meta = registry.get(args.entry, pending=True).meta
    keep = args.keep or publish.keep_dir(args.entry)
    student = args.student or str(evidence.kept_checkpoint(keep, meta.evidence.arm(meta.publish.arm)))
    if not student.startswith("zoo:") and not Path(student).is_file():
        raise SystemExit(f"no student at {student}: run zoo publish {args.entry}, or pass --student")
    plot_frames(args.entry, student, args.per_dataset, figures / f"{args.entry}-frames.png")
    plot_curves(args.entry, figures / f"{args.entry}-curves.png")


if __name__ == "__main__":
    main()

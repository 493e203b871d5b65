"""The README's main job, on the embedded default graph (no download), in about a minute on a laptop CPU:

1. train a GCN teacher (recipes/graph_mlp/tiny_teacher.yaml) and export it into a scratch zoo;
2. distil it into an MLP with FF-G2M (recipes/graph_mlp/tiny.yaml, teacher = zoo:quickstart-gcn),
   and train the same MLP without the teacher (one flag: --model.init_args.mode ce);
3. export the distilled student, load it back with zoo.load and print the three test accuracies.

    python scripts/quickstart.py [--workdir runs/quickstart]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


def fit(recipe: str, workdir: Path, *extra: str):
    import cli

    return cli.main(["fit", "--config", str(ROOT / recipe), f"--trainer.default_root_dir={workdir}", *QUIET, *extra])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "quickstart")
    args = parser.parse_args()
    work = args.workdir.resolve()
    os.environ["DISTILLZOO_ENTRIES"] = str(work / "zoo")  # a scratch zoo: the repo's entries stay untouched

    import zoo
    from datamodules.graphs import PlanetoidDataModule
    from zoo import export

    meta = {"method": "FF-G2M", "task": "node-classification", "data": {"name": "embedded contextual SBM"}}
    teacher_run = fit("recipes/graph_mlp/tiny_teacher.yaml", work / "teacher")
    export.export(
        teacher_run.trainer.checkpoint_callback.best_model_path,
        "quickstart-gcn",
        meta,
        work / "weights",
        overwrite=True,
    )
    teacher_flag = "--model.init_args.teacher.init_args.weights=zoo:quickstart-gcn"
    alone = fit("recipes/graph_mlp/tiny.yaml", work / "mlp", teacher_flag, "--model.init_args.mode=ce")
    distilled = fit("recipes/graph_mlp/tiny.yaml", work / "ffg2m", teacher_flag)
    export.export(
        distilled.trainer.checkpoint_callback.best_model_path,
        "quickstart-ffg2m-mlp",
        meta,
        work / "weights",
        overwrite=True,
    )

    # Score the networks as a user would get them from the zoo, on the held-out test nodes.
    data = PlanetoidDataModule(root=None)
    data.setup("test")
    graph = next(iter(data.test_dataloader()))
    teacher, student = zoo.load("quickstart-gcn"), zoo.load("quickstart-ffg2m-mlp")
    with torch.no_grad():
        acc_teacher = (teacher(graph.x, graph.edge_index).argmax(-1) == graph.y)[graph.test_mask].float().mean()
        acc_student = (student(graph.x).argmax(-1) == graph.y)[graph.test_mask].float().mean()
    rows = [
        ("GCN teacher (zoo:quickstart-gcn)", float(acc_teacher)),
        ("MLP without teacher", alone.test_metrics["test/acc"]),
        ("MLP distilled with FF-G2M (zoo.load)", float(acc_student)),
    ]
    print(f"\nTest accuracy on the embedded default graph ({int(graph.test_mask.sum())} held-out nodes, seed 0):")
    for name, acc in rows:
        print(f"  {name:40s} {100 * acc:6.2f}%")
    print(f"Scratch zoo: {work / 'zoo'}; the student takes raw node features: zoo.load(name)(data.x)")


if __name__ == "__main__":
    main()

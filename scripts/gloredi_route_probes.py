"""Cheap probes of the GloReDi evidence routes (issue 21) before an evidence grid is spent on one: each
prints the student's, its FBP input's, the teacher's and the teacher's own input's test PSNR, so it shows at
once whether the teacher beats its input and the student alone (the evidence gates).

    python scripts/gloredi_route_probes.py B      # official global skip, zero-initialised residual head
    python scripts/gloredi_route_probes.py A      # self-reconstruction warm start shared by teacher and student
    python scripts/gloredi_route_probes.py A2     # 32x32, 9 vs 18 views, batch 8, 100 epochs (10,000 steps)
    python scripts/gloredi_route_probes.py A2 --views 6   # the same with 6 vs 12 views (the teacher sees 2x)

Both at the CPU scale of recipes/gloredi/cpu.yaml with 10 epochs (StepLR every 3); A first trains the
self-reconstruction stage for ``--selfrecon-epochs`` on the full-view images and starts both arms from it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cli  # noqa: E402
from zoo import export  # noqa: E402

BASE = ["--config=recipes/gloredi/gloredi.yaml", "--config=recipes/gloredi/cpu.yaml", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--model.init_args.lr_scheduler.init_args.step_size=3"]  # fmt: skip
SHOWN = ("test/psnr", "test/psnr_fbp", "test/psnr_teacher", "test/psnr_teacher_input")


def fit(args: list[str], workdir: Path) -> cli.DistillCLI:
    return cli.main(["fit", *BASE, *args, f"--trainer.default_root_dir={workdir}"])


def report(label: str, result: cli.DistillCLI) -> None:
    shown = {k.split("/")[1]: round(result.test_metrics[k], 2) for k in SHOWN if k in result.test_metrics}
    print(f"[probe] {label}: {shown}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("route", choices=["A", "A2", "B"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--selfrecon-epochs", type=int, default=5)
    parser.add_argument("--views", type=int, default=9, help="A2: the student's views (the teacher sees twice as many)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gloredi-probe-") as tmp:
        work = Path(tmp)
        extra = [f"--trainer.max_epochs={opts.epochs}"]
        if opts.route == "B":
            extra.append("--model.init_args.student.init_args.global_skip=true")
        elif opts.route == "A2":  # longer training where the 64-px probes stopped: 10,000 steps at batch 8
            extra = ["--trainer.max_epochs=100", "--data.init_args.image_size=32",
                     f"--data.init_args.views={opts.views}", f"--data.init_args.teacher_views={2 * opts.views}",
                     "--data.init_args.batch_size=8",
                     "--model.init_args.lr_scheduler.init_args.step_size=30",
                     "--model.init_args.finetune_epochs=5"]  # fmt: skip
        else:
            selfrecon = fit(["--model.init_args.distill=none", "--model.init_args.input_key=full",
                             f"--trainer.max_epochs={opts.selfrecon_epochs}", "--model.init_args.finetune_epochs=0"],
                            work / "selfrecon")  # fmt: skip
            report("self-reconstruction (full view in, full view out)", selfrecon)
            meta = {"method": "GloReDi", "task": "self-reconstruction probe"}
            weights = export.export(selfrecon.best_ckpt, "selfrecon-probe", meta, work / "weights", work / "entries")
            extra.append(f"--model.init_args.init_weights={weights}")
        for arm in ("cosine", "none"):
            report(f"route {opts.route}, distill={arm}", fit([f"--model.init_args.distill={arm}", *extra], work / arm))


if __name__ == "__main__":
    main()

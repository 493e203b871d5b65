"""Figure for the GloReDi card: held-out slices as the 18-view FBP input, the student trained without the
teacher, the GloReDi student, and the 180-view reference, each with its error map against the reference;
where the recipe has an out-of-family test set (``ood_phantoms``), its body phantoms in further rows.

    python scripts/plot_gloredi.py --baseline runs/publish/gloredi-student-alone/checkpoints/best.ckpt
                                   [--entry gloredi-phantoms-18v] [--slices 0 1 2]

``--baseline`` is a checkpoint of the entry's recipe fitted with ``--model.init_args.distill=none``. The
data are rebuilt by the CLI from the GloReDi arm's configs and overrides (same phantoms, same split).
PSNR / SSIM in the titles use the official HU window, as the test metrics do. Writes docs/figures/<entry>-slices.png.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cli  # noqa: E402
import zoo  # noqa: E402
from zoo.export import student_tensors  # noqa: E402
from zoo.units import hu_to_mu, hu_window, mu_to_hu  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entry", default="gloredi-phantoms-18v")
    parser.add_argument("--baseline", required=True, help="Lightning checkpoint of the student trained alone")
    parser.add_argument("--slices", type=int, nargs="+", default=[0, 1, 2], help="indices into the test split")
    parser.add_argument("--ood-slices", type=int, nargs="*", default=[0, 1],
                        help="indices into the out-of-family test set, where the recipe has one")  # fmt: skip
    args = parser.parse_args()

    entry = zoo.get(args.entry)
    gloredi = zoo.load(args.entry).eval()
    alone = copy.deepcopy(gloredi)
    alone.load_state_dict(student_tensors(torch.load(args.baseline, map_location="cpu", weights_only=True)))
    distilled_arm = next(a for a in entry.meta.evidence.arms if a.arm.endswith("(GloReDi)"))
    configs = [f"--config={c}" for c in distilled_arm.config]
    dm = cli.lightning_main([*configs, *distilled_arm.args], run=False).datamodule
    dm.setup()
    loaders = dm.test_dataloader()
    loaders = loaders if isinstance(loaders, list) else [loaders]  # with ood_phantoms: the body phantoms second
    test = loaders[0].dataset
    items = [test[i] for i in args.slices]
    ood = [loaders[1].dataset[i] for i in args.ood_slices] if len(loaders) > 1 else []
    families = ["head"] * len(items) + ["body (out of family)"] * len(ood)
    batch = torch.utils.data.default_collate([{k: v for k, v in x.items() if k != "ood"} for x in items + ood])
    rows = len(families)

    with torch.no_grad():
        columns = [
            (f"FBP, {dm.views} views (input)", batch["sparse"]),
            # the published networks take and return HU (the input contract); back to mu for the columns
            ("student alone", hu_to_mu(alone(mu_to_hu(batch["sparse"])), clip=False)),
            ("GloReDi student", hu_to_mu(gloredi(mu_to_hu(batch["sparse"])), clip=False)),
            (f"reference: FBP, {dm.full_views} views", batch["full"]),
        ]
    ref = hu_window(batch["full"])
    fig, axes = plt.subplots(2 * rows, len(columns), figsize=(2.4 * len(columns), 4.8 * rows))
    for r in range(rows):
        for c, (title, image) in enumerate(columns):
            shown = hu_window(image[r : r + 1])
            ax, err_ax = axes[2 * r, c], axes[2 * r + 1, c]
            ax.imshow(shown[0, 0], cmap="gray", vmin=0, vmax=1)
            if c < len(columns) - 1:
                psnr = peak_signal_noise_ratio(shown, ref[r : r + 1], data_range=1.0).item()
                ssim = structural_similarity_index_measure(shown, ref[r : r + 1], data_range=1.0).item()
                label = f"{families[r]}: {title}" if c == 0 else title
                ax.set_title(f"{label}\n{psnr:.2f} dB, SSIM {ssim:.3f}", fontsize=8)
                error = (mu_to_hu(image[r, 0]) - mu_to_hu(batch["full"][r, 0])).abs()
                err_ax.imshow(error, cmap="inferno", vmin=0, vmax=300)
                err_ax.set_title("|error| HU (0-300)", fontsize=8)
            else:
                ax.set_title(title, fontsize=8)
                err_ax.set_visible(False)
            for a in (ax, err_ax):
                a.set_xticks([])
                a.set_yticks([])
    fig.suptitle(f"{args.entry}: held-out phantoms (simulated, window [-1000, 2000] HU)", fontsize=10)
    # (the body rows, where shown, are of a family the networks never saw in training)
    fig.tight_layout()
    out = ROOT / "docs" / "figures" / f"{args.entry}-slices.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

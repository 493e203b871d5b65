"""Figures for the DistilCodec card: log-mel spectrograms of one held-out utterance (original, teacher
reconstruction, student reconstruction) and the student's code-usage histogram over the test set.

    python scripts/plot_codec.py [--teacher codec-teacher-librispeech] [--student distilcodec-librispeech]
                                 [--root data:librispeech] [--utterance 0]

Writes docs/figures/<student>-spectrograms.png and docs/figures/<student>-code-usage.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import zoo  # noqa: E402
from datamodules.audio import SpeechDataModule  # noqa: E402
from modules.codec import CodeUsage  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", default="codec-teacher-librispeech")
    parser.add_argument("--student", default="distilcodec-librispeech")
    parser.add_argument("--root", default="data:librispeech", help="a path, or data:NAME in $DISTILLZOO_DATA")
    parser.add_argument("--utterance", type=int, default=0)
    args = parser.parse_args()
    teacher, student = zoo.load(args.teacher).eval(), zoo.load(args.student).eval()
    dm = SpeechDataModule(root=args.root, train_dir="train-clean", max_train_files=140)
    dm.setup()
    out_dir = ROOT / "docs" / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)

    mel = student.mel  # the codec's own front end: what its encoder sees
    wav = dm.test_set[args.utterance].audio[: 4 * student.sample_rate].view(1, 1, -1)
    with torch.no_grad():
        rows = [
            ("original", wav),
            (f"teacher ({teacher.bits_per_frame * teacher.frame_rate / 1000:g} kbps)", teacher(wav)["audio"]),
            (f"student ({student.bits_per_frame * student.frame_rate:g} bps)", student(wav)["audio"]),
        ]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for ax, (title, audio) in zip(axes, rows):
        ax.imshow(mel(audio)[0].numpy(), origin="lower", aspect="auto", cmap="magma", vmin=-11, vmax=2)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("mel bin")
    axes[-1].set_xlabel(f"frame ({student.frame_rate:g} per s)")
    fig.suptitle(f"{Path(dm.test_set[args.utterance].path).name} (LibriSpeech test-other, held-out speaker)")
    fig.tight_layout()
    fig.savefig(out_dir / f"{args.student}-spectrograms.png", dpi=110)
    plt.close(fig)

    usage = CodeUsage(1, student.quantizer.codebook_size)
    with torch.no_grad():
        for utt in dm.test_set:
            usage.update(student.encode(utt.audio.view(1, 1, -1)))
    counts = usage.counts[0].sort(descending=True).values.numpy()
    stats = usage.compute()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(range(len(counts)), counts, width=1.0, color="#4c78a8")
    ax.set_yscale("symlog")
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("frames in the test set")
    ax.set_title(
        f"{args.student}: {stats['usage']:.1f}% of {len(counts)} codes used, perplexity {stats['perplexity']:.0f}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / f"{args.student}-code-usage.png", dpi=110)
    print(f"wrote {out_dir}/{args.student}-spectrograms.png and -code-usage.png; {stats}")


if __name__ == "__main__":
    main()

"""Encode and decode speed of the single-codebook student versus the multi-codebook teacher codec.

Real-time factor (RTF: seconds of compute per second of audio, lower is faster), tokens per second of
audio (the student's one codebook against the teacher's groups x residual), and student/teacher
ratios side by side. Uses the zoo entries when present, else randomly initialised codecs of the same
recipes (speed does not depend on the weights). Timings: median of --repeats after a warm-up, on
--seconds of audio in one batch; on CUDA with synchronisation, in the recipe's precision (bf16 autocast).

    python benchmarks/codec_speed.py [--seconds 10] [--batch 1] [--device cpu|cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import time_call  # noqa: E402


def codec(entry: str, recipes: list[str]):
    """The zoo entry, or (without it) the recipe's network at random init, built through the CLI."""
    import cli
    import zoo

    try:
        return zoo.load(entry), f"zoo:{entry}"
    except (KeyError, ValueError, FileNotFoundError):
        built = cli.lightning_main([*(f"--config={r}" for r in recipes), "--model.init_args.teacher=null"], run=False)
        return built.model.student, f"random init ({' + '.join(recipes)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = {}
    for role, entry, recipe in (
        ("teacher", "codec-teacher-librispeech", ["recipes/codec/teacher.yaml", "recipes/codec/cpu.yaml"]),
        ("student", "distilcodec-librispeech", ["recipes/codec/distill.yaml", "recipes/codec/cpu.yaml"]),
    ):
        net, source = codec(entry, recipe)
        net = net.to(args.device).eval()
        wav = 0.1 * torch.randn(args.batch, 1, int(args.seconds * net.sample_rate), device=args.device)
        audio_s = args.seconds * args.batch
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.device == "cuda"):
            codes = net.encode(wav)
            enc = time_call(lambda net=net, wav=wav: net.encode(wav), args.device, args.repeats)
            dec = time_call(lambda net=net, codes=codes: net.decode(codes), args.device, args.repeats)
        rows[role] = {
            "source": source,
            "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
            "encode_rtf": enc / audio_s,
            "decode_rtf": dec / audio_s,
            "tokens_per_audio_s": codes[0].numel() / args.seconds,
            "bps": net.bits_per_frame * net.frame_rate,
        }
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"{args.seconds:g} s x batch {args.batch} on {name}, torch {torch.__version__}")
    print(f"{'':22s}{'teacher':>14s}{'student':>14s}{'student/teacher':>17s}")
    for key in ("params_M", "encode_rtf", "decode_rtf", "tokens_per_audio_s", "bps"):
        t, s = rows["teacher"][key], rows["student"][key]
        print(f"{key:22s}{t:14.4g}{s:14.4g}{s / t:16.3f}x")
    print(f"teacher: {rows['teacher']['source']}; student: {rows['student']['source']}")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Rebuild the DistilCodec zoo entries at the CPU scale of recipes/codec/cpu.yaml (9-25 minutes a fit on one
# core). Resumable: zoo evidence records every finished run in the metafile and skips it on a rerun.
#   1. the teacher arm at seed 0, kept, and exported as codec-teacher-librispeech (the DMS arms inherit it);
#   2. every arm over SEEDS seeds (default 3);
#   3. the DMS + dead-code-reset student exported from its kept seed-0 checkpoint, figures, MODEL_CARDS.md.
#   scripts/publish_codec.sh [teacher|student|all]     (JOBS=2 runs that many fits at once)
# Needs LibriSpeech at ../shared/data/librispeech (train-clean/ and test-other/; cpu.yaml names the root).
# Kept checkpoints live in runs/ and do not survive a new machine: a rerun refits seed 0 of an arm whose
# checkpoint is missing (CPU fits are deterministic) with --fresh on that arm.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-all}
KEEP=runs/publish/codec
EVIDENCE=(python cli.py zoo evidence distilcodec-librispeech --jobs "${JOBS:-1}" --keep "$KEEP")
TEACHER="multi-codebook teacher (16 codebooks x 256, 8 kbps)"
STUDENT="DMS + dead-code reset"
slug() { echo "$1" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-|-$//g'; }

if [[ $STAGE == teacher || $STAGE == all ]]; then
  "${EVIDENCE[@]}" --seeds 1 --arms "$TEACHER" || true  # gates are checked once every arm has run
  python cli.py zoo export "$KEEP/$(slug "$TEACHER").ckpt" --name codec-teacher-librispeech --overwrite
fi
if [[ $STAGE == student || $STAGE == all ]]; then
  "${EVIDENCE[@]}" --seeds "${SEEDS:-3}"  # exits 1, naming the gate, when a sanity gate fails
  python cli.py zoo export "$KEEP/$(slug "$STUDENT").ckpt" --name distilcodec-librispeech --overwrite
  python scripts/plot_codec.py
  python cli.py zoo cards
fi

#!/usr/bin/env bash
# Rebuild the DistilCodec zoo entries at the CPU scale of recipes/codec/cpu.yaml (about 9 minutes a fit
# on one core): run the teacher and from-scratch evidence arms (3 seeds each) and export the teacher from
# its seed-0 checkpoint, then run the DMS arms and export the DMS student from its seed-0 checkpoint, draw
# the figures and regenerate MODEL_CARDS.md.
#   scripts/publish_codec.sh [teacher|student|all]     (JOBS=2 runs that many fits at once)
# Needs LibriSpeech at ../shared/data/librispeech (train-clean/ and test-other/; cpu.yaml names the root).
# The metafiles start from recipes/codec/entries/ (their evidence arms); export fills in the weights.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-all}
KEEP=runs/publish/codec
EVIDENCE=(python cli.py zoo evidence distilcodec-librispeech --seeds "${SEEDS:-3}" --jobs "${JOBS:-1}" --keep "$KEEP")

for meta in recipes/codec/entries/*.yaml; do
  [[ -e zoo/entries/$(basename "$meta") ]] || cp "$meta" zoo/entries/
done
if [[ $STAGE == teacher || $STAGE == all ]]; then
  "${EVIDENCE[@]}" --arms "multi-codebook teacher (16 codebooks x 256, 8 kbps)" \
    "single codebook from scratch (no teacher)"
  python cli.py zoo export "$KEEP/multi-codebook-teacher-16-codebooks-x-256-8-kbps.ckpt" \
    --name codec-teacher-librispeech --overwrite
fi
if [[ $STAGE == student || $STAGE == all ]]; then
  "${EVIDENCE[@]}" --arms "DMS: encoder + generator from the teacher (published)" \
    "DMS + latent term (gamma 2, off in the paper)"
  python cli.py zoo export "$KEEP/dms-encoder-generator-from-the-teacher-published.ckpt" \
    --name distilcodec-librispeech --overwrite
  python scripts/plot_codec.py
  python cli.py zoo cards
fi

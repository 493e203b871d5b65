#!/usr/bin/env bash
# Rebuild the DistilCodec zoo entries: train and export the multi-codebook teacher (seed 0), run the
# teacher and from-scratch evidence arms, then train and export the DMS student (seed 0) and run the
# DMS arms (3 seeds each), draw the figures and regenerate MODEL_CARDS.md.
#   scripts/publish_codec.sh [teacher|student|all]     (JOBS=7 runs that many fits at once)
# Needs LibriSpeech (LIBRISPEECH_ROOT, default ../shared/data/librispeech, with train-clean/ and
# test-other/). Each fit is capped at 12 epochs of 125 steps or 6.5 minutes (on a 2-core CPU the cap
# stops it long before 12 epochs: run it where a GPU is, with JOBS=7). The metafiles start from
# recipes/codec/entries/ (their evidence arms); export fills in the weights.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${LIBRISPEECH_ROOT:-../shared/data/librispeech}
STAGE=${1:-all}
JOBS=${JOBS:-1}
SEEDS=${SEEDS:-3}
DATA=(--data.init_args.root="$ROOT" --data.init_args.train_dir=train-clean --data.init_args.max_train_files=140)
BUDGET=(--trainer.max_epochs=12 --trainer.max_time=00:00:06:30)
QUIET=(${EXTRA:-} --trainer.logger=false --trainer.enable_progress_bar=false --trainer.enable_model_summary=false)
EVIDENCE=(python cli.py zoo evidence distilcodec-librispeech --seeds "$SEEDS" --jobs "$JOBS")

fit() {  # NAME ARGS...: fit seed 0 into runs/publish/NAME
  local dir=runs/publish/$1
  shift
  rm -rf "$dir"
  python cli.py fit "$@" "${DATA[@]}" "${BUDGET[@]}" "${QUIET[@]}" --trainer.default_root_dir="$dir"
}

for meta in recipes/codec/entries/*.yaml; do
  [[ -e zoo/entries/$(basename "$meta") ]] || cp "$meta" zoo/entries/
done
if [[ $STAGE == teacher || $STAGE == all ]]; then
  fit codec-teacher-librispeech --config recipes/codec/teacher.yaml &
  pid=$!
  "${EVIDENCE[@]}" --arms "multi-codebook teacher (16 codebooks x 256, 8 kbps)" \
    "single codebook from scratch (no teacher)"
  wait "$pid"
  python cli.py zoo export runs/publish/codec-teacher-librispeech/checkpoints/best.ckpt \
    --name codec-teacher-librispeech --overwrite
fi
if [[ $STAGE == student || $STAGE == all ]]; then
  fit distilcodec-librispeech --config recipes/codec/distill.yaml &
  pid=$!
  "${EVIDENCE[@]}" --arms "DMS: encoder + generator from the teacher (published)" \
    "DMS + latent term (gamma 2, off in the paper)"
  wait "$pid"  # export after the evidence has written its rows into the same metafile
  python cli.py zoo export runs/publish/distilcodec-librispeech/checkpoints/best.ckpt \
    --name distilcodec-librispeech --overwrite
  python scripts/plot_codec.py
  python cli.py zoo cards
fi

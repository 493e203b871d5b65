#!/usr/bin/env bash
# Rebuild the GloReDi zoo entry at the CPU scale of recipes/gloredi/cpu.yaml (about 8 minutes a fit on one
# core): run the five evidence arms (3 seeds), export the GloReDi student from its seed-0 checkpoint, draw
# the slice figure (against the seed-0 student trained alone) and the evidence chart, regenerate
# MODEL_CARDS.md. Needs no data: the phantoms are generated and their simulations cached under
# $DISTILLZOO_CACHE/ct.    scripts/publish_gloredi.sh      (JOBS=2 runs that many fits at once)
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=gloredi-phantoms-18v
KEEP=runs/publish/gloredi
[[ -e zoo/entries/$NAME.yaml ]] || cp "recipes/gloredi/entries/$NAME.yaml" zoo/entries/
python cli.py zoo evidence "$NAME" --seeds "${SEEDS:-3}" --jobs "${JOBS:-1}" --keep "$KEEP"
python cli.py zoo export "$KEEP/band-pass-contrastive-gloredi.ckpt" --name "$NAME" --overwrite
python scripts/plot_gloredi.py --entry "$NAME" --baseline "$KEEP/student-alone-no-distillation.ckpt"
python scripts/plot_evidence.py "$NAME"
python cli.py zoo cards

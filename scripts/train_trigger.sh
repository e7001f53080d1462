#!/usr/bin/env bash
# The trigger-word gate, end to end from the data (gates/train_trigger.py, gates/trigger_ensemble.py):
# two detectors trained apart on the same hold-out, the robust recipe and the accents recipe (the
# robust one with other languages' voices reading the words), then heard together (the mean of
# their probabilities), its threshold chosen on the robust member's validation set: a real speaker
# (4_act2.wav) the weights never saw, no false trigger allowed on 30 min of word-free clips.
# Hold-out: speaker 3 and the voice of 3.wav (the test of bench/trigger_run.py), four negatives,
# backgrounds/2.wav. espeak-ng and festival come from Debian's packages (installed on first use).
# About 14 minutes on 2 cores (the members train side by side); each run resumes from its folder.
# Usage: [DATA=../shared/data] [RUNS=runs/trigger-pair] [STEPS=750] scripts/train_trigger.sh OUT.pt
#        then .venv/bin/python bench/trigger_run.py --checkpoint OUT.pt
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/train_trigger.sh OUT.pt}
DATA=${FACEGATE_DATA:-${DATA:-../shared/data}}
RUNS=${RUNS:-runs/trigger-pair}
STEPS=${STEPS:-750}
mkdir -p "$RUNS"
pids=()
for recipe in robust accents; do
  .venv/bin/python -m gates.train_trigger --recipe "$recipe" --data "$DATA" --steps "$STEPS" --seed 0 \
    --threads 1 --workers 0 --holdout-activates 1.wav 2.wav 3.wav 3_act2.wav 3_act3.wav \
    --test-activates 3.wav 3_act2.wav 3_act3.wav --threshold-activates 4_act2.wav \
    --out "$RUNS/$recipe" --export "$RUNS/$recipe.pt" > "$RUNS/$recipe.json" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
.venv/bin/python -m gates.trigger_ensemble "$RUNS/robust.pt" "$RUNS/accents.pt" --data "$DATA" --out "$OUT"
echo "wrote $OUT; next: .venv/bin/python bench/trigger_run.py --checkpoint $OUT" >&2

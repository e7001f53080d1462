#!/usr/bin/env bash
# The from-scratch student's recipe, end to end from the data: a recipe kept beside the shipped
# one (scripts/train_encoder.sh), not the default: on people and photos unlike LFW it falls
# behind the encoder started from dlib's weights (encoder/weights/MODEL_CARD.md). Its steps:
#   1. blockwise distillation from random weights (dlib's ResNet topology; its public-domain
#      weights are the teacher in the loop, never loaded into the student): configs/blockwise.json;
#   2. restarts of it at a lower rate (configs/blockwise_restart.json), then end to end with the
#      triplet loss, distillation and a hint at every block (configs/end_to_end.json), then the
#      head refit in closed form (configs/head_refit.json); phase 2 is repeated from its own result;
#   3. a last restart, then every block refit in closed form down the chain and refined 8 passes
#      (scripts/lsq_refit.py) against dlib's network written in facegate's pipeline
#      (scripts/dlib_in_pipeline.py: downloaded weights, kept under RUNS, never shipped).
# Then scripts/release_encoder.sh RUNS/encoder.pt RELEASE.pt calibrates it into a release file.
# Data: LFW DevTrain people, AT&T and UTKFace (unlabelled, distillation only) from DATA.
# Needs the teacher (./dev teacher). About 10 hours on 2 cores with bfloat16; each phase resumes
# from its run folder when run again.
# Usage: [DATA=../shared/data] [RUNS=runs/student] scripts/train_student.sh
#        SMOKE=1 ...   every step of the recipe once, 2 steps each, on AT&T alone (a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${FACEGATE_DATA:-${DATA:-../shared/data}}
RUNS=${RUNS:-runs/student}
CACHE=${CACHE:-.cache/facegate/crops}
FG=.venv/bin/facegate
PY=.venv/bin/python
mkdir -p "$RUNS"
if [ "${SMOKE:-0}" = 1 ]; then
  data=(--data "$DATA/faces/att")
  quick=(--steps 2 --eval-every 1000 --ckpt-every 1000 --identities-per-batch 8 --photos-per-identity 2
         --extra-per-batch 8 --workers 1)
  restarts=1 rounds=1 refit=(--photos 32 --refine-epochs 1)
else
  data=(--data "$DATA/faces/lfw/images" --people "$DATA/faces/lfw/peopleDevTrain.txt"
        --data "$DATA/faces/att" --unlabelled "$DATA/faces/utkface")
  quick=()
  restarts=3 rounds=3 refit=(--photos 19181 --refine-epochs 8 --bf16-maps)
fi

phase() {   # phase CONFIG NAME [FLAG...]: one training phase in RUNS/NAME, exported to RUNS/NAME.pt
  local config=$1 name=$2; shift 2
  echo "== phase $name ($config)" >&2
  $FG train --config "configs/$config.json" "${data[@]}" --cache-dir "$CACHE" --out "$RUNS/$name" \
    --export "$RUNS/$name.pt" --name "facegate-$name" --precision bfloat16 "${quick[@]}" "$@" --json
}

phase blockwise p1
last=$RUNS/p1.pt
for i in $(seq "$restarts"); do
  phase blockwise_restart "p1r$i" --init-from "$last"
  last=$RUNS/p1r$i.pt
done
for r in $(seq "$rounds"); do          # phase 2, and each later round from the one before
  if [ "$r" -gt 1 ]; then
    phase blockwise_restart "p${r}a" --init-from "$last"
    last=$RUNS/p${r}a.pt
  fi
  phase end_to_end "p${r}b" --init-from "$last"
  phase head_refit "p${r}c" --init-from "$RUNS/p${r}b.pt"
  last=$RUNS/p${r}c.pt
done
phase blockwise_restart p4a --init-from "$last"
[ -f "$RUNS/dlib_teacher.pt" ] || $PY scripts/dlib_in_pipeline.py "$RUNS/dlib_teacher.pt" --precision bfloat16 --geometry arcface112
$PY scripts/lsq_refit.py "$RUNS/p4a.pt" "$RUNS/encoder.pt" --teacher "$RUNS/dlib_teacher.pt" --flip \
  --cache-root "$CACHE" --name facegate-student "${refit[@]}"
echo "trained: $RUNS/encoder.pt; next: FLIP=1 PRECISION=bfloat16 scripts/release_encoder.sh $RUNS/encoder.pt RELEASE.pt" >&2

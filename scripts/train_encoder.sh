#!/usr/bin/env bash
# The shipped encoder's recipe, end to end from the data (encoder/weights/MODEL_CARD.md):
# dlib's public-domain face ResNet (face_recognition_models), loaded into facegate's own network
# (a chip_resnet that reads dlib's chip, encoder/dlib_resnet.py::chip_encoder_from_dlib), trained
# further with the triplet loss and distillation from dlib's network in the loop
# (configs/dlib_chip.json): the teacher embeds each augmented view as it is, the student the
# same view degraded (a tight photo cut at the hairline, low resolution, low light, noise), so
# that a degraded photo is taught its clean photo's embedding.
# Data: LFW DevTrain people and AT&T from DATA (no UTKFace). About 7 minutes on 2 cores with
# bfloat16; the run resumes from its folder when run again.
# Then: FLIP=1 PRECISION=bfloat16 scripts/release_encoder.sh RUNS/encoder.pt RELEASE.pt
# Usage: [DATA=../shared/data] [RUNS=runs/recipe] scripts/train_encoder.sh
#        SMOKE=1 ...   the same, 2 steps, on AT&T alone
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${FACEGATE_DATA:-${DATA:-../shared/data}}
RUNS=${RUNS:-runs/recipe}
CACHE=${CACHE:-.cache/facegate/crops}
mkdir -p "$RUNS"
if [ "${SMOKE:-0}" = 1 ]; then
  data=(--data "$DATA/faces/att")
  quick=(--steps 2 --eval-every 1000 --ckpt-every 1000 --identities-per-batch 8 --photos-per-identity 2
         --extra-per-batch 8 --workers 1)
else
  data=(--data "$DATA/faces/lfw/images" --people "$DATA/faces/lfw/peopleDevTrain.txt" --data "$DATA/faces/att")
  quick=()
fi
.venv/bin/facegate train --config configs/dlib_chip.json "${data[@]}" --cache-dir "$CACHE" --out "$RUNS/dlib_chip" \
  --export "$RUNS/encoder.pt" --name facegate-d150 --precision bfloat16 --flip-average "${quick[@]}" --json
echo "trained: $RUNS/encoder.pt; next: scripts/release_encoder.sh $RUNS/encoder.pt RELEASE.pt" >&2

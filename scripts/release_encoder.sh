#!/usr/bin/env bash
# Make a release file of a trained encoder checkpoint: a new file, calibrated and measured; the
# packaged encoder/weights/default.pt is not touched. In the release file:
#   - the arithmetic (PRECISION=bfloat16) and mirror averaging (FLIP=1) it is served with;
#   - its score-normalisation cohort (COHORT=DIR of face photos, COHORT_PART=all/a/b,
#     COHORT_K=400; encoder/score_norm.py), when one is named;
#   - Verify's threshold at FAR 1e-3 and Identify's at 1e-4 on lfw/pairs_calib.tsv (people in no
#     accuracy figure), the night profile (night thresholds, TOO_DARK), the clustering cut;
#   - its results on the DevTest pair lists (eval-pairs --record).
# JSON and PNG of each step land in RESULTS (default: beside the release file).
# Usage: [PRECISION=bfloat16] [FLIP=1] [COHORT=DIR [COHORT_PART=a]] scripts/release_encoder.sh CHECKPOINT RELEASE.pt
# Shipping it is then one explicit step, with the golden distances re-pinned:
#   cp RELEASE.pt encoder/weights/default.pt && cp RESULTS/* docs/encoder/ \
#     && .venv/bin/python tests/encoder/test_golden.py --write
set -euo pipefail
cd "$(dirname "$0")/.."
CK=${1:?usage: $0 CHECKPOINT RELEASE.pt}
REL=${2:?usage: $0 CHECKPOINT RELEASE.pt}
LFW=${FACEGATE_DATA:-../shared/data}/faces/lfw
RESULTS=${RESULTS:-$(dirname "$REL")/results}
PY=.venv/bin/python
FG=.venv/bin/facegate
mkdir -p "$RESULTS"
[ -e "$REL" ] && { echo "$REL exists: name a new release file" >&2; exit 2; }
$PY -c "import sys; from encoder.checkpoint import release_copy; release_copy(sys.argv[1], sys.argv[2])" "$CK" "$REL"
if [ -n "${PRECISION:-}" ]; then
  $PY -c "import sys; from encoder.checkpoint import record_in_checkpoint as r; print(r(sys.argv[1], precision=sys.argv[2]))" "$REL" "$PRECISION"
fi
if [ "${FLIP:-0}" = 1 ]; then
  $PY -c "import sys; from encoder.checkpoint import record_in_checkpoint as r; print(r(sys.argv[1], flip_average=True))" "$REL"
fi
if [ -n "${COHORT:-}" ]; then
  $PY -m encoder.score_norm "$REL" --photos "$COHORT" --part "${COHORT_PART:-all}" --k "${COHORT_K:-400}" \
    | tee "$RESULTS/score_norm.json"
fi
common=(--root "$LFW" --release "$REL" --json)
$FG calibrate "$LFW/pairs_calib.tsv" --target-far 1e-3 "${common[@]}" | tee "$RESULTS/calibrate_pairs_calib.json"
# Identify's stricter default: one probe meets N enrolled people, so its per-pair FAR is 1e-4
$FG calibrate "$LFW/pairs_calib.tsv" --target-far 1e-4 --kind identify "${common[@]}" \
  | tee "$RESULTS/calibrate_identify_pairs_calib.json"
$FG calibrate "$LFW/pairs_calib.tsv" --target-far 1e-3 --profile night --plot "$RESULTS/too_dark_far1e-3.png" \
  "${common[@]}" | tee "$RESULTS/too_dark_far1e-3.json"
$PY bench/cluster_tune.py --lfw "$LFW" --release "$REL" | tee "$RESULTS/cluster_tune.json"
for list in pairs_devtest pairs_devtest_far; do
  $FG eval-pairs "$LFW/$list.tsv" --record "$list" --plot "$RESULTS/roc_$list.png" "${common[@]}" \
    | tee "$RESULTS/eval_$list.json"
done
ls -l "$REL"

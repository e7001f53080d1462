#!/usr/bin/env bash
# The service issue's door run, end to end on a fresh data folder, for an encoder checkpoint:
#   1. calibrate site "door" on pairs_calib.tsv (people never in training nor in the run):
#      Verify at FAR F by day and at night (which also sets TOO_DARK), Identify at FAR F_ID;
#   2. start a server on that data folder;
#   3. bench/door_run.py (enroll 100 DevTest people, verify/identify probes and strangers)
#      and bench/cluster_run.py (20 DevTest people, k=0), both through the CLI;
#   4. stop the server. JSON and PNG land in OUT (default bench/out/door_<F>).
# Usage: scripts/door_run.sh [F] [F_ID] [CHECKPOINT]     (defaults: 0.05 1e-3 the shipped one)
#        IMPOSTORS=5 scripts/door_run.sh ...   other people's cards claimed per probe (default 1)
#        SEVERAL_FACES=central-face ...        the site's policy for a photo of several faces (default refuse)
#        FOLDER=../shared/data/faces/shift/bollywood ENROLL_PHOTOS=5 ...   the door run on another
#            folder-per-person set (half its people enrolled with ENROLL_PHOTOS ID photos each, the
#            other half strangers); the site is still calibrated on LFW's pairs_calib.tsv
#        CALIBRATE_ENROLLED=1 ...   after enrolling, the site's thresholds are set again on its own
#            enrolled people at the same FARs (facegate calibrate-enrolled, never looser)
set -euo pipefail
cd "$(dirname "$0")/.."
F=${1:-0.05}
F_ID=${2:-1e-3}
CK=${3:-encoder/weights/default.pt}
LFW=${FACEGATE_DATA:-../shared/data}/faces/lfw
OUT=${OUT:-bench/out/door_$F}
FG=.venv/bin/facegate
PORT=${PORT:-50071}
DATA=$(mktemp -d /tmp/fg-door-data.XXXXXX)
mkdir -p "$OUT"
common=(--root "$LFW" --site door --data-dir "$DATA" --checkpoint "$CK" --json)
$FG calibrate "$LFW/pairs_calib.tsv" --target-far "$F" "${common[@]}" | tee "$OUT/calibrate_verify_day.json"
$FG calibrate "$LFW/pairs_calib.tsv" --target-far "$F_ID" --kind identify "${common[@]}" | tee "$OUT/calibrate_identify_day.json"
$FG calibrate "$LFW/pairs_calib.tsv" --target-far "$F" --identify-far "$F_ID" --profile night \
  --plot "$OUT/too_dark.png" "${common[@]}" | tee "$OUT/calibrate_night.json"

$FG site door --several-faces "${SEVERAL_FACES:-refuse}" --data-dir "$DATA" --json | tee "$OUT/site.json"

$FG serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --checkpoint "$CK" > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 120); do
  $FG status --server "127.0.0.1:$PORT" --json > /dev/null 2>&1 && break
  sleep 1
done
people=()
[ -n "${FOLDER:-}" ] && people=(--folder "$FOLDER")
[ "${CALIBRATE_ENROLLED:-0}" = 1 ] && people+=(--calibrate-enrolled "$F" "$F_ID" --data-dir "$DATA")
.venv/bin/python bench/door_run.py --server "127.0.0.1:$PORT" --site door --impostors "${IMPOSTORS:-1}" \
  --enroll-photos "${ENROLL_PHOTOS:-1}" "${people[@]}" --site-policy "$OUT/site.json" --out "$OUT/door" \
  | tee "$OUT/door_run.json"
[ -n "${FOLDER:-}" ] || .venv/bin/python bench/cluster_run.py --server "127.0.0.1:$PORT" | tee "$OUT/cluster_run.json"

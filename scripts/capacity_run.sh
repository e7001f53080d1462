#!/usr/bin/env bash
# The capacity runs of docs/capacity (640x480 camera frames, load generator on the same machine):
#   scripts/capacity_run.sh [OUT]        (OUT: docs/capacity; FACEGATE_CAPACITY_SECONDS: each run, 60)
# A real `facegate serve` on a fresh data folder; 12 LFW people enrolled from one photo each, their
# next two photos the cameras' probes, pasted into frames by `facegate loadtest --frames`; a site
# "kiosk" with `min_face_px` 80. Prints and writes: 4 cameras at the default site and at the kiosk;
# 2 cameras alone and beside a 40-megapixel JPEG twice a second; 16 cameras with 2 s deadlines.
# Run it on a quiet machine: every other process takes its cores.
set -u
cd "$(dirname "$0")/.."
F=".venv/bin/facegate"
L=${FACEGATE_DATA:-../shared/data}/faces/lfw/images
OUT=${1:-docs/capacity}; mkdir -p "$OUT"
S=${FACEGATE_CAPACITY_SECONDS:-60}      # seconds each run lasts
C=$(mktemp -d /tmp/facegate-capacity.XXXX); trap 'rm -rf "$C"' EXIT
mkdir -p $C/enroll $C/probe $C/big
PY=.venv/bin/python
# 12 DevTest-like people with >= 3 photos: photo 1 enrolled, photos 2-3 the probes
for p in Abdullah_Gul Reese_Witherspoon Tom_Cruise Serena_Williams Colin_Powell Tony_Blair Gloria_Macapagal_Arroyo Hugo_Chavez Jennifer_Capriati Laura_Bush Vladimir_Putin Ariel_Sharon; do
  mkdir -p $C/enroll/$p $C/probe/$p; cp $L/$p/${p}_0001.jpg $C/enroll/$p/; cp $L/$p/${p}_000{2,3}.jpg $C/probe/$p/
done
# a 40-megapixel photo (7740x5160) of one enrolled person, under the 8 MiB message limit
mkdir -p $C/big/Tom_Cruise
$PY - "$L/Tom_Cruise/Tom_Cruise_0002.jpg" "$C/big/Tom_Cruise/big.jpg" <<'PY'
import sys
import cv2
img = cv2.imread(sys.argv[1])
big = cv2.resize(img, (7740, 5160), interpolation=cv2.INTER_CUBIC)
ok, buf = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])
open(sys.argv[2], "wb").write(buf.tobytes())
print("40 MP photo:", big.shape, len(buf) / 2**20, "MiB")
PY
$F serve --data-dir $C/data --listen 127.0.0.1:50981 2>$C/serve.log & SP=$!
for i in $(seq 180); do grep -q "serving on port" $C/serve.log && break; sleep 1; done
$F enroll $C/enroll --server 127.0.0.1:50981 --json 2>/dev/null; echo
$F site kiosk --min-face-px 80 --data-dir $C/data --json; echo
LT="$F loadtest --server 127.0.0.1:50981 --rpc verify --photos $C/probe --frames 640x480"
for site in default kiosk; do
  echo "== 4 cameras, $S s, site $site"
  $LT --site $site --cameras 4 --seconds $S --plot $OUT/lat4_$site.png --json 2>/dev/null > $OUT/c4_$site.json; cat $OUT/c4_$site.json; echo
done
echo "== 2 cameras alone, $S s (site kiosk)"
$LT --site kiosk --cameras 2 --seconds $S --json 2>/dev/null > $OUT/c2.json; cat $OUT/c2.json; echo
echo "== 2 cameras + a 40 MP photo twice a second, $S s"
$F loadtest --server 127.0.0.1:50981 --rpc verify --photos $C/big --rate 2 --seconds $S --json 2>/dev/null > $OUT/big.json &
BP=$!
$LT --site kiosk --cameras 2 --seconds $S --json 2>/dev/null > $OUT/c2big.json; wait $BP
cat $OUT/c2big.json; echo; cat $OUT/big.json; echo
echo "== 16 cameras, 2 s deadlines, $S s (site kiosk)"
$LT --site kiosk --cameras 16 --seconds $S --deadline-ms 2000 --plot $OUT/lat16.png --json 2>/dev/null > $OUT/c16.json; cat $OUT/c16.json; echo
kill -TERM $SP; wait $SP

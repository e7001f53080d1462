"""dlib's face ResNet, untrained by us, as a facegate checkpoint: for measuring only, never to ship.

It writes the teacher exactly (encoder/dlib_resnet.py::chip_encoder_from_dlib, a chip_resnet
backbone reading dlib's chip out of facegate's MTCNN crop) in a checkpoint file, so that the
same tools that measure facegate's own encoders (eval-pairs, bench/accuracy.py, door_run.sh)
measure it too: the reference point of a student started from it (configs/dlib_chip.json).
The file holds dlib's downloaded weights: keep it under runs/, out of git.
Run from the repository root (needs ./dev teacher):
    .venv/bin/python scripts/dlib_in_pipeline.py runs/dlib0/bf16.pt --precision bfloat16 --flip
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder.checkpoint import PRECISIONS, save_checkpoint  # noqa: E402
from encoder.dlib_resnet import chip_encoder_from_dlib  # noqa: E402
from encoder.face_encoder import EncoderConfig  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("out")
ap.add_argument("--precision", choices=PRECISIONS, default="float32")
ap.add_argument("--geometry", choices=("dlib150", "arcface112"), default="dlib150",
                help="dlib150: the chip read from the photo (configs/dlib_chip.json's encoder); arcface112: "
                     "the chip resampled from facegate's 112 px ArcFace crop")
ap.add_argument("--flip", action="store_true", help="served with mirror averaging")
a = ap.parse_args()
args = {"chip_from_crop112": None} if a.geometry == "dlib150" else {}
model = chip_encoder_from_dlib(EncoderConfig(backbone="chip_resnet", backbone_args=args,
                                             input_size=150 if a.geometry == "dlib150" else 112, dropout=0.0, head="pool"))
ckpt = save_checkpoint(a.out, model.eval(), name="dlib-in-facegate", precision=a.precision, flip_average=a.flip,
                       training={"note": "dlib_resnet_v1's own weights (face_recognition_models), not trained here"})
print(ckpt["version"])

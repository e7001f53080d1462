"""Measure the similarity transform from facegate's 112x112 crop to dlib's 150x150 chip.

The in-loop teacher (encoder/dlib_resnet.py) embeds facegate's augmented crops, so it needs
dlib's chip geometry made from facegate's crop. On LFW DevTrain photos (people that training
uses anyway), this aligns each photo both ways: MTCNN's five points to the ArcFace template
(facegate), and dlib's five-point shape in the MTCNN box to dlib's chip (padding 0.25). The
transform crop -> chip of each photo is composed and averaged. Then, on held-out DevTrain
people of the training crop cache, it compares the teacher on chips made from facegate's crops
with the teacher's native embeddings in the cache. JSON on stdout.

  .venv/bin/python scripts/dlib_chip_geometry.py --cache .cache/facegate/crops/KEY
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder.align import TEMPLATE_112, FaceAligner, similarity_transform  # noqa: E402
from encoder.face_folders import list_person_folders, read_people_list  # noqa: E402
from encoder.images import decode_image  # noqa: E402


def chip_transform(details) -> np.ndarray:
    """dlib's chip_details -> the 2x3 photo -> chip transform (as dlib's get_mapping_to_chip)."""
    r = details.rect
    c = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
    ca, sa = np.cos(details.angle), np.sin(details.angle)

    def rot(p):
        d = np.asarray(p, float) - c
        return c + [ca * d[0] - sa * d[1], sa * d[0] + ca * d[1]]

    src = np.array([rot((r.left(), r.top())), rot((r.right(), r.top())), rot((r.right(), r.bottom()))])
    n = details.cols - 1
    return similarity_transform(src, np.array([(0, 0), (n, 0), (n, details.rows - 1)], np.float32))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", default="../shared/data/faces/lfw")
    ap.add_argument("--photos", type=int, default=150)
    ap.add_argument("--cache", help="a crop cache built with --teacher: compare on its held-out people")
    a = ap.parse_args()
    import dlib
    import face_recognition_models as frm

    shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    aligner = FaceAligner()
    photos = list_person_folders(f"{a.lfw}/images", read_people_list(f"{a.lfw}/peopleDevTrain.txt"))
    photos = photos[::max(1, len(photos) // a.photos)][:a.photos]
    ms, chip_err = [], []
    for p in photos:
        img = decode_image(p.path)
        al = aligner.align(img)
        if al.crop is None:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in al.box)
        s = shape(np.ascontiguousarray(img), dlib.rectangle(x1, y1, x2, y2))
        t = chip_transform(dlib.get_face_chip_details(s, 150, 0.25))
        chip = dlib.get_face_chip(np.ascontiguousarray(img), s, size=150, padding=0.25)
        chip_err.append(float(np.abs(cv2.warpAffine(img, t, (150, 150)).astype(float) - chip).mean()))
        crop = np.vstack([similarity_transform(al.landmarks, TEMPLATE_112), [0, 0, 1]])
        ms.append((np.vstack([t, [0, 0, 1]]) @ np.linalg.inv(crop))[:2])
    ms = np.array(ms)
    out = {"photos": len(ms), "crop112_to_chip": ms.mean(0).round(5).tolist(), "per_photo_std": ms.std(0).round(4).tolist(),
           "chip_rebuild_mean_abs_pixel_error": round(float(np.mean(chip_err)), 3)}
    if a.cache:
        out.update(compare_on_cache(a.cache))
    print(json.dumps(out, indent=1))


def compare_on_cache(folder: str) -> dict:
    from encoder.crop_cache import CropCache
    from encoder.dlib_resnet import InLoopTeacher
    from encoder.pair_metrics import auc, best_accuracy_threshold, roc
    from encoder.train import TrainConfig, TrainData

    data = TrainData.from_cache(CropCache(folder), TrainConfig(center_teacher=False))
    vp = data.val_pairs
    rows = np.unique(vp[:, :2])
    pos = {r: i for i, r in enumerate(rows)}
    pixels = data.crops[torch.from_numpy(rows)].permute(0, 3, 1, 2).float()
    mine = InLoopTeacher(crop_size=data.crops.shape[1]).raw(pixels).numpy()
    native = F.normalize(data.teacher[torch.from_numpy(rows)], dim=1).numpy()
    cos = (mine * native).sum(1)
    same = vp[:, 2].astype(bool)
    res = {"held_out_photos": len(rows), "cosine_to_native_mean": round(float(cos.mean()), 4),
           "cosine_to_native_p5": round(float(np.percentile(cos, 5)), 4), "val_pairs": int(len(vp))}
    for name, e in (("native", native), ("from_facegate_crop", mine)):
        d = np.linalg.norm(e[[pos[r] for r in vp[:, 0]]] - e[[pos[r] for r in vp[:, 1]]], axis=1)
        _, far, tar = roc(d, same)
        res[f"teacher_{name}"] = {"acc": round(best_accuracy_threshold(d, same)[1], 4), "auc": round(auc(far, tar), 4)}
    return res


if __name__ == "__main__":
    main()

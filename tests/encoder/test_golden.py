"""Golden test: fixed LFW DevTest photos -> the shipped encoder's distances, within a tolerance.

The pinned distances belong to one encoder version. After shipping a new checkpoint,
regenerate them with `python tests/encoder/test_golden.py --write` (and say so in the commit).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).with_name("golden_distances.json")
PAIRS = [  # (photo a, photo b, same person) - all DevTest people, never trained on
    ("Abdullah_Gul/Abdullah_Gul_0013.jpg", "Abdullah_Gul/Abdullah_Gul_0014.jpg", True),
    ("Abdullatif_Sener/Abdullatif_Sener_0001.jpg", "Abdullatif_Sener/Abdullatif_Sener_0002.jpg", True),
    ("Reese_Witherspoon/Reese_Witherspoon_0001.jpg", "Reese_Witherspoon/Reese_Witherspoon_0003.jpg", True),
    ("AJ_Lamas/AJ_Lamas_0001.jpg", "Zach_Safrin/Zach_Safrin_0001.jpg", False),
    ("Aaron_Guiel/Aaron_Guiel_0001.jpg", "Reese_Witherspoon/Reese_Witherspoon_0003.jpg", False),
    ("Abdullah_Gul/Abdullah_Gul_0013.jpg", "Reese_Witherspoon/Reese_Witherspoon_0003.jpg", False),
]
TOLERANCE = 0.01


def distances(images: Path) -> tuple[str, list[float]]:
    from encoder.embedder import Embedder
    from encoder.images import decode_image

    emb = Embedder.from_checkpoint()
    out = []
    for a, b, _ in PAIRS:
        # the evaluation rule (CONTRACT.md): the chosen face even if flagged, or a centre crop
        va, vb = (emb.embed_for_evaluation(decode_image(images / p))[0] for p in (a, b))
        out.append(float(np.linalg.norm(va - vb)))
    return emb.version, out


@pytest.mark.slow
def test_shipped_encoder_gives_the_pinned_distances(lfw):
    golden = json.loads(GOLDEN.read_text())
    version, got = distances(lfw / "images")
    assert version == golden["encoder_version"], (
        f"the shipped encoder is {version}, the golden distances belong to {golden['encoder_version']}: "
        "regenerate them (see this file's docstring)")
    np.testing.assert_allclose(got, golden["distances"], atol=TOLERANCE)
    # and they make sense: the genuine pairs lie closer, on average, than the impostor pairs
    same = np.array([s for _, _, s in PAIRS])
    assert np.mean(np.array(got)[same]) < np.mean(np.array(got)[~same])


if __name__ == "__main__" and "--write" in sys.argv:
    root = Path(__file__).resolve().parents[3] / "shared/data/faces/lfw/images"
    version, d = distances(root)
    GOLDEN.write_text(json.dumps({"encoder_version": version, "pairs": PAIRS, "distances": d}, indent=1) + "\n")
    print(f"wrote {GOLDEN} for {version}: {np.round(d, 4).tolist()}")

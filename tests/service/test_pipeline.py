"""The pipeline's reasons and rules as plain function calls (no gRPC), on real photos."""
from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from encoder.images import decode_image
from facegate.reasons import Reason
from service.errors import FailedPrecondition, InvalidArgument, NotFound
from service.settings import Settings


def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def embedder():
    from encoder.embedder import Embedder

    return Embedder.from_checkpoint()


@pytest.fixture
def pipeline(tmp_path, embedder):
    from index.template_store import TemplateStore
    from service.pipeline import Pipeline
    from service.thresholds import ThresholdStore

    settings = Settings(data_dir=tmp_path, max_pixels=5_000_000)
    return Pipeline(settings, embedder, TemplateStore(tmp_path / "index"), ThresholdStore(tmp_path))


@pytest.fixture(scope="module")
def faces(lfw):
    img = lfw / "images"
    return {
        "gul1": (img / "Abdullah_Gul/Abdullah_Gul_0013.jpg").read_bytes(),
        "gul2": (img / "Abdullah_Gul/Abdullah_Gul_0014.jpg").read_bytes(),
        "reese": (img / "Reese_Witherspoon/Reese_Witherspoon_0003.jpg").read_bytes(),
    }


def test_photo_reasons(pipeline, faces):
    assert pipeline.enroll("gul", faces["gul1"]).status == "ACCEPTED"
    gul, reese = decode_image(faces["gul2"]), decode_image(faces["reese"])
    two = jpeg(np.concatenate([gul, reese], axis=1))
    r = pipeline.verify("gul", two)
    assert (r.decision, r.reason, r.distance) == ("REJECT", "MULTIPLE_FACES", None)
    far = np.full((400, 400, 3), 128, np.uint8)
    far[165:235, 165:235] = cv2.resize(gul, (70, 70))
    r = pipeline.verify("gul", jpeg(far))
    assert (r.decision, r.reason) == ("REJECT", "FACE_TOO_SMALL")
    noise = np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    assert pipeline.verify("gul", jpeg(noise)).reason == "NO_FACE"
    r = pipeline.verify("gul", faces["gul2"])
    assert r.reason in ("MATCH", "NO_MATCH") and r.distance is not None
    assert (r.decision == "ACCEPT") == (r.distance <= r.threshold)


def test_a_site_that_judges_the_central_face_lets_the_owner_in_beside_a_friend(pipeline, faces, lfw):
    colin = (lfw / "images/Colin_Powell/Colin_Powell_0001.jpg").read_bytes()
    assert pipeline.enroll("gul", faces["gul1"]).status == "ACCEPTED"
    assert pipeline.enroll("colin", colin).status == "ACCEPTED"
    gul, reese = decode_image(faces["gul2"]), decode_image(faces["reese"])
    grey = np.full_like(gul, 128)
    centred = jpeg(np.concatenate([reese, gul, grey], axis=1))       # gul in the middle, a friend beside
    aside = jpeg(np.concatenate([gul, reese, grey], axis=1))         # the friend in the middle
    assert pipeline.verify("gul", centred, site="gym").reason == "MULTIPLE_FACES"    # the default: refuse
    pipeline.sites.put("gym", several_faces="central_face")
    alone = pipeline.verify("gul", faces["gul2"], site="gym")
    r = pipeline.verify("gul", centred, site="gym")
    assert (r.decision, r.reason) == ("ACCEPT", "MATCH") and "the central one is the card's owner" in r.detail
    assert r.threshold == alone.threshold and r.distance <= r.threshold    # the same threshold as one face
    assert r.distance == pytest.approx(alone.distance, abs=0.05)          # it was gul's face that was compared
    audit = [json.loads(x) for x in (pipeline.settings.data_dir / "audit.jsonl").read_text().splitlines()]
    assert (audit[-1]["faces"], audit[-2]["faces"]) == (2, 1)
    # another card: the central face is not its owner; refused, asked to retake alone, with the distance
    r = pipeline.verify("colin", centred, site="gym")
    assert (r.decision, r.reason) == ("REJECT", "MULTIPLE_FACES") and r.distance > r.threshold
    assert "retake alone" in r.detail
    # the owner in view but not in the middle: only the central face is compared, so the same answer
    r = pipeline.verify("gul", aside, site="gym")
    assert (r.decision, r.reason) == ("REJECT", "MULTIPLE_FACES") and r.distance > r.threshold
    # Identify has no card to look for: such a photo stays refused at every site
    assert pipeline.identify(centred, site="gym").reason == "MULTIPLE_FACES"


def test_request_errors(pipeline, faces):
    pipeline.enroll("gul", faces["gul1"])
    with pytest.raises(NotFound):
        pipeline.verify("nobody", faces["gul2"])
    with pytest.raises(InvalidArgument, match="empty"):
        pipeline.verify("gul", b"")
    with pytest.raises(InvalidArgument, match="over the limit"):
        pipeline.verify("gul", jpeg(np.zeros((3000, 2000, 3), np.uint8)))   # 6 Mpx > 5 Mpx
    with pytest.raises(InvalidArgument, match="subject_id"):
        pipeline.enroll("", faces["gul1"])
    with pytest.raises(InvalidArgument, match="k must"):
        pipeline.cluster([faces["gul1"]], k=-1)
    with pytest.raises(InvalidArgument, match="only 1"):
        pipeline.cluster([faces["gul1"]], k=2)


def test_the_same_face_under_another_subject_is_flagged(pipeline, faces):
    pipeline.enroll("gul", faces["gul1"])
    r = pipeline.enroll("card-4711", faces["gul1"])          # a stolen or shared card
    assert r.status == "ACCEPTED" and [s for s, _ in r.duplicates] == ["gul"]
    assert r.duplicates[0][1] < 0.05


def test_a_sites_threshold_overrides_the_checkpoints_and_another_encoders_is_refused(pipeline, faces):
    pipeline.enroll("gul", faces["gul1"])
    pipeline.thresholds.put("pool", "day", 0.0001, pipeline.version)
    r = pipeline.verify("gul", faces["gul2"], site="pool")
    assert r.threshold == pytest.approx(0.0001) and r.decision == "REJECT" and r.site == "pool"
    pipeline.thresholds.put("gym", "day", 1.9, "some-other-encoder")
    with pytest.raises(FailedPrecondition, match="some-other-encoder"):
        pipeline.verify("gul", faces["gul2"], site="gym")


def test_audit_log_holds_no_photo_and_no_embedding(pipeline, faces, tmp_path):
    pipeline.enroll("gul", faces["gul1"])
    pipeline.verify("gul", faces["gul2"])
    pipeline.identify(faces["reese"])
    text = (tmp_path / "audit.jsonl").read_text()
    lines = text.splitlines()
    assert [__import__("json").loads(x)["event"] for x in lines] == ["Enroll", "Verify", "Identify"]
    assert len(text) < 3000            # a 128-d embedding alone would print as ~2,500 characters per line
    assert "vector" not in text and "image" not in text


@pytest.mark.slow
def test_a_large_photo_is_decoded_reduced_searched_as_a_frame_and_judged_as_the_photo(tmp_path, embedder, faces):
    from index.template_store import TemplateStore
    from service.pipeline import Pipeline

    pipeline = Pipeline(Settings(data_dir=tmp_path), embedder, TemplateStore(tmp_path / "index"), None)
    pipeline.enroll("gul", faces["gul1"])
    probe = decode_image(faces["gul2"])
    near = pipeline.verify("gul", jpeg(probe))
    large = np.full((3000, 4000, 3), 120, np.uint8)                 # a 12-megapixel phone photo
    large[900:2100, 1400:2600] = cv2.resize(probe, (1200, 1200), interpolation=cv2.INTER_CUBIC)
    r = pipeline.verify("gul", jpeg(large))
    # decoded at 1/4 (1000 x 750); its face (~450 px, over the default site's 40 px of a 640 px
    # frame: 250 px of this photo) found and matched as in the 250 px photo
    assert [(s.name, s.outcome, s.score) for s in r.stages][:1] == [("decode", "REDUCED", 4.0)]
    assert (r.decision, r.reason) == ("ACCEPT", Reason.MATCH)
    assert abs(r.distance - near.distance) < 0.02, (r.distance, near.distance)


def test_verify_and_identify_measure_the_releases_normalised_distance(pipeline, embedder, faces):
    """The shipped release scores with its cohort (encoder/score_norm.py): Verify's distance is the
    normalised distance to the subject's template, and Identify's neighbours come nearest first by it."""
    assert embedder.norm is not None, "the shipped encoder release carries a score-normalisation cohort"
    for name, subject in (("gul1", "gul"), ("reese", "reese")):
        assert pipeline.enroll(subject, faces[name]).status == "ACCEPTED"
    probe = embedder.embed(decode_image(faces["gul2"])).vector      # the door decodes a site's photo reduced:
    r = pipeline.verify("gul", faces["gul2"])                          # the same face to ~1e-3
    templates = pipeline.store.subject_vectors("gul", embedder.version)
    assert len(templates) == 1
    normalised = float(embedder.norm.distances(probe, templates)[0])
    euclidean = float(np.linalg.norm(templates - probe, axis=1)[0])
    assert abs(normalised - euclidean) > 0.02                          # the two differ for this pair...
    assert r.distance == pytest.approx(normalised, abs=0.005)         # ...and Verify measures the first
    ident = pipeline.identify(faces["gul2"])
    dist = [d for _, d in ident.neighbours]
    assert [s for s, _ in ident.neighbours][0] == "gul" and dist == sorted(dist)
    assert dist[0] == pytest.approx(r.distance, abs=1e-4)

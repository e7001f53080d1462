"""A site's threshold from its own enrolled people (`facegate calibrate-enrolled`): the impostor
claims are each template claiming another subject, measured as Verify measures a claim (the
mean distance to that subject's templates); no labelled pairs needed. On hand-made
vectors whose distances are known, written through the real TemplateStore; no face model runs."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from fakes import FakeEmbedder, fake_pipeline

from encoder.checkpoint import read_meta, record_in_checkpoint, save_checkpoint
from encoder.face_encoder import EncoderConfig, FaceEncoder
from encoder.pair_metrics import threshold_at_far
from index.template_store import TemplateStore
from service.calibration import calibrate_enrolled
from service.cli import main
from service.errors import FailedPrecondition, InvalidArgument
from service.index_layout import current_index_dir
from service.thresholds import ThresholdStore

DIM = 128
ENCODER_THRESHOLD, ENCODER_IDENTIFY_THRESHOLD = 0.9, 0.5


def at(degrees: float) -> np.ndarray:
    """A unit vector at this angle in the plane of the first two coordinates."""
    v = np.zeros(DIM, np.float32)
    v[0], v[1] = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return v


# Five people at 0, 30, 90, 180 and 270 degrees: 20 impostor claims (each of 5 claiming 4 others,
# every pair twice). The closest, a~b, at 2 sin(15 deg) = 0.5176; the next, b~c, at
# 2 sin(30 deg) = 1.0; the others sqrt(2) or more.
CIRCLE = {"a": [0], "b": [30], "c": [90], "d": [180], "e": [270]}


def vectors_of(people: dict[str, list[float]]) -> tuple[np.ndarray, list[str]]:
    subjects = [s for s, angles in people.items() for _ in angles]
    return np.stack([at(d) for angles in people.values() for d in angles]), subjects


def population(seed: int, n_subjects: int = 60, spread: float = 0.35) -> tuple[np.ndarray, list[str]]:
    """One demographic group: every face near a common one (impostors close together), each
    subject with 1 to 3 ID photos close to their own."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=DIM)
    rows, subjects = [], []
    for s in range(n_subjects):
        own = centre / np.linalg.norm(centre) + spread * rng.normal(size=DIM) / math.sqrt(DIM)
        for _ in range(rng.integers(1, 4)):
            rows.append(own + 0.1 * rng.normal(size=DIM) / math.sqrt(DIM))
            subjects.append(f"s{s:03d}")
    x = np.stack(rows)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), subjects


def brute_force(x: np.ndarray, subjects: list[str], norm=None) -> tuple[np.ndarray, np.ndarray]:
    """Every claim, one loop at a time: each template claiming each subject, at the distance to
    that subject's templates, averaged (its own left out) -> (impostor claims, genuine claims).
    `norm`: distances normalised as Verify's are (ScoreNorm.distances, one pair at a time)."""
    x = x.astype(np.float64)
    subjects = np.array(subjects)
    impostor, genuine = [], []

    def dist(i, j):
        if norm is None:
            return float(np.linalg.norm(x[i] - x[j]))
        return float(norm.distances(x[i], x[j][None])[0])

    for i in range(len(x)):
        for s in sorted(set(subjects)):
            others = [j for j in range(len(x)) if subjects[j] == s and j != i]
            if others:
                d = float(np.mean([dist(i, j) for j in others]))
                (genuine if s == subjects[i] else impostor).append(d)
    return np.array(impostor), np.array(genuine)


# ------------------------------------------------------------------------------ the computation
def test_the_threshold_admits_exactly_the_claims_the_target_far_allows():
    x, subjects = vectors_of(CIRCLE)
    r = calibrate_enrolled(x, subjects, target_far=0.1)             # 2 claims of 20 may pass: a->b, b->a
    assert r["impostor_claims"] == 20 and r["genuine_claims"] == 0 and r["subjects"] == 5
    midway = (2 * math.sin(math.radians(15)) + 1.0) / 2              # between a~b (0.5176) and b~c (1.0)
    assert r["threshold"] == r["enrolled_threshold"] == math.floor(midway * 1e4) / 1e4 == 0.7588
    assert r["far_on_enrolled"] == 0.1 and r["tar_on_enrolled"] is None
    assert r["chosen"] == "enrolled" and r["previous_threshold"] is None
    r = calibrate_enrolled(x, subjects, target_far=0.2)             # 4 may pass: a~b and b~c both ways
    assert r["threshold"] == math.floor((1.0 + math.sqrt(2)) / 2 * 1e4) / 1e4 and r["far_on_enrolled"] == 0.2


def test_a_tie_at_the_boundary_is_refused_with_the_claim_it_ties():
    # c~d and d~e are both at sqrt(2) (90 degrees apart), as are a~c and c~e ...: at F = 0.3,
    # 6 claims may pass, but the fifth and later closest tie, so only a~b and b~c (both ways) do.
    x, subjects = vectors_of(CIRCLE)
    r = calibrate_enrolled(x, subjects, target_far=0.3)
    assert r["far_on_enrolled"] == 0.2
    assert r["threshold"] == math.floor((1.0 + math.sqrt(2)) / 2 * 1e4) / 1e4


@pytest.mark.parametrize("target_far", [1e-3, 1e-2, 0.05])
def test_the_far_holds_on_the_enrolled_impostor_claims(target_far):
    x, subjects = population(seed=1)
    impostor, genuine = brute_force(x, subjects)
    r = calibrate_enrolled(x, subjects, target_far, block_elems=997)   # many small blocks of rows
    assert r["impostor_claims"] == impostor.size and r["genuine_claims"] == genuine.size
    assert (impostor <= r["threshold"]).mean() <= target_far
    assert r["far_on_enrolled"] == pytest.approx((impostor <= r["threshold"]).mean(), abs=1e-12)
    assert r["tar_on_enrolled"] == round(float((genuine <= r["threshold"]).mean()), 4)
    t, _, _ = threshold_at_far(impostor, np.zeros(impostor.size, bool), target_far)   # the same rule
    assert r["threshold"] == math.floor(t * 1e4) / 1e4                # rounded down: never above the FAR
    closest_refused = impostor[impostor > t].min()
    assert (impostor <= closest_refused).mean() > target_far            # t: the largest such threshold


def test_with_score_normalisation_the_claims_are_measured_as_verify_measures_them():
    """A release with a cohort: the enrolled claims' distances are the normalised ones Verify uses."""
    from encoder.score_norm import ScoreNorm

    x, subjects = population(seed=3, n_subjects=25)
    everyone, _ = population(seed=3, n_subjects=150)     # the same 25 first, then 125 others of their kind
    cohort = everyone[len(x):]
    norm = ScoreNorm.build(cohort / np.linalg.norm(cohort, axis=1, keepdims=True), 20, "synthetic")
    impostor, genuine = brute_force(x, subjects, norm)
    r = calibrate_enrolled(x, subjects, 0.05, block_elems=500, norm=norm)
    assert r["far_on_enrolled"] == pytest.approx((impostor <= r["threshold"]).mean(), abs=1e-12)
    assert r["far_on_enrolled"] <= 0.05 and r["impostor_claims"] == impostor.size
    assert r["tar_on_enrolled"] == round(float((genuine <= r["threshold"]).mean()), 4)
    plain = calibrate_enrolled(x, subjects, 0.05)
    assert plain["threshold"] != r["threshold"]


def test_the_block_size_does_not_change_the_answer():
    x, subjects = population(seed=2, n_subjects=30)
    answers = {calibrate_enrolled(x, subjects, 0.02, block_elems=b)["threshold"] for b in (1, 50, 1 << 22)}
    assert len(answers) == 1


def test_it_never_loosens_the_threshold_in_force():
    x, subjects = vectors_of(CIRCLE)
    stricter = calibrate_enrolled(x, subjects, 0.1, current=0.5)
    assert stricter["threshold"] == 0.5 and stricter["chosen"] == "previous"
    assert stricter["enrolled_threshold"] == 0.7588 and stricter["previous_threshold"] == 0.5
    assert stricter["far_on_enrolled"] == 0.0                     # a~b at 0.5176 no longer passes
    looser = calibrate_enrolled(x, subjects, 0.1, current=1.2)
    assert looser["threshold"] == 0.7588 and looser["chosen"] == "enrolled" and looser["previous_threshold"] == 1.2


def test_with_several_templates_a_claim_is_judged_by_the_mean_distance():
    """Verify judges a claim by its mean distance to the subject's templates, not by the nearest (which
    would give an impostor one try per template): the FAR is the claims', not the template pairs'."""
    x, subjects = vectors_of({"a": [0], "b": [20, 100, 200], "c": [300]})
    impostor, _ = brute_force(x, subjects)
    r = calibrate_enrolled(x, subjects, 0.25)
    assert r["impostor_claims"] == 5 * 2 == impostor.size
    assert r["far_on_enrolled"] == (impostor <= r["threshold"]).mean() <= 0.25
    chord = [2 * math.sin(math.radians(d / 2)) for d in (20, 100, 160)]     # a to b's three templates
    assert sorted(impostor)[0] == pytest.approx(chord[0])                  # b(20) -> a: a has one template
    assert sum(np.isclose(impostor, chord[0])) == 1                         # a -> b is not judged by b(20) ...
    assert np.isclose(impostor, np.mean(chord)).any()                      # ... but by the mean, 1.283


def test_too_few_impostor_claims_or_subjects_are_refused():
    x, subjects = vectors_of(CIRCLE)
    with pytest.raises(InvalidArgument, match=r"20 impostor claims .* cannot resolve a FAR of 0.04"):
        calibrate_enrolled(x, subjects, 0.04)                       # 0.04 x 20 < 1
    one, same_person = vectors_of({"a": [0, 10, 20]})
    with pytest.raises(FailedPrecondition, match="at least 2 subjects"):
        calibrate_enrolled(one, same_person, 0.1)
    with pytest.raises(FailedPrecondition):
        calibrate_enrolled(np.zeros((0, DIM)), [], 0.1)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(InvalidArgument, match=r"\(0, 1\)"):
            calibrate_enrolled(x, subjects, bad)


# ------------------------------------------------------------------------------ the store
def test_the_store_gives_every_template_of_one_encoder_in_enrollment_order(tmp_path):
    store = TemplateStore(tmp_path / "index")
    store.add("b", at(30), "sha-b", "enc-1")
    store.add("a", at(0), "sha-a", "enc-1")
    store.add("a", at(90), "sha-a", "enc-0")                       # another encoder's template
    store.add("a", at(10), "sha-a2", "enc-1")
    subjects, vectors = store.vectors("enc-1")
    assert subjects == ["b", "a", "a"]
    assert np.array_equal(vectors, np.stack([at(30), at(0), at(10)]))
    assert store.vectors("enc-2")[0] == [] and store.vectors("enc-2")[1].shape == (0, DIM)
    store.close()


# ------------------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny encoder checkpoint: only its version and default thresholds are read."""
    path = tmp_path_factory.mktemp("encoder") / "tiny.pt"
    torch.manual_seed(0)
    cfg = EncoderConfig(backbone_args={"widths": (8, 16), "depths": (1, 1), "stem_width": 8}, input_size=32,
                        embedding_dim=DIM)
    save_checkpoint(path, FaceEncoder(cfg).eval(), name="site-test", threshold=ENCODER_THRESHOLD)
    record_in_checkpoint(path, identify_threshold=ENCODER_IDENTIFY_THRESHOLD)
    return path


@pytest.fixture(scope="module")
def version(checkpoint) -> str:
    return read_meta(checkpoint)["version"]


def enrol(data, people: dict[str, list[float]], encoder_version: str):
    store = TemplateStore(current_index_dir(data))
    for subject, angles in people.items():
        for d in angles:
            store.add(subject, at(d), f"{subject}-{d}", encoder_version)
    store.close()


def run(capsys, checkpoint, *argv) -> tuple[int, dict]:
    rc = main(["calibrate-enrolled", *map(str, argv), "--checkpoint", str(checkpoint), "--json"])
    return rc, json.loads(capsys.readouterr().out)


KEYS = {"site", "kind", "threshold", "previous_threshold", "chosen", "far_on_enrolled", "tar_on_enrolled",
        "impostor_claims", "genuine_claims", "subjects", "encoder_version", "written_to"}


def test_the_sites_threshold_lands_in_the_store_and_is_what_the_server_uses(tmp_path, capsys, checkpoint, version):
    data = tmp_path / "data"
    enrol(data, {**CIRCLE, "a": [0, 5]}, version)                  # a has two ID photos: 2 genuine claims
    rc, out = run(capsys, checkpoint, "--site", "gym", "--target-far", 0.1, "--data-dir", data)
    assert rc == 0 and KEYS <= set(out)
    assert out["site"] == "gym" and out["kind"] == "verify" and out["encoder_version"] == version
    assert out["impostor_claims"] == 6 * 4 and out["genuine_claims"] == 2 and out["subjects"] == 5
    assert out["previous_threshold"] == ENCODER_THRESHOLD and out["previous_source"] == "encoder"
    assert out["chosen"] == "enrolled" and out["threshold"] < ENCODER_THRESHOLD
    assert out["far_on_enrolled"] <= 0.1 and out["tar_on_enrolled"] == 1.0
    assert out["written_to"] == str(data / "thresholds.json")
    store = ThresholdStore(data)
    assert store.get("gym", "day", version) == out["threshold"]
    entry = store.entry("gym", "day")
    assert entry["source"] == "enrolled" and entry["target_far"] == 0.1 and entry["tar"] == 1.0
    assert entry["impostor_claims"] == 24 and entry["subjects"] == 5 and entry["far"] == out["far_on_enrolled"]
    assert store.get("other-site", "day", version) is None          # only the site named
    pipeline = fake_pipeline(data, FakeEmbedder(version=version))   # the server's own lookup
    assert pipeline.threshold("gym", "day", "verify") == out["threshold"]


def test_a_second_calibration_never_loosens_the_sites_threshold(tmp_path, capsys, checkpoint, version):
    data = tmp_path / "data"
    enrol(data, CIRCLE, version)
    _, strict = run(capsys, checkpoint, "--site", "gym", "--target-far", 0.1, "--data-dir", data)
    rc, again = run(capsys, checkpoint, "--site", "gym", "--target-far", 0.2, "--data-dir", data)
    assert rc == 0 and again["chosen"] == "previous" and again["previous_source"] == "site"
    assert again["threshold"] == again["previous_threshold"] == strict["threshold"] == 0.7588
    assert again["enrolled_threshold"] > strict["threshold"]
    assert ThresholdStore(data).get("gym", "day", version) == 0.7588


def test_identify_never_loosens_the_encoders_stricter_default(tmp_path, capsys, checkpoint, version):
    data = tmp_path / "data"
    enrol(data, CIRCLE, version)
    rc, out = run(capsys, checkpoint, "--site", "gym", "--kind", "identify", "--target-far", 0.1, "--data-dir", data)
    assert rc == 0 and out["kind"] == "identify" and out["chosen"] == "previous"
    assert out["threshold"] == ENCODER_IDENTIFY_THRESHOLD and out["far_on_enrolled"] == 0.0
    store = ThresholdStore(data)
    assert store.get("gym", "day", version, kind="identify") == ENCODER_IDENTIFY_THRESHOLD
    assert store.get("gym", "day", version) is None                 # Verify's is untouched


def test_a_threshold_of_another_encoder_is_not_in_force(tmp_path, capsys, checkpoint, version):
    data = tmp_path / "data"
    enrol(data, CIRCLE, version)
    ThresholdStore(data).put("gym", "day", 0.1, "an-older-encoder")
    rc, out = run(capsys, checkpoint, "--site", "gym", "--target-far", 0.1, "--data-dir", data)
    assert rc == 0 and out["previous_threshold"] == ENCODER_THRESHOLD and out["previous_source"] == "encoder"
    assert ThresholdStore(data).get("gym", "day", version) == 0.7588


@pytest.mark.parametrize("people, far, code, words", [
    (CIRCLE, 0.04, "INVALID_ARGUMENT", "cannot resolve"),           # 20 impostor claims, F x 20 < 1
    ({"a": [0, 10, 20]}, 0.1, "FAILED_PRECONDITION", "at least 2 subjects"),
    (CIRCLE, 1.5, "INVALID_ARGUMENT", "--target-far"),
])
def test_refusals_are_json_errors_with_exit_code_2(tmp_path, capsys, checkpoint, version, people, far, code, words):
    data = tmp_path / "data"
    enrol(data, people, version)
    rc, out = run(capsys, checkpoint, "--site", "gym", "--target-far", far, "--data-dir", data)
    assert rc == 2 and out["error"]["code"] == code and words in out["error"]["message"]
    assert ThresholdStore(data).entry("gym", "day") is None         # nothing written


def test_a_data_folder_without_templates_of_this_encoder_is_refused(tmp_path, capsys, checkpoint, version):
    data = tmp_path / "data"
    data.mkdir()
    rc, out = run(capsys, checkpoint, "--site", "gym", "--target-far", 0.1, "--data-dir", data)
    assert rc == 2 and out["error"]["code"] == "FAILED_PRECONDITION" and "enroll" in out["error"]["message"]
    assert not (data / "CURRENT").exists()                          # looking created nothing
    enrol(data, CIRCLE, "an-older-encoder")
    rc, out = run(capsys, checkpoint, "--site", "gym", "--target-far", 0.1, "--data-dir", data)
    assert rc == 2 and out["error"]["code"] == "FAILED_PRECONDITION"
    assert "an-older-encoder" in out["error"]["message"] and "reindex" in out["error"]["message"]
    rc, out = run(capsys, checkpoint, "--site", "gym", "--target-far", 0.1, "--data-dir", tmp_path / "nowhere")
    assert rc == 2 and out["error"]["code"] == "INVALID_ARGUMENT"

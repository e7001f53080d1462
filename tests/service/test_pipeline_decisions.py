"""Every decision of the pipeline (service/pipeline.py) as a plain function call, on the fake
encoder and gates of fakes.py: squares are faces, colours are people, the background's grey is
the light. No LFW, no MTCNN: these run wherever the checkout does.

Known distances (fakes.py): red-orange 0.5, red-purple 1.0, blue-cyan 0.5, red-blue sqrt(2).
The fake checkpoint's thresholds: verify 0.75 by day, 1.25 at night; identify 0.6 / 1.1."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import (IDENTIFY_THRESHOLD, NIGHT_IDENTIFY_THRESHOLD, NIGHT_THRESHOLD, SQRT2, THRESHOLD,
                   VERSION, WORD_P, FakeEmbedder, distance, face, fake_pipeline, photo, wav)

from facegate.reasons import Reason
from service.errors import FailedPrecondition, InvalidArgument, NotFound
from service.pipeline import ACCEPT, REJECT, UNKNOWN_BECAUSE

RED, ORANGE, PURPLE, BLUE, CYAN, GREEN = (photo(face(c)) for c in ("red", "orange", "purple", "blue", "cyan",
                                                                  "green"))
NOBODY = photo()
TWO = photo(face("red"), face("blue", at=(0.15, 0.5)))      # red in the middle, blue beside: similar size
TINY = photo(face("red", side=30))
DARK_RED = photo(face("red"), light="dark")
NIGHT_PURPLE = photo(face("purple"), light="night")
WORD_SITE = "pool"          # a door that wakes on the trigger word


@pytest.fixture
def pipeline(tmp_path):
    p = fake_pipeline(tmp_path)
    assert p.enroll("ann", RED).status == "ACCEPTED"             # ann is red
    assert p.enroll("bob", BLUE).status == "ACCEPTED"            # bob is blue
    p.sites.put(WORD_SITE, trigger_word=True)
    p.embedder.calls.update(align=0, embed=0)
    return p


def stages(r):
    return [(s.name, s.outcome) for s in r.stages]


def audit(p):
    return [json.loads(x) for x in (p.settings.data_dir / "audit.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------- Verify's reasons
def test_verify_gives_every_reason_of_the_vocabulary_but_low_quality(pipeline):
    """One request per reason; LOW_QUALITY (optional in CONTRACT.md: blur, extreme pose) is in
    the proto and the vocabulary, but no stage of the pipeline judges it yet."""
    pipeline.sites.put("gym", several_faces="refuse")
    seen = {pipeline.verify("ann", ORANGE).reason, pipeline.verify("ann", BLUE).reason,
            pipeline.verify("ann", NOBODY).reason, pipeline.verify("ann", TINY).reason,
            pipeline.verify("ann", TWO, site="gym").reason, pipeline.verify("ann", DARK_RED).reason,
            pipeline.verify("ann", RED, site=WORD_SITE).reason}
    assert seen == set(Reason) - {Reason.LOW_QUALITY}


def test_the_owners_other_photo_is_a_match(pipeline):
    r = pipeline.verify("ann", ORANGE)
    assert (r.decision, r.reason) == (ACCEPT, Reason.MATCH)
    assert r.distance == distance("red", "orange") == 0.5 and r.threshold == THRESHOLD
    assert (r.subject, r.site, r.light_profile, r.encoder_version) == ("ann", "default", "day", VERSION)
    assert stages(r) == [("decode", "OK"), ("daynight", "day"), ("detect", "OK"), ("encode", "OK"), ("match", "OK")]
    assert r.stages[-1].score == 0.5


def test_another_persons_face_is_no_match(pipeline):
    r = pipeline.verify("ann", BLUE)                      # bob at the door with ann's card
    assert (r.decision, r.reason) == (REJECT, Reason.NO_MATCH)
    assert r.distance == pytest.approx(SQRT2) and r.distance > r.threshold


def test_a_claim_is_judged_by_its_mean_distance_to_the_subjects_templates(pipeline):
    """Not by the nearest template: that would give an impostor one try per ID photo (encoder.score_norm.claim_distance)."""
    pipeline.enroll("bob", CYAN)                          # bob: blue and cyan
    r = pipeline.verify("bob", photo(face("cyan"), size=(300, 300)))
    assert (r.reason, r.stages[-1].name) == (Reason.MATCH, "match")
    assert r.distance == pytest.approx((distance("blue", "cyan") + 0.0) / 2) == 0.25
    r = pipeline.verify("bob", RED)                       # ann with bob's card: sqrt(2) from both
    assert (r.reason, r.distance) == (Reason.NO_MATCH, pytest.approx(SQRT2))


def test_a_photo_without_a_face_is_no_face_and_nothing_is_encoded(pipeline):
    r = pipeline.verify("ann", NOBODY)
    assert (r.decision, r.reason, r.distance) == (REJECT, Reason.NO_FACE, None)
    assert stages(r) == [("decode", "OK"), ("daynight", "day"), ("detect", "NO_FACE")]
    assert pipeline.embedder.calls == {"align": 1, "embed": 0}


def test_a_small_face_is_face_too_small(pipeline):
    r = pipeline.verify("ann", TINY)                      # ann's colour, but 30 px
    assert (r.decision, r.reason, r.distance) == (REJECT, Reason.FACE_TOO_SMALL, None)
    assert "30 px" in r.detail and stages(r)[-1] == ("detect", "FACE_TOO_SMALL")


def test_two_faces_are_refused_at_a_site_without_a_policy(pipeline):
    r = pipeline.verify("ann", TWO)                       # the owner in the middle, but not alone
    assert (r.decision, r.reason, r.distance) == (REJECT, Reason.MULTIPLE_FACES, None)
    assert stages(r)[-1] == ("detect", "MULTIPLE_FACES") and pipeline.embedder.calls["embed"] == 0


def test_central_face_policy_lets_the_owner_in_beside_a_friend(pipeline):
    pipeline.sites.put("gym", several_faces="central_face")
    r = pipeline.verify("ann", TWO, site="gym")
    assert (r.decision, r.reason, r.distance) == (ACCEPT, Reason.MATCH, 0.0)
    assert "the central one is the card's owner" in r.detail
    assert stages(r)[2:] == [("detect", "MULTIPLE_FACES"), ("encode", "OK"), ("match", "OK")]
    assert r.threshold == pipeline.verify("ann", ORANGE, site="gym").threshold == THRESHOLD
    assert audit(pipeline)[-2]["faces"] == 2


def test_central_face_policy_refuses_when_the_central_face_is_not_the_owner(pipeline):
    pipeline.sites.put("gym", several_faces="central_face")
    r = pipeline.verify("bob", TWO, site="gym")           # bob is in the photo, but not in the middle
    assert (r.decision, r.reason) == (REJECT, Reason.MULTIPLE_FACES)
    assert r.distance == pytest.approx(SQRT2) and "retake alone" in r.detail


def test_a_photo_too_dark_is_refused_before_the_face_models(pipeline):
    r = pipeline.verify("ann", DARK_RED)                  # ann's face: it would match, if looked at
    assert (r.decision, r.reason, r.distance) == (REJECT, Reason.TOO_DARK, None)
    assert stages(r) == [("decode", "OK"), ("daynight", "TOO_DARK")] and r.detail
    assert pipeline.embedder.calls == {"align": 0, "embed": 0}
    entry = audit(pipeline)[-1]
    assert (entry["event"], entry["reason"], entry["faces"]) == ("Verify", "TOO_DARK", None)


def test_trigger_word_site_without_audio_runs_nothing_else(pipeline):
    r = pipeline.verify("ann", RED, site=WORD_SITE)
    assert (r.decision, r.reason) == (REJECT, Reason.TRIGGER_NOT_HEARD)
    assert stages(r) == [("decode", "OK"), ("trigger_word", "NO_AUDIO")]
    assert pipeline.embedder.calls == {"align": 0, "embed": 0} and pipeline.gates.daynight.calls == 0
    assert pipeline.gates.trigger_word.calls == 0


def test_trigger_word_site_with_audio_but_no_word_runs_nothing_else(pipeline):
    r = pipeline.verify("ann", RED, site=WORD_SITE, audio=wav())
    assert (r.decision, r.reason) == (REJECT, Reason.TRIGGER_NOT_HEARD)
    assert stages(r) == [("decode", "OK"), ("trigger_word", "NOT_HEARD")] and r.stages[1].score == 0.0
    assert pipeline.embedder.calls == {"align": 0, "embed": 0} and pipeline.gates.daynight.calls == 0


def test_no_word_and_a_word_like_sound_get_different_answers(pipeline):
    """Both are TRIGGER_NOT_HEARD and run no face model; the detail tells "no word heard" from "say it again"."""
    r = pipeline.verify("ann", RED, site=WORD_SITE, audio=wav())
    assert (r.reason, stages(r)) == (Reason.TRIGGER_NOT_HEARD, [("decode", "OK"), ("trigger_word", "NOT_HEARD")])
    assert r.detail.startswith("no word heard") and "peak p 0.00" in r.detail
    r = pipeline.verify("ann", RED, site=WORD_SITE, audio=wav(word_at=1.0, level=0.25))
    assert (r.reason, stages(r)) == (Reason.TRIGGER_NOT_HEARD, [("decode", "OK"), ("trigger_word", "NOT_HEARD")])
    assert r.detail.startswith("say it again") and "peak p 0.40" in r.detail and r.stages[1].score == 0.4
    assert pipeline.embedder.calls == {"align": 0, "embed": 0} and pipeline.gates.daynight.calls == 0
    r = pipeline.identify(RED, site=WORD_SITE, audio=wav(word_at=1.0, level=0.25))
    assert r.reason == Reason.TRIGGER_NOT_HEARD and r.detail.startswith("say it again")


def test_the_word_heard_opens_the_cascade(pipeline):
    r = pipeline.verify("ann", RED, site=WORD_SITE, audio=wav(word_at=1.0))
    assert (r.decision, r.reason) == (ACCEPT, Reason.MATCH)
    assert stages(r) == [("decode", "OK"), ("trigger_word", "HEARD"), ("daynight", "day"), ("detect", "OK"), ("encode", "OK"),
                         ("match", "OK")]
    assert r.stages[1].score == WORD_P


def test_the_word_is_heard_before_the_light_is_judged(pipeline):
    r = pipeline.verify("ann", DARK_RED, site=WORD_SITE, audio=wav(word_at=0.5))
    assert r.reason == Reason.TOO_DARK and stages(r) == [("decode", "OK"), ("trigger_word", "HEARD"), ("daynight", "TOO_DARK")]
    r = pipeline.verify("ann", DARK_RED, site=WORD_SITE)
    assert r.reason == Reason.TRIGGER_NOT_HEARD and pipeline.gates.daynight.calls == 1


def test_a_site_without_the_word_ignores_audio(pipeline):
    r = pipeline.verify("ann", RED, audio=b"not even a wav")
    assert r.reason == Reason.MATCH and pipeline.gates.trigger_word.calls == 0


def test_audio_errors_are_invalid_argument(tmp_path):
    p = fake_pipeline(tmp_path, max_audio_bytes=1024)
    p.enroll("ann", RED)
    p.sites.put(WORD_SITE, trigger_word=True)
    with pytest.raises(InvalidArgument, match="audio"):
        p.verify("ann", RED, site=WORD_SITE, audio=b"RIFF\x00\x00 not a wave file")
    with pytest.raises(InvalidArgument, match="1024"):
        p.verify("ann", RED, site=WORD_SITE, audio=wav(word_at=0.1))       # 64 kB
    assert p.embedder.calls["align"] == 1                                     # the enrollment's only


def test_a_word_site_with_no_detector_loaded_is_a_failed_precondition(tmp_path):
    p = fake_pipeline(tmp_path, gates=False)
    p.enroll("ann", RED)
    p.sites.put(WORD_SITE, trigger_word=True)
    with pytest.raises(FailedPrecondition, match="trigger"):
        p.verify("ann", RED, site=WORD_SITE, audio=wav(word_at=0.5))
    r = p.verify("ann", DARK_RED)                      # no day/night gate: no TOO_DARK, the day profile
    assert (r.reason, r.light_profile) == (Reason.MATCH, "day") and stages(r)[1] == ("detect", "OK")


def test_a_jpeg_photo_is_decided_like_the_png(pipeline):
    r = pipeline.verify("ann", photo(face("orange"), fmt="JPEG"))
    assert (r.reason, r.distance) == (Reason.MATCH, 0.5)


# ---------------------------------------------------------------------------------- thresholds
def test_the_checkpoints_threshold_applies_when_the_site_has_none(pipeline):
    pipeline.thresholds.put("elsewhere", "day", 1.9, VERSION)       # another site's: not ours
    r = pipeline.verify("ann", PURPLE, site="gym")
    assert (r.reason, r.threshold, r.distance) == (Reason.NO_MATCH, THRESHOLD, 1.0)


def test_a_sites_calibrated_threshold_overrides_the_checkpoints_both_ways(pipeline):
    pipeline.thresholds.put("gym", "day", 1.2, VERSION)             # looser
    pipeline.thresholds.put("lab", "day", 0.4, VERSION)             # stricter
    r = pipeline.verify("ann", PURPLE, site="gym")
    assert (r.reason, r.threshold, r.site) == (Reason.MATCH, 1.2, "gym")
    r = pipeline.verify("ann", ORANGE, site="lab")
    assert (r.reason, r.threshold, r.distance) == (Reason.NO_MATCH, 0.4, 0.5)
    assert pipeline.verify("ann", ORANGE).reason == Reason.MATCH    # the default site: the checkpoint's 0.75


def test_a_distance_equal_to_the_threshold_is_accepted(pipeline):
    pipeline.thresholds.put("gym", "day", 0.5, VERSION)
    pipeline.thresholds.put("lab", "day", float(np.nextafter(0.5, 0.0)), VERSION)
    r = pipeline.verify("ann", ORANGE, site="gym")
    assert (r.decision, r.reason, r.distance, r.threshold) == (ACCEPT, Reason.MATCH, 0.5, 0.5)
    r = pipeline.verify("ann", ORANGE, site="lab")
    assert (r.decision, r.reason) == (REJECT, Reason.NO_MATCH)


def test_a_night_photo_gets_the_night_profiles_threshold(pipeline):
    r = pipeline.verify("ann", NIGHT_PURPLE)
    assert (r.light_profile, r.threshold, r.distance) == ("night", NIGHT_THRESHOLD, 1.0)
    assert (r.decision, r.reason) == (ACCEPT, Reason.MATCH)
    assert stages(r)[1] == ("daynight", "night")
    assert pipeline.verify("ann", PURPLE).reason == Reason.NO_MATCH          # the same face by day
    assert pipeline.verify("ann", photo(face("blue"), light="night")).reason == Reason.NO_MATCH


def test_a_sites_night_threshold_overrides_the_checkpoints_night_threshold(pipeline):
    pipeline.thresholds.put("gym", "night", 0.9, VERSION)
    pipeline.thresholds.put("gym", "day", 1.9, VERSION)             # the day one does not apply at night
    r = pipeline.verify("ann", NIGHT_PURPLE, site="gym")
    assert (r.reason, r.threshold, r.light_profile) == (Reason.NO_MATCH, 0.9, "night")


def test_no_night_threshold_anywhere_is_a_failed_precondition(tmp_path):
    p = fake_pipeline(tmp_path, embedder=FakeEmbedder(night_threshold=None))
    p.enroll("ann", RED)
    with pytest.raises(FailedPrecondition, match="calibrate"):
        p.verify("ann", NIGHT_PURPLE)
    assert p.verify("ann", ORANGE).reason == Reason.MATCH


def test_a_threshold_calibrated_for_another_encoder_is_refused(pipeline):
    pipeline.thresholds.put("gym", "day", 1.9, "old-encoder-0")
    with pytest.raises(FailedPrecondition, match="old-encoder-0"):
        pipeline.verify("ann", ORANGE, site="gym")
    pipeline.thresholds.put("gym", "day", 1.9, "old-encoder-0", kind="identify")
    with pytest.raises(FailedPrecondition, match="old-encoder-0"):
        pipeline.identify(ORANGE, site="gym")


def test_without_a_thresholds_store_the_checkpoints_values_apply(tmp_path):
    from service.thresholds import ThresholdStore

    ThresholdStore(tmp_path).put("default", "day", 1.9, VERSION)    # in the folder, but not given
    p = fake_pipeline(tmp_path, thresholds=False)
    p.enroll("ann", RED)
    r = p.verify("ann", PURPLE)
    assert (r.reason, r.threshold) == (Reason.NO_MATCH, THRESHOLD)


def test_a_sites_calibrated_too_dark_level_beats_the_gates(pipeline):
    pipeline.thresholds.put("gym", "night", 0.3, VERSION, kind="too_dark")
    r = pipeline.verify("ann", NIGHT_PURPLE, site="gym")                # light 0.25: too dark here
    assert (r.reason, stages(r)) == (Reason.TOO_DARK, [("decode", "OK"), ("daynight", "TOO_DARK")])
    assert pipeline.verify("ann", NIGHT_PURPLE).reason == Reason.MATCH  # the gate's own 0.1 elsewhere


def test_the_checkpoints_too_dark_level_beats_the_gates(tmp_path):
    p = fake_pipeline(tmp_path, embedder=FakeEmbedder(too_dark_light=0.3))
    p.enroll("ann", RED)
    assert p.verify("ann", NIGHT_PURPLE).reason == Reason.TOO_DARK


# ---------------------------------------------------------------------------------- Identify
def test_identify_finds_the_subject_with_enough_votes(pipeline):
    pipeline.enroll("ann", ORANGE)                                  # ann has two templates
    r = pipeline.identify(RED)
    assert (r.decision, r.reason, r.subject) == (ACCEPT, Reason.MATCH, "ann")
    assert (r.votes, r.votes_needed, r.threshold) == (2, 2, IDENTIFY_THRESHOLD)
    assert r.neighbours[:2] == [("ann", 0.0), ("ann", 0.5)] and r.neighbours[2][0] == "bob"
    assert stages(r) == [("decode", "OK"), ("daynight", "day"), ("detect", "OK"), ("encode", "OK"), ("match", "IDENTIFIED")]


def test_identify_one_template_needs_one_vote(pipeline):
    r = pipeline.identify(CYAN)                                     # bob has one template, 0.5 away
    assert (r.subject, r.votes, r.votes_needed) == ("bob", 1, 1)


def test_identify_unknown_when_nobody_is_within_the_threshold(pipeline):
    r = pipeline.identify(GREEN)
    assert (r.decision, r.reason, r.subject, r.votes) == (REJECT, Reason.NO_MATCH, None, 0)
    assert stages(r)[-1] == ("match", "NONE_WITHIN") and r.detail == UNKNOWN_BECAUSE["NONE_WITHIN"]
    assert len(r.neighbours) == 2                                   # still listed, all too far


def test_identify_unknown_when_too_few_of_the_subjects_templates_agree(pipeline):
    pipeline.enroll("ann", PURPLE)                                  # ann: red and purple
    r = pipeline.identify(ORANGE)                                   # 0.5 from red, 1.06 from purple
    assert (r.subject, r.reason, r.votes, r.votes_needed) == (None, Reason.NO_MATCH, 1, 2)
    assert stages(r)[-1] == ("match", "TOO_FEW_VOTES") and r.detail == UNKNOWN_BECAUSE["TOO_FEW_VOTES"]


def test_identify_unknown_when_two_subjects_are_equally_close(pipeline):
    pipeline.enroll("twin", photo(face("red", at=(0.3, 0.5))))     # ann's face, another photo
    r = pipeline.identify(ORANGE)
    assert (r.subject, r.reason) == (None, Reason.NO_MATCH)
    assert stages(r)[-1] == ("match", "AMBIGUOUS") and r.detail == UNKNOWN_BECAUSE["AMBIGUOUS"]
    assert sorted(s for s, _ in r.neighbours[:2]) == ["ann", "twin"]


def test_identify_at_night_uses_the_night_identify_threshold(pipeline):
    pipeline.enroll("ann", ORANGE)
    r = pipeline.identify(NIGHT_PURPLE)                             # 1.0 and 1.06 from ann's, <= 1.1
    assert (r.subject, r.light_profile, r.threshold) == ("ann", "night", NIGHT_IDENTIFY_THRESHOLD)
    assert pipeline.identify(PURPLE).subject is None                 # by day: 0.6


@pytest.mark.parametrize("k", [-1, 101])
def test_identify_k_out_of_bounds_is_invalid_argument(pipeline, k):
    with pytest.raises(InvalidArgument, match="k must"):
        pipeline.identify(RED, k=k)
    assert pipeline.embedder.calls["align"] == 0


def test_identify_k_limits_the_neighbours(pipeline):
    pipeline.enroll("ann", ORANGE)
    assert len(pipeline.identify(RED, k=100).neighbours) == 3          # every template there is
    r = pipeline.identify(RED, k=1)                                      # one neighbour: one vote of two
    assert (len(r.neighbours), r.subject, r.votes) == (1, None, 1)
    assert len(pipeline.identify(RED).neighbours) == 3                   # k = 0: the server's 5


@pytest.mark.parametrize("image, reason", [(NOBODY, Reason.NO_FACE), (TINY, Reason.FACE_TOO_SMALL),
                                           (DARK_RED, Reason.TOO_DARK)])
def test_identify_rejects_what_it_cannot_look_at(pipeline, image, reason):
    r = pipeline.identify(image)
    assert (r.decision, r.reason, r.subject, r.neighbours) == (REJECT, reason, None, [])


def test_identify_of_a_photo_too_dark_runs_no_face_model(pipeline):
    r = pipeline.identify(DARK_RED)
    assert (r.reason, stages(r)) == (Reason.TOO_DARK, [("decode", "OK"), ("daynight", "TOO_DARK")])
    assert pipeline.embedder.calls == {"align": 0, "embed": 0}


def test_identify_refuses_several_faces_even_where_verify_judges_the_central_one(pipeline):
    pipeline.sites.put("gym", several_faces="central_face")
    assert pipeline.identify(TWO, site="gym").reason == Reason.MULTIPLE_FACES


def test_identify_at_a_word_site_waits_for_the_word(pipeline):
    r = pipeline.identify(RED, site=WORD_SITE, audio=wav())
    assert (r.reason, stages(r)) == (Reason.TRIGGER_NOT_HEARD, [("decode", "OK"), ("trigger_word", "NOT_HEARD")])
    assert pipeline.embedder.calls == {"align": 0, "embed": 0} and pipeline.gates.daynight.calls == 0
    assert pipeline.identify(RED, site=WORD_SITE, audio=wav(word_at=1.0)).subject == "ann"


# ---------------------------------------------------------------------------------- Enroll
def test_enroll_accepts_then_knows_the_same_bytes(tmp_path):
    p = fake_pipeline(tmp_path)
    first = p.enroll("ann", RED)
    assert (first.status, first.reason, first.duplicates) == ("ACCEPTED", None, [])
    again = p.enroll("ann", RED)                                    # a job re-sent after a crash
    assert (again.status, again.template_id) == ("ALREADY_ENROLLED", first.template_id)
    other = p.enroll("ann", photo(face("red"), size=(300, 300)))    # the same face, other bytes
    assert other.status == "ACCEPTED" and other.template_id != first.template_id
    assert p.status()["templates"] == 2 and p.status()["subjects"] == 1
    assert [e["status"] for e in audit(p)] == ["ACCEPTED", "ALREADY_ENROLLED", "ACCEPTED"]


@pytest.mark.parametrize("image, reason", [(NOBODY, Reason.NO_FACE), (TWO, Reason.MULTIPLE_FACES),
                                           (TINY, Reason.FACE_TOO_SMALL), (DARK_RED, Reason.TOO_DARK)])
def test_enroll_rejects_a_photo_it_cannot_use_with_its_reason(pipeline, image, reason):
    before = pipeline.status()["templates"]
    r = pipeline.enroll("cy", image)
    assert (r.status, r.reason, r.template_id) == ("REJECTED", reason, -1) and r.detail
    assert pipeline.status()["templates"] == before


def test_enroll_of_a_too_dark_photo_runs_no_face_model(pipeline):
    assert pipeline.enroll("cy", DARK_RED).reason == Reason.TOO_DARK
    assert pipeline.embedder.calls == {"align": 0, "embed": 0}


def test_enroll_warns_of_the_same_face_under_another_subject(pipeline):
    r = pipeline.enroll("card-4711", ORANGE)                        # 0.5 from ann's: a shared card?
    assert r.status == "ACCEPTED" and r.duplicates == [("ann", 0.5)]
    assert pipeline.enroll("cy", GREEN).duplicates == []            # nobody within 0.75
    assert pipeline.enroll("ann", ORANGE).duplicates == [("card-4711", 0.0)]   # own templates never warn


@pytest.mark.parametrize("subject, image, match", [("", RED, "subject_id"), ("x" * 257, RED, "256"),
                                                   ("ann", b"", "empty"), ("ann", b"GIF89a...", "undecodable")])
def test_enroll_malformed_requests_raise(pipeline, subject, image, match):
    with pytest.raises(InvalidArgument, match=match):
        pipeline.enroll(subject, image)


# ---------------------------------------------------------------------------------- Cluster
def test_cluster_groups_by_face_and_sets_aside_photos_without_one(pipeline):
    batch = [RED, BLUE, NOBODY, ORANGE, CYAN, TINY]
    r = pipeline.cluster(batch, k=2)
    (a, ra), (b, rb), (none, why), (c, rc), (d, rd), (tiny, why_tiny) = r.assignments
    assert (none, why) == (-1, Reason.NO_FACE) and (tiny, why_tiny) == (-1, Reason.FACE_TOO_SMALL)
    assert ra is rb is rc is rd is None
    assert a == c and b == d and a != b and {a, b} == {0, 1}
    assert r.k == 2 and r.centroids.shape == (2, 128)


def test_cluster_chooses_k_itself(pipeline):
    r = pipeline.cluster([RED, BLUE, ORANGE, CYAN], k=0)
    labels = [c for c, _ in r.assignments]
    assert r.k == 2 and labels[0] == labels[2] != labels[1] == labels[3]


def test_cluster_chooses_k_by_the_checkpoints_cut(tmp_path):
    batch = [RED, BLUE, ORANGE, CYAN]
    assert fake_pipeline(tmp_path / "a", embedder=FakeEmbedder(cluster={"cut": 0.75, "method": "average"})
                         ).cluster(batch, 0).k == 2
    assert fake_pipeline(tmp_path / "b", embedder=FakeEmbedder(cluster={"cut": 1.5, "method": "average"})
                         ).cluster(batch, 0).k == 1


def test_cluster_of_photos_without_faces(pipeline):
    r = pipeline.cluster([NOBODY, TINY], k=0)
    assert r.k == 0 and r.assignments == [(-1, Reason.NO_FACE), (-1, Reason.FACE_TOO_SMALL)]


def test_cluster_errors(pipeline):
    with pytest.raises(InvalidArgument, match="no photos"):
        pipeline.cluster([], 0)
    with pytest.raises(InvalidArgument, match="k must"):
        pipeline.cluster([RED], -1)
    with pytest.raises(InvalidArgument, match="only 1"):
        pipeline.cluster([RED, NOBODY], 2)
    with pytest.raises(InvalidArgument, match="undecodable"):
        pipeline.cluster([RED, b"junk"], 1)


# ---------------------------------------------------------------------------------- DeleteSubject
def test_delete_removes_every_template_of_the_subject(pipeline):
    pipeline.enroll("ann", ORANGE)
    assert pipeline.delete("ann").removed == 2
    assert pipeline.status()["templates"] == 1
    with pytest.raises(NotFound):
        pipeline.verify("ann", RED)
    assert pipeline.identify(RED).subject is None
    with pytest.raises(NotFound, match="ann"):
        pipeline.delete("ann")
    with pytest.raises(InvalidArgument, match="empty"):
        pipeline.delete("")
    deleted = [e for e in audit(pipeline) if e["event"] == "DeleteSubject"]
    assert [(e["subject"], e["removed"]) for e in deleted] == [(pipeline.audit.pseudonym("ann"), 2)]


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("subject, image, error, match", [
    ("", RED, InvalidArgument, "subject_id is empty"),
    ("ann", b"", InvalidArgument, "empty"),
    ("ann", b"GIF89a and then nothing", InvalidArgument, "undecodable"),
    ("ann", b"\x89PNG\r\n\x1a\n garbage", InvalidArgument, "corrupt or truncated image"),
    ("nobody", RED, NotFound, "nobody"),
])
def test_malformed_verify_requests_are_errors_not_decisions(pipeline, subject, image, error, match):
    with pytest.raises(error, match=match):
        pipeline.verify(subject, image)
    assert pipeline.embedder.calls == {"align": 0, "embed": 0}
    assert all(e["event"] != "Verify" for e in audit(pipeline))


def test_a_photo_over_the_pixel_limit_is_invalid_argument(tmp_path):
    p = fake_pipeline(tmp_path, max_pixels=100_000)
    p.enroll("ann", photo(face("red"), size=(300, 300)))           # 90,000 px
    with pytest.raises(InvalidArgument, match="over the limit of 100000"):
        p.verify("ann", RED)                                        # 120,000 px


def test_the_audit_records_decisions_without_photo_or_embedding(pipeline):
    pipeline.verify("ann", ORANGE)
    pipeline.identify(BLUE)
    entries = audit(pipeline)
    assert [e["event"] for e in entries] == ["Enroll", "Enroll", "Verify", "Identify"]
    v = entries[2]
    assert (v["reason"], v["decision"], v["distance"], v["threshold"], v["encoder_version"]) == (
        "MATCH", "ACCEPT", 0.5, THRESHOLD, VERSION)
    assert [s["name"] for s in v["stages"]] == ["decode", "daynight", "detect", "encode", "match"]
    assert len((pipeline.settings.data_dir / "audit.jsonl").read_text()) < 2000

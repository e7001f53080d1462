"""A site with no policy or thresholds of its own uses the default site's (CONTRACT.md), and
`facegate site` lists which sites have their own. Plain pipeline calls on the fake encoder of
fakes.py (red-orange 0.5, red-purple 1.0; the fake checkpoint's thresholds: verify 0.75 by day,
identify 0.6)."""
from __future__ import annotations

import json

import pytest
from fakes import THRESHOLD, VERSION, face, fake_pipeline, photo, wav

from facegate.reasons import Reason
from service.calibration import threshold_in_force
from service.cli import main
from service.errors import FailedPrecondition

RED, ORANGE, PURPLE, BLUE = (photo(face(c)) for c in ("red", "orange", "purple", "blue"))


@pytest.fixture
def pipeline(tmp_path):
    p = fake_pipeline(tmp_path)
    p.enroll("ann", RED)
    p.enroll("bob", BLUE)
    return p


def test_a_site_without_thresholds_uses_the_default_sites(pipeline):
    assert pipeline.verify("ann", ORANGE, site="gym").threshold == THRESHOLD    # nothing calibrated: the encoder's
    pipeline.thresholds.put("default", "day", 0.4, VERSION)                      # stricter than red-orange (0.5)
    pipeline.thresholds.put("default", "day", 0.45, VERSION, kind="identify")
    r = pipeline.verify("ann", ORANGE, site="gym")
    assert (r.threshold, r.decision, r.reason, r.site) == (0.4, "REJECT", Reason.NO_MATCH, "gym")
    assert pipeline.identify(ORANGE, site="gym").threshold == 0.45
    pipeline.thresholds.put("gym", "day", 1.2, VERSION)                          # its own: red-purple (1.0) passes
    assert pipeline.verify("ann", PURPLE, site="gym").decision == "ACCEPT"
    assert pipeline.identify(ORANGE, site="gym").threshold == 0.45               # ...it has no identify of its own
    assert pipeline.verify("ann", ORANGE, site="pool").threshold == 0.4


def test_a_site_without_a_policy_follows_the_default_sites(pipeline):
    pipeline.sites.put("default", trigger_word=True)
    r = pipeline.verify("ann", RED, site="gym")
    assert (r.decision, r.reason) == ("REJECT", Reason.TRIGGER_NOT_HEARD)
    assert pipeline.verify("ann", RED, site="gym", audio=wav(word_at=0.5)).decision == "ACCEPT"
    assert pipeline.identify(RED, site="gym").reason == Reason.TRIGGER_NOT_HEARD
    pipeline.sites.put("gym", trigger_word=False)                                # its own policy wins
    assert pipeline.verify("ann", RED, site="gym").decision == "ACCEPT"


def test_the_default_sites_stale_threshold_is_refused_like_the_sites_own(pipeline):
    pipeline.thresholds.put("default", "day", 0.4, "another-encoder")
    with pytest.raises(FailedPrecondition, match="another-encoder"):
        pipeline.verify("ann", ORANGE, site="gym")


def test_calibrate_enrolled_counts_the_default_sites_threshold_as_in_force(pipeline):
    meta = pipeline.embedder.meta
    assert threshold_in_force(pipeline.thresholds, "gym", "verify", VERSION, meta, "default") == (THRESHOLD, "encoder")
    pipeline.thresholds.put("default", "day", 0.4, VERSION)
    assert threshold_in_force(pipeline.thresholds, "gym", "verify", VERSION, meta, "default") == (0.4, "default_site")
    pipeline.thresholds.put("gym", "day", 0.5, VERSION)
    assert threshold_in_force(pipeline.thresholds, "gym", "verify", VERSION, meta, "default") == (0.5, "site")


def test_site_cli_lists_the_sites_of_their_own(tmp_path, capsys):
    from service.thresholds import ThresholdStore

    def site(*args) -> dict:
        assert main(["site", *args, "--data-dir", str(tmp_path), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    assert site()["sites"] == []
    assert site("default", "--trigger-word", "on")["policy_of"] == "default"
    shown = site("gym")
    assert (shown["trigger_word"], shown["policy_of"], shown["thresholds"]) == (True, "default", [])
    changed = site("gym", "--several-faces", "central-face")        # its own now, from the default's
    assert (changed["trigger_word"], changed["several_faces"], changed["policy_of"]) == (True, "central_face", "gym")
    ThresholdStore(tmp_path).put("pool", "day", 0.5, VERSION)
    assert site()["sites"] == [{"site": "default", "policy": True, "thresholds": []},
                               {"site": "gym", "policy": True, "thresholds": []},
                               {"site": "pool", "policy": False, "thresholds": ["day"]}]
    assert site("pool")["policy_of"] == "default" and site("pool")["thresholds"] == ["day"]
    assert main(["site", "--trigger-word", "on", "--data-dir", str(tmp_path), "--json"]) == 2

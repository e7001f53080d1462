"""ThresholdStore: per site and profile, tied to the encoder version it was calibrated for."""
import json
import re

import pytest

from service.thresholds import FILE, ThresholdError, ThresholdStore


def test_put_then_get(tmp_path):
    store = ThresholdStore(tmp_path)
    entry = store.put("north-gate", "day", 0.875, "door-v2-0123456789ab", target_far=1e-3, pairs=4000)
    assert entry["threshold"] == 0.875
    assert entry["encoder_version"] == "door-v2-0123456789ab"
    assert entry["target_far"] == 1e-3 and entry["pairs"] == 4000
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["calibrated_at"])
    assert store.get("north-gate", "day", "door-v2-0123456789ab") == 0.875


def test_persisted_as_json_and_read_by_another_store(tmp_path):
    ThresholdStore(tmp_path / "data").put("lab", "night", 1, "v1")
    path = tmp_path / "data" / FILE
    assert path.is_file()
    assert not (tmp_path / "data" / (FILE + ".tmp")).exists()
    on_disk = json.loads(path.read_text())
    assert on_disk["lab"]["night"]["threshold"] == 1.0
    assert isinstance(on_disk["lab"]["night"]["threshold"], float)
    assert ThresholdStore(str(tmp_path / "data")).get("lab", "night", "v1") == 1.0


def test_sites_and_profiles_are_kept_apart(tmp_path):
    store = ThresholdStore(tmp_path)
    store.put("a", "day", 0.8, "v1")
    store.put("a", "night", 0.9, "v1")
    store.put("b", "day", 0.7, "v2")
    assert store.get("a", "day", "v1") == 0.8
    assert store.get("a", "night", "v1") == 0.9
    assert store.get("b", "day", "v2") == 0.7
    store.put("a", "day", 0.85, "v1")        # recalibrating replaces only that entry
    assert store.get("a", "day", "v1") == 0.85
    assert store.get("a", "night", "v1") == 0.9


def test_unknown_site_or_profile_is_none(tmp_path):
    store = ThresholdStore(tmp_path)
    assert store.get("anywhere", "day", "v1") is None      # no file yet
    store.put("a", "day", 0.8, "v1")
    assert store.get("b", "day", "v1") is None
    assert store.get("a", "night", "v1") is None


def test_another_encoder_version_is_refused(tmp_path):
    store = ThresholdStore(tmp_path)
    store.put("north-gate", "day", 0.875, "door-v2-0123456789ab")
    with pytest.raises(ThresholdError) as e:
        store.get("north-gate", "day", "door-v3-ba9876543210")
    msg = str(e.value)
    assert "door-v2-0123456789ab" in msg
    assert "door-v3-ba9876543210" in msg
    assert "facegate calibrate" in msg
    assert "--site north-gate" in msg and "--profile day" in msg


def test_invalid_json_is_a_threshold_error(tmp_path):
    (tmp_path / FILE).write_text("{not json")
    with pytest.raises(ThresholdError, match="not valid JSON"):
        ThresholdStore(tmp_path).get("a", "day", "v1")


def test_threshold_error_is_a_value_error():
    assert issubclass(ThresholdError, ValueError)


def test_too_dark_level_is_kept_per_site_with_its_encoder_version(tmp_path):
    store = ThresholdStore(tmp_path)
    store.put("pool", "night", 0.045, "v1", kind="too_dark", min_tar=0.6)
    store.put("pool", "night", 1.02, "v1", kind="verify")
    assert store.get("pool", "night", "v1", kind="too_dark") == 0.045
    assert store.get("pool", "night", "v1") == 1.02                 # the distance threshold is apart
    with pytest.raises(ThresholdError, match="calibrated for encoder v1, not v2"):
        store.get("pool", "night", "v2", kind="too_dark")
    with pytest.raises(ValueError, match="kind must be one of"):
        store.put("pool", "night", 1.0, "v1", kind="brightness")


def test_site_policies(tmp_path):
    from service.sites import SiteError, SitePolicy, SiteStore

    store = SiteStore(tmp_path)
    assert store.get("gym") == SitePolicy(trigger_word=False)       # a site without an entry requires nothing
    assert store.get("gym").several_faces == "refuse"               # ...and refuses a photo of several faces
    store.put("gym", several_faces="central_face")
    assert SiteStore(tmp_path).get("gym") == SitePolicy(trigger_word=False, several_faces="central_face")
    with pytest.raises(SiteError, match="several_faces must be one of refuse, central_face"):
        store.put("gym", several_faces="largest")
    assert store.get("gym").several_faces == "central_face"         # the refused change wrote nothing
    store.put("gym", several_faces="refuse")
    store.put("gym", trigger_word=True)
    assert SiteStore(tmp_path).get("gym").trigger_word is True       # read back by another store, from disk
    assert SiteStore(tmp_path).get("pool").trigger_word is False
    store.put("gym", trigger_word=False)
    assert store.get("gym").trigger_word is False
    (tmp_path / "sites.json").write_text('{"gym": {"trigger_word": true, "fingerprint": 1}}')
    with pytest.raises(SiteError, match="unknown setting"):
        store.get("gym")
    (tmp_path / "sites.json").write_text("{not json")
    with pytest.raises(SiteError, match="not valid JSON"):
        store.get("gym")

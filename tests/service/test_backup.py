"""`facegate backup` / `facegate restore` (service/backup.py): a round trip gives the same answers,
a damaged backup is refused with the file named, a data folder in use is not overwritten; and,
with real photos, a backup taken from a real server while enrollments go on restores into a
folder where a second server answers Verify and Identify exactly as the first."""
from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fakes import DIM, FakeDayNight, FakeEmbedder, face, photo

from service.cli import main
from service.index_layout import current_index_dir, new_index_dir

ROOT = Path(__file__).resolve().parents[2]
RED, ORANGE, BLUE = photo(face("red")), photo(face("orange")), photo(face("blue"))


def layout_pipeline(data: Path):
    """A real Pipeline on the fake encoder, its templates where `serve` keeps them (D/indexes/...)."""
    from index.template_store import TemplateStore
    from service.pipeline import Gates, Pipeline
    from service.settings import Settings
    from service.thresholds import ThresholdStore

    return Pipeline(Settings(data_dir=data), FakeEmbedder(), TemplateStore(current_index_dir(data), dim=DIM),
                    ThresholdStore(data), gates=Gates(daynight=FakeDayNight()))


def run(capsys, *args) -> tuple[int, dict]:
    capsys.readouterr()
    rc = main([*args, "--json"])
    return rc, json.loads(capsys.readouterr().out)


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    p = layout_pipeline(d)
    p.enroll("ann", RED)
    p.enroll("bob", BLUE)
    p.verify("ann", ORANGE)
    p.thresholds.put("gym", "day", 0.5, p.version)
    p.sites.put("gym", trigger_word=True)
    old = new_index_dir(d, "older")                       # a second index version, not served
    from index.template_store import TemplateStore

    s = TemplateStore(old, dim=DIM)
    s.add("carl", p.embedder.embed_crops(p.embedder.align(p.decode(RED)).crop[None])[0], "x", "older-encoder")
    s.close()
    yield d, p
    p.store.close()


def test_a_round_trip_restores_every_file_and_the_same_answers(data, tmp_path, capsys):
    d, p = data
    rc, b = run(capsys, "backup", str(tmp_path / "bk"), "--data-dir", str(d))
    assert rc == 0 and (b["subjects"], b["templates"], b["index_versions"], b["audit_lines"]) == (2, 2, 2, 3)
    assert b["encoder_versions"] == ["fake-encoder-1", "older-encoder"] and b["current_index"] == "initial"
    m = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    listed = {f["path"] for f in m["files"]}
    assert listed == {"CURRENT", "audit.jsonl", "audit.key", "sites.json", "thresholds.json",
                      "indexes/initial/templates.sqlite", "indexes/older/templates.sqlite"}   # no -wal, no -shm
    assert m["audit"]["lines"] == 3 and m["audit"]["last_hash"] == json.loads(
        (d / "audit.jsonl").read_text().splitlines()[-1])["hash"]
    assert stat.S_IMODE((tmp_path / "bk" / "audit.key").stat().st_mode) == 0o600

    rc, r = run(capsys, "restore", str(tmp_path / "bk"), "--data-dir", str(tmp_path / "restored"))
    assert rc == 0 and (r["files"], r["audit_lines"], r["audit_intact"], r["previous"]) == (7, 3, True, None)
    back = tmp_path / "restored"
    for name in ("CURRENT", "audit.jsonl", "audit.key", "sites.json", "thresholds.json"):
        assert (back / name).read_bytes() == (d / name).read_bytes(), name
    for name in ("initial", "older"):
        rows = [sqlite3.connect(x / "indexes" / name / "templates.sqlite").execute(
            "SELECT id, subject, photo_sha256, encoder_version, vector FROM templates ORDER BY id").fetchall()
            for x in (d, back)]
        assert rows[0] == rows[1] and rows[0]
    q = layout_pipeline(back)
    for subject in ("ann", "bob"):
        assert q.verify(subject, ORANGE).distance == p.verify(subject, ORANGE).distance
    assert q.identify(RED).neighbours == p.identify(RED).neighbours
    assert q.threshold("gym", "day", "verify") == 0.5 and q.sites.get("gym").trigger_word
    assert q.audit.pseudonym("ann") == p.audit.pseudonym("ann")               # the key came along
    q.store.close()


@pytest.mark.parametrize("damage, named", [
    ("flip a byte", "indexes/initial/templates.sqlite"),
    ("cut the audit", "audit.jsonl"),
    ("remove the key", "audit.key"),
])
def test_a_damaged_backup_is_refused_with_the_file_named(data, tmp_path, capsys, damage, named):
    d, _ = data
    bk = tmp_path / "bk"
    assert run(capsys, "backup", str(bk), "--data-dir", str(d))[0] == 0
    f = bk / named
    if damage == "flip a byte":
        raw = bytearray(f.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        f.write_bytes(bytes(raw))
    elif damage == "cut the audit":
        f.write_bytes(f.read_bytes()[:-10])
    else:
        f.unlink()
    rc, r = run(capsys, "restore", str(bk), "--data-dir", str(tmp_path / "restored"))
    assert rc == 2 and r["error"]["code"] == "FAILED_PRECONDITION"
    assert named in r["error"]["message"] and "nothing restored" in r["error"]["message"]
    assert not (tmp_path / "restored").exists() and {x.name for x in tmp_path.iterdir()} == {"data", "bk"}


def test_a_damaged_or_foreign_manifest_is_refused(data, tmp_path, capsys):
    d, _ = data
    bk = tmp_path / "bk"
    assert run(capsys, "backup", str(bk), "--data-dir", str(d))[0] == 0
    m = json.loads((bk / "manifest.json").read_text())
    m["files"][0]["path"] = "../../etc/cron.d/x"
    (bk / "manifest.json").write_text(json.dumps(m))
    rc, r = run(capsys, "restore", str(bk), "--data-dir", str(tmp_path / "restored"))
    assert rc == 2 and "outside the backup" in r["error"]["message"]
    (bk / "manifest.json").write_text("{\"format\": 1, \"files\": ")
    rc, r = run(capsys, "restore", str(bk), "--data-dir", str(tmp_path / "restored"))
    assert rc == 2 and "manifest.json is damaged" in r["error"]["message"]
    rc, r = run(capsys, "restore", str(d), "--data-dir", str(tmp_path / "restored"))
    assert rc == 2 and "not a facegate backup" in r["error"]["message"]


def test_a_folder_in_use_is_not_overwritten_without_force_and_is_kept_aside_with_it(data, tmp_path, capsys):
    d, _ = data
    bk = tmp_path / "bk"
    assert run(capsys, "backup", str(bk), "--data-dir", str(d))[0] == 0
    rc, r = run(capsys, "backup", str(bk), "--data-dir", str(d))            # never over another backup
    assert rc == 2 and "not an empty folder" in r["error"]["message"]
    rc, r = run(capsys, "backup", str(d / "inside"), "--data-dir", str(d))
    assert rc == 2 and "inside the data folder" in r["error"]["message"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    rc, r = run(capsys, "restore", str(bk), "--data-dir", str(other))
    assert rc == 2 and "--force" in r["error"]["message"] and (other / "notes.txt").exists()
    rc, r = run(capsys, "restore", str(bk), "--data-dir", str(other), "--force")
    assert rc == 0 and (Path(r["previous"]) / "notes.txt").read_text() == "keep me"
    assert (other / "CURRENT").read_text() == "initial\n" and not (other / "notes.txt").exists()


# --------------------------------------------------------------------- real photos, real servers
PEOPLE = ["Abdullah_Gul", "Reese_Witherspoon", "Tom_Cruise"]


def cli(*args) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, "-m", "service.cli", *args, "--json"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    return p.returncode, json.loads(p.stdout)


class Enroller(threading.Thread):
    """Enrolls one photo after another through its own connection until told to stop."""

    def __init__(self, address: str, photos: list[tuple[str, Path]]):
        super().__init__(daemon=True)
        from service.client import Client

        self.client, self.photos = Client(address, timeout=60), photos
        self.stop, self.accepted, self.last_at, self.error = threading.Event(), [], 0.0, None

    def run(self):
        try:
            for subject, path in self.photos:
                if self.stop.is_set():
                    return
                if self.client.enroll([(subject, path)])["accepted"]:
                    self.accepted.append(subject)
                    self.last_at = time.time()
        except Exception as e:          # reported by the test
            self.error = e


def comparable(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("latency_ms", "stages")}


@pytest.mark.slow
def test_a_backup_taken_while_serving_and_enrolling_restores_the_same_answers(lfw, tmp_path):
    from index.template_store import TemplateStore
    from test_server import PHOTOS, STRANGER, Server

    images = lfw / "images"
    photos = {p: [images / p / f"{p}_{n:04d}.jpg" for n in PHOTOS[p][:2]] for p in PEOPLE}
    others = [d.name for d in sorted(images.iterdir()) if d.name not in PEOPLE][:80]
    data, bk, back = tmp_path / "data", tmp_path / "bk", tmp_path / "restored"
    first = Server(data)
    second = None
    try:
        assert first.client.enroll([(p, photos[p][0]) for p in PEOPLE])["accepted"] == 3
        writer = Enroller(first.address, [(o, images / o / f"{o}_0001.jpg") for o in others])
        writer.start()
        while len(writer.accepted) < 2 and writer.is_alive():
            time.sleep(0.1)
        before = len(writer.accepted)
        rc, b = cli("backup", str(bk), "--data-dir", str(data))
        ended = time.time()
        while writer.last_at <= ended and writer.is_alive():    # the enrollments went on past the backup
            time.sleep(0.1)
        writer.stop.set()
        writer.join(120)
        assert writer.error is None and rc == 0, b
        assert before >= 2 and writer.last_at > ended
        print(f"enrolled before the backup {before}, in all {len(writer.accepted)}; in the backup "
              f"{b['templates'] - 3}", file=sys.stderr)
        assert b["templates"] >= 3 + before and b["templates"] < 3 + len(writer.accepted)

        rc, r = cli("restore", str(bk), "--data-dir", str(back))
        assert rc == 0 and r["audit_intact"] is True
        # one point in time: the restored rows are the first rows of the live store, all of them
        live = sqlite3.connect(current_index_dir(data) / "templates.sqlite").execute(
            "SELECT id, subject, photo_sha256 FROM templates ORDER BY id").fetchall()
        kept = sqlite3.connect(current_index_dir(back) / "templates.sqlite").execute(
            "SELECT id, subject, photo_sha256 FROM templates ORDER BY id").fetchall()
        assert kept == live[:len(kept)] and len(kept) == b["templates"]
        store = TemplateStore(current_index_dir(back))
        store.check()
        store.close()
        # ...and the restored audit is the live audit's beginning, chain intact
        audit_live = (data / "audit.jsonl").read_text().splitlines()
        audit_kept = (back / "audit.jsonl").read_text().splitlines()
        assert audit_kept == audit_live[:len(audit_kept)] and len(audit_kept) >= len(kept)

        second = Server(back)
        for other in writer.accepted:          # both now hold the same people: compare whole answers
            first.client.delete(other)
            if other in {s for _, s, _ in kept}:
                second.client.delete(other)
        assert second.client.status()["templates"] == first.client.status()["templates"] == 3
        for p in PEOPLE:
            probe = photos[p][1].read_bytes()
            for claimed in PEOPLE:
                a, z = first.client.verify(claimed, probe), second.client.verify(claimed, probe)
                assert comparable(a) == comparable(z) and a["distance"] is not None
            assert comparable(first.client.identify(probe)) == comparable(second.client.identify(probe))
        stranger = (images / STRANGER).read_bytes()
        assert comparable(first.client.identify(stranger)) == comparable(second.client.identify(stranger))
        rc, v = cli("audit", "verify", "--data-dir", str(back))          # the restored chain goes on
        assert rc == 0 and v["lines"] > len(audit_kept)
        assert cli("audit", "pseudonym", "--data-dir", str(back), "Tom_Cruise")[1] == \
            cli("audit", "pseudonym", "--data-dir", str(data), "Tom_Cruise")[1]
    finally:
        first.stop()
        if second:
            second.stop()

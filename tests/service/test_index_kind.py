"""Settings.index_kind: validated, a `serve --index-kind` flag and FACEGATE_INDEX_KIND, and a real
server on a real port searching its templates through the HNSW index it was told to build."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.cli import build_parser, main
from service.client import Client
from service.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_index_kind_defaults_to_auto_and_takes_flag_or_environment(monkeypatch):
    assert Settings().index_kind == "auto"
    assert load_settings(index_kind="hnsw").index_kind == "hnsw"
    monkeypatch.setenv("FACEGATE_INDEX_KIND", "flat")
    assert Settings().index_kind == "flat"
    assert build_parser().parse_args(["serve", "--index-kind", "hnsw"]).index_kind == "hnsw"


def test_an_unknown_index_kind_gets_a_clear_answer():
    with pytest.raises(ValidationError, match="'auto', 'flat' or 'hnsw'"):
        Settings(index_kind="annoy")
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["serve", "--index-kind", "annoy"])
    assert e.value.code == 2


@pytest.mark.slow                                    # serve imports the face models' modules
def test_serve_with_an_unknown_index_kind_in_the_environment_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("FACEGATE_INDEX_KIND", "annoy")
    assert main(["serve", "--listen", "127.0.0.1:0"]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert err["code"] == "INVALID_ARGUMENT" and "index_kind" in err["message"]


@pytest.mark.slow
def test_serve_searches_an_hnsw_index_when_told_to(tmp_path, lfw):
    people = {"Abdullah_Gul": (2, 4), "Reese_Witherspoon": (2, 4), "Tom_Cruise": (1, 3)}
    gallery = tmp_path / "gallery"
    for p, (enrolled, _) in people.items():
        (gallery / p).mkdir(parents=True)
        name = f"{p}_{enrolled:04d}.jpg"
        (gallery / p / name).write_bytes((lfw / "images" / p / name).read_bytes())
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--listen", "127.0.0.1:0",
                             "--data-dir", str(tmp_path / "data"), "--index-kind", "hnsw"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        kind, port, deadline = None, None, time.time() + 120
        while port is None and time.time() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            kind = kind or re.search(r"template index: (\w+) \((\w+)\)", line)
            port = re.search(r"serving on port (\d+)", line)
        assert port, f"server did not start: {proc.stderr.read()}"
        assert kind and kind.groups() == ("hnsw", "hnsw")
        c = Client(f"127.0.0.1:{port.group(1)}", timeout=60)
        s = c.enroll([(p, next((gallery / p).iterdir())) for p in people])
        assert s["accepted"] == 3
        for p, (_, probe) in people.items():
            r = c.identify((lfw / "images" / p / f"{p}_{probe:04d}.jpg").read_bytes())
            assert r["neighbours"][0]["subject"] == p
        assert c.delete("Tom_Cruise")["removed"] == 1        # a tombstone in the graph: never a neighbour
        r = c.identify((lfw / "images" / "Tom_Cruise" / "Tom_Cruise_0003.jpg").read_bytes())
        assert "Tom_Cruise" not in [n["subject"] for n in r["neighbours"]]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

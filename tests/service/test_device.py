"""`serve --device cpu|cuda|auto` (Settings.device): where the encoder, MTCNN and the gates run,
and the clear refusal of CUDA where there is none. (The CUDA path itself needs a GPU.)"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from service.cli import main
from service.device import resolve_device
from service.errors import FailedPrecondition
from service.settings import Settings

HAS_CUDA = torch.cuda.is_available()
no_gpu_only = pytest.mark.skipif(HAS_CUDA, reason="a GPU is visible here: CUDA is not refused")


def test_cpu_and_auto_resolve_to_what_this_machine_has():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if HAS_CUDA else "cpu")


@no_gpu_only
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_refused_with_the_way_out(name):
    with pytest.raises(FailedPrecondition) as e:
        resolve_device(name)
    assert f"--device {name}" in e.value.message and "--device cpu" in e.value.message


@no_gpu_only
def test_serve_device_cuda_exits_2_with_the_cli_error_before_loading_anything(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["serve", "--device", "cuda", "--data-dir", str(data), "--listen", "127.0.0.1:0"]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert err["code"] == "FAILED_PRECONDITION" and "CUDA is not available" in err["message"]
    assert not data.exists()          # refused first: the data folder was not even created


def test_the_device_setting_is_read_from_the_environment_and_checked(monkeypatch, capsys):
    monkeypatch.setenv("FACEGATE_DEVICE", "auto")
    assert Settings().device == "auto"
    assert Settings(device="cuda:1").device == "cuda:1"
    monkeypatch.setenv("FACEGATE_DEVICE", "gpu")
    assert main(["serve", "--data-dir", "unused"]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert err["code"] == "INVALID_ARGUMENT" and "device" in err["message"]


@pytest.mark.slow      # loads the real models
def test_the_encoder_mtcnn_and_the_gates_load_and_run_on_the_device_given():
    from encoder.embedder import Embedder
    from gates.daynight import DayNightGate
    from gates.trigger_word import TriggerWordGate

    device = resolve_device("cpu")
    emb = Embedder.from_checkpoint(device=device)
    assert emb.device == device and emb.aligner.mtcnn.device == device
    assert {p.device for p in emb.model.parameters()} == {device}
    assert emb.embed(np.zeros((120, 120, 3), np.uint8)).vector is None      # runs: no face in a black square
    day, word = DayNightGate.load(device=device), TriggerWordGate.load(device=device)
    assert day.device == device and word.device == device
    assert day.predict(np.full((64, 64, 3), 200, np.uint8)).label == "day"
    assert word.predict(_silence_wav()) == []


def _silence_wav() -> bytes:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000, np.int16).tobytes())
    return buf.getvalue()

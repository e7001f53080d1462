"""Checkpoints: save, load, version, recording a threshold, and the errors for bad files.

A small FaceResNet keeps this fast. The file stores float16 weights that load back as float32,
so the loaded encoder is *exactly* an encoder whose weights went through .half().float(); against
the original float32 encoder it is only close.
"""
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from encoder.checkpoint import (FORMAT, CheckpointError, load_checkpoint, record_in_checkpoint, save_checkpoint,
                                weights_digest)
from encoder.face_encoder import EncoderConfig, FaceEncoder

CFG = EncoderConfig(backbone_args={"widths": (8, 16), "depths": (1, 1), "stem_width": 8},
                    input_size=32, embedding_dim=16)


def _model(seed: int = 0) -> FaceEncoder:
    torch.manual_seed(seed)
    m = FaceEncoder(CFG)
    # trained-looking BatchNorm statistics, so the buffers matter too
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return m.eval()


def _half_roundtrip(m: FaceEncoder) -> FaceEncoder:
    ref = FaceEncoder(CFG)
    ref.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in m.state_dict().items()})
    return ref.eval()


def _save(path, model, **kw) -> dict:
    """Save, then read the stored checkpoint back (weights included) straight from the file."""
    save_checkpoint(path, model, **kw)
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture
def x():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_loaded_encoder_is_exactly_the_float16_rounded_one(tmp_path, x):
    m = _model()
    save_checkpoint(tmp_path / "enc.pt", m, name="tiny")
    loaded, meta = load_checkpoint(tmp_path / "enc.pt")
    assert not loaded.training
    assert loaded.config == CFG
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    with torch.no_grad():
        y_loaded = loaded(x)
        y_ref = _half_roundtrip(m)(x)
        y_orig = m(x)
    assert torch.equal(y_loaded, y_ref)
    # against the float32 original: close, not equal (float16 keeps ~3 decimal digits)
    torch.testing.assert_close(y_loaded, y_orig, atol=1e-2, rtol=0)
    # the weights themselves are the float16 values
    for k, v in m.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(loaded.state_dict()[k], v.half().float()), k


def test_half_false_is_lossless(tmp_path, x):
    m = _model()
    save_checkpoint(tmp_path / "enc.pt", m, name="tiny", half=False)
    loaded, _ = load_checkpoint(tmp_path / "enc.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))


def test_meta_has_everything_but_the_weights(tmp_path):
    m = _model()
    ckpt = _save(tmp_path / "sub" / "enc.pt", m, name="tiny", threshold=0.9,
                 training={"epochs": 3}, metrics={"lfw": {"acc": 0.9}})
    assert (tmp_path / "sub" / "enc.pt").exists()
    assert not (tmp_path / "sub" / "enc.pt.tmp").exists()
    _, meta = load_checkpoint(tmp_path / "sub" / "enc.pt")
    assert "state_dict" not in meta
    assert meta["format"] == FORMAT == "facegate-encoder/1"
    assert meta["version"] == ckpt["version"]
    assert meta["threshold"] == 0.9
    assert meta["training"] == {"epochs": 3}
    assert meta["metrics"] == {"lfw": {"acc": 0.9}}
    assert meta["preprocessing"]["input_size"] == 32
    assert meta["preprocessing"]["normalise"] == {"mean": 127.5, "std": 128.0}
    assert meta["preprocessing"]["flip_average"] is False
    assert meta["config"]["backbone"] == "face_resnet"
    assert meta["name"] == "tiny"


def test_save_checkpoint_returns_the_checkpoint_dict(tmp_path):
    # `facegate train` reads the version from the returned dict.
    path = tmp_path / "enc.pt"
    ckpt = save_checkpoint(path, _model(), name="tiny")
    assert isinstance(ckpt, dict), f"save_checkpoint returned {type(ckpt).__name__}: {ckpt!r}"
    assert ckpt["version"] == load_checkpoint(path)[1]["version"]


def test_version_is_name_and_weights_digest(tmp_path):
    m = _model()
    ckpt = _save(tmp_path / "a.pt", m, name="door-v2")
    v = ckpt["version"]
    assert v.startswith("door-v2-")
    assert re.fullmatch(r"door-v2-[0-9a-f]{12}", v)
    assert v == "door-v2-" + weights_digest(ckpt["state_dict"], ckpt["preprocessing"])
    # same weights, same version; another name keeps the digest
    assert _save(tmp_path / "b.pt", m, name="door-v2")["version"] == v
    assert _save(tmp_path / "c.pt", m, name="other")["version"] == "other-" + v[len("door-v2-"):]


def test_version_covers_the_preprocessing(tmp_path):
    m = _model()
    v_plain = _save(tmp_path / "a.pt", m, name="tiny")["version"]
    v_flip = _save(tmp_path / "b.pt", m, name="tiny", flip_average=True)["version"]
    assert v_plain != v_flip and v_flip.startswith("tiny-")


def test_version_changes_when_weights_change(tmp_path):
    m = _model()
    v1 = _save(tmp_path / "a.pt", m, name="tiny")["version"]
    with torch.no_grad():
        m.head_fc.bias[0] += 0.5
    v2 = _save(tmp_path / "b.pt", m, name="tiny")["version"]
    assert v1 != v2
    assert v1.startswith("tiny-") and v2.startswith("tiny-")
    assert _save(tmp_path / "c.pt", _model(seed=1), name="tiny")["version"] not in (v1, v2)


def test_version_changes_when_a_buffer_changes(tmp_path):
    m = _model()
    v1 = _save(tmp_path / "a.pt", m, name="tiny")["version"]
    with torch.no_grad():
        m.head_out.running_mean[0] += 0.5
    assert _save(tmp_path / "b.pt", m, name="tiny")["version"] != v1


def test_record_in_checkpoint_keeps_version_and_weights(tmp_path, x):
    path = tmp_path / "enc.pt"
    m = _model()
    version = _save(path, m, name="tiny", metrics={"lfw": {"acc": 0.91}})["version"]
    returned = record_in_checkpoint(path, threshold=0.873, threshold_info={"target_far": 1e-3, "pairs": 6000},
                                    metrics={"campus": {"tar": 0.97}})
    assert returned == version
    loaded, meta = load_checkpoint(path)
    assert meta["version"] == version
    assert meta["threshold"] == 0.873
    assert meta["threshold_info"] == {"target_far": 1e-3, "pairs": 6000}
    # metrics are merged, not replaced
    assert meta["metrics"] == {"lfw": {"acc": 0.91}, "campus": {"tar": 0.97}}
    with torch.no_grad():
        assert torch.equal(loaded(x), _half_roundtrip(m)(x))
    assert not path.with_suffix(".pt.tmp").exists()


def test_recorded_numpy_values_stay_loadable(tmp_path):
    """Calibration code computes with NumPy; what it records must still load with
    weights_only=True (a np.float64 cut once made the shipped checkpoint unreadable)."""
    path = tmp_path / "enc.pt"
    saved = _save(path, _model(), name="tiny", training={"history": [{"loss": np.float32(0.5)}]})
    assert saved["training"] == {"history": [{"loss": 0.5}]}
    record_in_checkpoint(path, threshold=np.float64(0.7), threshold_info={"far": np.float32(0.001)},
                         metrics={"dev": {"acc": np.float64(0.9), "curve": np.array([0.1, 0.2])}},
                         cluster={"method": "complete", "cut": np.float64(0.975), "k": np.int64(3)})
    _, meta = load_checkpoint(path)
    assert meta["cluster"] == {"method": "complete", "cut": 0.975, "k": 3}
    assert type(meta["cluster"]["cut"]) is float and type(meta["cluster"]["k"]) is int
    assert meta["threshold_info"]["far"] == pytest.approx(0.001)
    assert meta["metrics"]["dev"] == {"acc": 0.9, "curve": [0.1, 0.2]}


def test_record_metrics_only_keeps_the_threshold(tmp_path):
    path = tmp_path / "enc.pt"
    save_checkpoint(path, _model(), name="tiny", threshold=0.8, threshold_info={"target_far": 1e-2})
    record_in_checkpoint(path, metrics={"lfw": {"acc": 0.5}})
    _, meta = load_checkpoint(path)
    assert meta["threshold"] == 0.8
    assert meta["threshold_info"] == {"target_far": 1e-2}
    assert meta["metrics"] == {"lfw": {"acc": 0.5}}


def test_record_flip_average_changes_version_and_drops_calibration(tmp_path):
    path = tmp_path / "enc.pt"
    v0 = _save(path, _model(), name="tiny", threshold=0.8, metrics={"lfw": {"acc": 0.9}})["version"]
    # the same preprocessing: nothing changes
    assert record_in_checkpoint(path, flip_average=False) == v0
    _, meta = load_checkpoint(path)
    assert (meta["version"], meta["threshold"], meta["metrics"]) == (v0, 0.8, {"lfw": {"acc": 0.9}})
    # flip averaging changes the embeddings: a new version, and the old threshold/metrics go
    v1 = record_in_checkpoint(path, flip_average=True)
    _, meta = load_checkpoint(path)
    assert v1 != v0 and v1.startswith("tiny-") and meta["version"] == v1
    assert meta["preprocessing"]["flip_average"] is True
    assert (meta["threshold"], meta["threshold_info"], meta["metrics"]) == (None, {}, {})
    # and it is the version a fresh save with flip averaging gets
    assert _save(tmp_path / "b.pt", _model(), name="tiny", flip_average=True)["version"] == v1


def test_truncated_file_names_the_path(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, _model(), name="tiny")
    data = good.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(bad)
    assert str(bad) in str(e.value)
    assert "cannot be read" in str(e.value)


def test_not_a_torch_file_is_a_checkpoint_error(tmp_path):
    # arbitrary bytes make torch.load's legacy unpickler raise KeyError: it must surface as
    # CheckpointError, which the CLI turns into a clean error.
    path = tmp_path / "notes.pt"
    path.write_bytes(b"hello world, this is not a checkpoint\n")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


def test_refused_pickle_content_is_a_checkpoint_error(tmp_path):
    # weights_only=True refuses a pickled object that is not a tensor or a plain type, with
    # pickle.UnpicklingError: a tampered checkpoint is a CheckpointError, and no code runs.
    import fractions

    path = tmp_path / "tampered.pt"
    torch.save({"format": FORMAT, "config": {}, "state_dict": {}, "x": fractions.Fraction(1, 3)}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="does not exist") as e:
        load_checkpoint(missing)
    assert str(missing) in str(e.value)


@pytest.mark.parametrize("content", [
    {"version": "x", "state_dict": {}},                 # no format at all
    {"format": "facegate-encoder/0", "state_dict": {}},  # another format
    torch.zeros(3),                                      # not a dict
], ids=["no-format", "wrong-format", "not-a-dict"])
def test_wrong_format(tmp_path, content):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match="is not a facegate-encoder/1 file") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


def test_record_in_checkpoint_refuses_another_format(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, path)
    with pytest.raises(CheckpointError):
        record_in_checkpoint(path, threshold=0.5)


def test_weights_that_do_not_fit_the_config(tmp_path):
    path = tmp_path / "enc.pt"
    ckpt = _save(path, _model(), name="tiny")
    ckpt["config"]["embedding_dim"] = 32      # the head in the file is 16-d
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_float32_precision_leaves_the_version_as_it_was(tmp_path):
    m = _model()
    stored = _save(tmp_path / "a.pt", m, name="tiny", precision="float32")
    assert "precision" not in stored["preprocessing"]
    assert stored["version"] == _save(tmp_path / "b.pt", m, name="tiny")["version"]


def test_bfloat16_precision_is_a_new_version_and_recording_it_drops_calibration(tmp_path):
    path = tmp_path / "enc.pt"
    v0 = _save(path, _model(), name="tiny", threshold=0.8)["version"]
    v1 = record_in_checkpoint(path, precision="bfloat16")
    _, meta = load_checkpoint(path)
    assert v1 != v0 and meta["preprocessing"]["precision"] == "bfloat16" and meta["threshold"] is None
    assert _save(tmp_path / "b.pt", _model(), name="tiny", precision="bfloat16")["version"] == v1
    # and back to float32: the original version again
    assert record_in_checkpoint(path, precision="float32") == v0


def test_unknown_precision_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown precision 'float16'"):
        save_checkpoint(tmp_path / "a.pt", _model(), name="tiny", precision="float16")
    assert not (tmp_path / "a.pt").exists()


@pytest.mark.parametrize("flip", [False, True])
def test_bfloat16_embedder_is_close_to_float32_and_unit_length(tmp_path, flip, monkeypatch):
    from encoder.embedder import Embedder

    monkeypatch.setenv("FACEGATE_PRECISION", "bfloat16")    # in bfloat16 even where it is emulated

    crops = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    out = {}
    for precision in ("float32", "bfloat16"):
        save_checkpoint(tmp_path / f"{precision}.pt", _model(), name="tiny", flip_average=flip, precision=precision)
        model, meta = load_checkpoint(tmp_path / f"{precision}.pt")
        out[precision] = Embedder(model, meta, aligner=object()).embed_crops(crops)
    f32, b16 = out["float32"], out["bfloat16"]
    assert b16.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b16, axis=1), 1.0, atol=1e-6)
    cos = (f32 * b16).sum(1)
    assert cos.min() > 0.99                  # the same encoder, in coarser arithmetic
    assert not np.array_equal(f32, b16)      # and really computed in bfloat16


def test_bfloat16_embedder_runs_channels_last_with_the_same_embeddings(tmp_path, monkeypatch):
    """A bfloat16 checkpoint is embedded in NHWC (faster convolutions on the CPU): the layout
    changes, the embeddings do not (beyond bfloat16's own rounding); float32 ones stay NCHW."""
    from encoder.embedder import Embedder
    from encoder.face_encoder import preprocess

    monkeypatch.setenv("FACEGATE_PRECISION", "bfloat16")

    crops = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    save_checkpoint(tmp_path / "b.pt", _model(), name="tiny", precision="bfloat16")
    model, meta = load_checkpoint(tmp_path / "b.pt")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        nchw = F.normalize(model.eval()(preprocess(crops, model.config.input_size)).float(), dim=1).numpy()
    emb = Embedder(model, meta, aligner=object())
    conv = next(p for p in emb.model.parameters() if p.ndim == 4)
    assert emb.channels_last and conv.is_contiguous(memory_format=torch.channels_last)
    cos = (emb.embed_crops(crops) * nchw).sum(1)
    assert cos.min() > 0.999, cos
    save_checkpoint(tmp_path / "f.pt", _model(), name="tiny")
    assert not Embedder(*load_checkpoint(tmp_path / "f.pt"), aligner=object()).channels_last


def test_bfloat16_embedder_freezes_the_network_per_batch_size_with_the_same_embeddings(tmp_path, monkeypatch):
    """On the CPU a bfloat16 checkpoint runs as a frozen TorchScript graph, one per batch size
    (least recently used dropped): the same embeddings as the eager autocast model, within
    bfloat16's rounding; FACEGATE_FROZEN=0 and an untraceable model run eagerly."""
    from encoder.embedder import Embedder

    monkeypatch.setenv("FACEGATE_PRECISION", "bfloat16")
    rng = np.random.default_rng(2)
    save_checkpoint(tmp_path / "b.pt", _model(), name="tiny", precision="bfloat16")
    emb = Embedder(*load_checkpoint(tmp_path / "b.pt"), aligner=object())
    monkeypatch.setenv("FACEGATE_FROZEN", "0")
    eager = Embedder(*load_checkpoint(tmp_path / "b.pt"), aligner=object())
    assert emb.frozen and not eager.frozen
    assert (emb.arithmetic, eager.arithmetic) == ("bfloat16-frozen", "bfloat16-eager")   # keys caches
    for n in (1, 2, 3, 5, 7, 1):
        crops = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        got, want = emb.embed_crops(crops), eager.embed_crops(crops)
        assert got.shape == want.shape == (n, CFG.embedding_dim) and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
        assert (got * want).sum(1).min() > 0.999
    # batch sizes 1, 2, 3, 5, 7 were traced; 4 are kept, 1 (used last) among them
    assert list(emb._frozen) == [3, 5, 7, 1]
    assert all(isinstance(g, torch.jit.ScriptModule) for g in emb._frozen.values())
    assert not eager._frozen

    def untraceable(*a, **k):
        raise RuntimeError("no trace")
    broken = Embedder(*load_checkpoint(tmp_path / "b.pt"), aligner=object())
    monkeypatch.setattr(torch.jit, "trace", untraceable)
    monkeypatch.delenv("FACEGATE_FROZEN")
    crops = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert (broken.embed_crops(crops) * eager.embed_crops(crops)).sum(1).min() > 0.999
    assert not broken.frozen and not broken._frozen


def test_bfloat16_checkpoint_runs_in_float32_where_bfloat16_is_not_native(tmp_path, monkeypatch):
    """Emulated bfloat16 is several times slower than float32 (147 vs 22 ms per face on an
    AVX2-only CPU): there a bfloat16 checkpoint is computed in float32, still NHWC and frozen,
    and its embeddings differ from the bfloat16 ones by bfloat16's rounding only.
    FACEGATE_PRECISION forces either; anything else is refused with the choices."""
    import encoder.precision as precision
    from encoder.embedder import Embedder

    save_checkpoint(tmp_path / "b.pt", _model(), name="tiny", precision="bfloat16", flip_average=True)
    save_checkpoint(tmp_path / "f.pt", _model(), name="tiny")
    crops = np.random.default_rng(5).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    monkeypatch.delenv("FACEGATE_PRECISION", raising=False)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    auto = Embedder(*load_checkpoint(tmp_path / "b.pt"), aligner=object())
    assert not auto.bf16 and auto.frozen and auto.channels_last and auto.arithmetic == "float32-frozen"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    native = Embedder(*load_checkpoint(tmp_path / "b.pt"), aligner=object())
    assert native.bf16 and native.arithmetic == "bfloat16-frozen"
    monkeypatch.setenv("FACEGATE_PRECISION", "float32")
    forced = Embedder(*load_checkpoint(tmp_path / "b.pt"), aligner=object())
    assert not forced.bf16
    # a float32 checkpoint is never run in bfloat16, whatever is asked
    monkeypatch.setenv("FACEGATE_PRECISION", "bfloat16")
    assert not Embedder(*load_checkpoint(tmp_path / "f.pt"), aligner=object()).bf16
    # a caller's own choice (benchmarks comparing the ways) goes before the environment's
    assert not Embedder(*load_checkpoint(tmp_path / "b.pt"), aligner=object(), precision="float32").bf16
    with pytest.raises(ValueError, match="precision='fp16': expected one of"):
        Embedder(*load_checkpoint(tmp_path / "b.pt"), aligner=object(), precision="fp16")
    got, want = auto.embed_crops(crops), native.embed_crops(crops)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * want).sum(1).min() > 0.999 and not np.array_equal(got, want)
    # float32 through the frozen graph is the float32 eager model's result, to float32 rounding
    model, _ = load_checkpoint(tmp_path / "b.pt")
    eager = Embedder(model, {**auto.meta, "preprocessing": {**auto.meta["preprocessing"], "precision": "float32"}},
                     aligner=object())
    np.testing.assert_allclose(got, eager.embed_crops(crops), atol=1e-5)
    monkeypatch.setenv("FACEGATE_PRECISION", "fp16")
    with pytest.raises(ValueError, match="FACEGATE_PRECISION='fp16': expected one of auto, bfloat16, float32"):
        Embedder(*load_checkpoint(tmp_path / "b.pt"), aligner=object())
    # what benchmarks record beside their timings
    info = precision.machine_info()
    assert set(info) == {"cpu", "cpus", "cpu_capability", "bf16_native"} and info["bf16_native"] is True


@pytest.mark.parametrize("onednn, machine, flags, native", [
    (False, "x86_64", {"avx2", "amx_bf16"}, False),            # oneDNN says no: no
    (True, "x86_64", {"avx512f", "avx512bw", "avx512vl"}, False),   # AVX-512 without BF16: emulated
    (True, "x86_64", {"avx512f", "avx512_bf16"}, True),
    (True, "x86_64", {"avx512f", "amx_bf16", "amx_tile"}, True),
    (True, "x86_64", None, True),                              # no /proc/cpuinfo: oneDNN's word
    (True, "aarch64", {"fp", "asimd"}, True),                  # not x86: oneDNN's word (ARM bf16)
])
def test_native_bfloat16_needs_the_cpu_to_say_so(monkeypatch, onednn, machine, flags, native):
    import encoder.precision as precision

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn, raising=False)
    monkeypatch.setattr(precision.platform, "machine", lambda: machine)
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    precision.cpu_has_bf16.cache_clear()
    try:
        assert precision.cpu_has_bf16() is native
    finally:
        precision.cpu_has_bf16.cache_clear()


def test_frozen_embedder_gives_the_same_embeddings_from_many_threads_at_once(tmp_path):
    """The service embeds on a pool of model threads: concurrent calls, the first of which
    trace the graph, give what sequential ones give."""
    from concurrent.futures import ThreadPoolExecutor

    from encoder.embedder import Embedder

    save_checkpoint(tmp_path / "b.pt", _model(), name="tiny", precision="bfloat16")
    crops = np.random.default_rng(3).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    emb = Embedder(*load_checkpoint(tmp_path / "b.pt"), aligner=object())
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda c: emb.embed_crops(c[None])[0], crops))
    want = Embedder(*load_checkpoint(tmp_path / "b.pt"), aligner=object()).embed_crops(crops[:1])
    assert list(emb._frozen) == [1]
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    for c, g in zip(crops, got):
        np.testing.assert_allclose(g, emb.embed_crops(c[None])[0], atol=1e-6)


def test_flip_averaging_frozen_embedder_is_mirror_invariant_and_matches_eager(tmp_path, monkeypatch):
    """A flip-averaging bfloat16 checkpoint (the kind that ships): one face runs
    as a batch of two (the face and its mirror image) through the frozen graph; the result is
    the normalised mean of the two views, so a face and its mirror image get one embedding."""
    from encoder.embedder import Embedder

    save_checkpoint(tmp_path / "f.pt", _model(), name="tiny", precision="bfloat16", flip_average=True)
    emb = Embedder(*load_checkpoint(tmp_path / "f.pt"), aligner=object())
    monkeypatch.setenv("FACEGATE_FROZEN", "0")
    eager = Embedder(*load_checkpoint(tmp_path / "f.pt"), aligner=object())
    assert emb.flip and emb.frozen and eager.flip and not eager.frozen
    crops = np.random.default_rng(4).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    got = emb.embed_crops(crops)
    assert list(emb._frozen) == [6]                      # 3 faces + their 3 mirror images
    mirrored = emb.embed_crops(np.ascontiguousarray(crops[:, :, ::-1]))
    np.testing.assert_allclose(got, mirrored, atol=1e-6)
    # the eager model, one view at a time, averaged by hand
    eager.flip = False
    by_hand = eager.embed_crops(crops) + eager.embed_crops(np.ascontiguousarray(crops[:, :, ::-1]))
    by_hand /= np.linalg.norm(by_hand, axis=1, keepdims=True)
    assert (got * by_hand).sum(1).min() > 0.999
    # and it is not the single view's embedding
    assert (got * eager.embed_crops(crops)).sum(1).min() < 0.99999


def test_the_encoders_card_says_what_the_loaded_encoder_says():
    """A server whose models run in worker processes holds the shipped encoder's card
    (encoder.embedder.EncoderCard): the same version, calibrated values, arithmetic, embedding
    size and search side as the Embedder its workers load, and no networks."""
    from encoder.embedder import Embedder, EncoderCard

    card, full = EncoderCard.from_checkpoint(), Embedder.from_checkpoint()
    assert (card.version, card.meta, card.arithmetic, card.embedding_dim, card.sized_max_side,
            card.default_threshold) == (full.version, full.meta, full.arithmetic, full.embedding_dim,
                                        full.sized_max_side, full.default_threshold)
    assert not hasattr(card, "align") and not hasattr(card, "embed_crops")


def test_a_broken_checkpoint_stops_the_card_as_it_stops_the_encoder(tmp_path):
    from encoder.embedder import EncoderCard

    p = tmp_path / "enc.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="enc.pt"):
        EncoderCard.from_checkpoint(p)

"""Training: the schedule, a few real steps on AT&T crops, and resume == uninterrupted."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from encoder.train import TrainConfig, _held_out, heldout_pairs, lr_at, make_val_pairs, run_training


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-5, warmup=10, steps=110)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(110, cfg) == pytest.approx(1e-5)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 110))


def test_heldout_pairs_cap_genuine_keep_every_impostor_and_only_held_out_people():
    names = [f"lfw/person_{i}" for i in range(400)]
    held = [n for n in names if _held_out(n, 0.05)]
    kept = [n for n in names if not _held_out(n, 0.05)]
    assert len(held) >= 3 and kept
    # 6 photos of the first held-out person (15 genuine pairs), 2 of the second, 1 of the third;
    # photos of a trained person and an unlabelled photo in between must not appear
    ids = [held[0]] * 6 + [kept[0]] * 3 + [held[1]] * 2 + [""] + [held[2]]
    rows, a, b, same = heldout_pairs(ids, 0.05, per_identity=10, seed=0)
    assert [ids[r] for r in rows] == [held[0]] * 6 + [held[1]] * 2 + [held[2]]
    who = np.array([ids[r] for r in rows])
    assert same.sum() == 10 + 1                       # capped at 10 of 15, and the one pair of held[1]
    assert (~same).sum() == 6 * 2 + 6 * 1 + 2 * 1     # every cross-person pair
    assert (who[a] == who[b]).tolist() == same.tolist()
    assert len({(x, y) for x, y in zip(a, b)}) == len(a) and all(a < b)
    again = heldout_pairs(ids, 0.05, per_identity=10, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip((rows, a, b, same), again))


def test_val_pairs_are_genuine_and_impostor_within_held_out_rows():
    labels = np.array([0, 0, 0, 1, 1, 2, -1])
    pairs = make_val_pairs(labels, np.array([0, 1, 2, 3, 4, 5]), seed=0, impostor_factor=2)
    gen, imp = pairs[pairs[:, 2] == 1], pairs[pairs[:, 2] == 0]
    assert len(gen) == 4 and len(imp) == 8          # 3 pairs of identity 0, 1 of identity 1
    assert all(labels[a] == labels[b] for a, b, _ in gen)
    assert all(labels[a] != labels[b] for a, b, _ in imp)
    assert 6 not in pairs[:, :2]


@pytest.fixture(scope="module")
def att_cache(data_dir, tmp_path_factory):
    from encoder.crop_cache import CropCache, build_cache
    from encoder.face_folders import list_person_folders

    photos = [p for p in list_person_folders(data_dir / "faces/att") if int(p.identity.split("/s")[1]) <= 8]
    folder = build_cache(photos, tmp_path_factory.mktemp("cache"), workers=1)
    return CropCache(folder)


def _cfg(**kw):
    return TrainConfig(p=4, k=3, extra=4, steps=6, warmup=2, eval_every=3, ckpt_every=2, log_every=1,
                       val_share=0.25, threads=1, **kw)


def test_crop_cache_holds_aligned_att_faces(att_cache):
    assert len(att_cache) >= 78                       # 80 photos; MTCNN may miss one or two
    assert att_cache.crops.shape[1:] == (112, 112, 3)
    assert len(set(att_cache.identities)) == 8
    assert att_cache.teacher is None


def test_training_steps_change_the_weights_and_write_a_run_folder(att_cache, tmp_path):
    model, summary = run_training(_cfg(), att_cache, tmp_path / "run")
    assert [h["step"] for h in summary["history"]] == [3, 6]
    assert summary["history"][-1]["triplets"] > 0
    assert "val_auc" in summary["history"][-1]
    assert json.loads((tmp_path / "run/config.json").read_text())["steps"] == 6
    log = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert any(r["step"] == 6 for r in log)
    assert (tmp_path / "run/last.pt").exists()


@pytest.mark.slow
def test_resumed_training_equals_uninterrupted_training(att_cache, tmp_path):
    straight, _ = run_training(_cfg(), att_cache, tmp_path / "a")
    _, part = run_training(_cfg(), att_cache, tmp_path / "b", stop_at=4)   # "killed" after step 4
    assert torch.load(tmp_path / "b/last.pt", weights_only=True)["step"] == 4
    resumed, _ = run_training(_cfg(), att_cache, tmp_path / "b")
    a, b = straight.state_dict(), resumed.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_another_config(att_cache, tmp_path):
    run_training(_cfg(), att_cache, tmp_path / "c", stop_at=2)
    with pytest.raises(ValueError, match="another config"):
        run_training(_cfg(margin=0.3), att_cache, tmp_path / "c")


@pytest.mark.slow
def test_fine_tuning_starts_from_the_given_encoder(att_cache, tmp_path):
    from encoder.checkpoint import load_checkpoint, save_checkpoint

    trained, _ = run_training(_cfg(), att_cache, tmp_path / "base")
    save_checkpoint(tmp_path / "base.pt", trained, name="base")
    source, _ = load_checkpoint(tmp_path / "base.pt")
    # lr 0: the optimiser moves nothing, so the weights after training are the ones it started from
    tuned, _ = run_training(_cfg(init_from=str(tmp_path / "base.pt"), lr=0.0, min_lr=0.0), att_cache, tmp_path / "ft")
    fresh, _ = run_training(_cfg(lr=0.0, min_lr=0.0), att_cache, tmp_path / "fresh")
    for (name, a), b, c in zip(tuned.named_parameters(), source.parameters(), fresh.parameters()):
        assert torch.equal(a, b), name
    assert not all(torch.equal(b, c) for b, c in zip(source.parameters(), fresh.parameters()))


def test_fine_tuning_refuses_an_encoder_of_another_shape(att_cache, tmp_path):
    from encoder.checkpoint import save_checkpoint
    from encoder.face_encoder import EncoderConfig, FaceEncoder

    # another embedding size: only a checkpoint of the same config starts a training
    save_checkpoint(tmp_path / "other.pt", FaceEncoder(EncoderConfig(embedding_dim=64)), name="other")
    with pytest.raises(ValueError, match="another encoder config"):
        run_training(_cfg(init_from=str(tmp_path / "other.pt")), att_cache, tmp_path / "run")


def test_bfloat16_channels_last_training_on_the_cpu(att_cache, tmp_path):
    from encoder.train import cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bfloat16")
    model, summary = run_training(_cfg(cpu_bf16=True, channels_last=True), att_cache, tmp_path / "run")
    log = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert summary["history"][-1]["triplets"] > 0
    # the trained weights serve in float32, in the default memory layout, with the same embeddings
    model.eval()
    x = torch.randn(4, 3, model.config.input_size, model.config.input_size)
    with torch.no_grad():
        e_cl = model(x.contiguous(memory_format=torch.channels_last))
        e = model.to(memory_format=torch.contiguous_format)(x)
    assert e.dtype == torch.float32
    assert torch.allclose(e, e_cl, atol=1e-5)


@pytest.mark.parametrize("mixup", [0.0, 1.0])
@pytest.mark.slow
def test_teacher_in_the_loop_trains_and_resumes(att_cache, tmp_path, mixup):
    """Consistent distillation: dlib's ResNet embeds each augmented view (needs the teacher extra);
    with mixup, also blends of two extra photos (function matching)."""
    pytest.importorskip("face_recognition_models", reason="the teacher extra is not installed (./dev teacher)")
    cfg = _cfg(teacher_in_loop=True, w_distill=1.0, w_relation=4.0, mixup=mixup)
    straight, summary = run_training(cfg, att_cache, tmp_path / "a")
    assert summary["history"][-1]["distill"] > 0 and summary["history"][-1]["relation"] > 0
    run_training(cfg, att_cache, tmp_path / "b", stop_at=4)
    resumed, _ = run_training(cfg, att_cache, tmp_path / "b")
    a, b = straight.state_dict(), resumed.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_mix_extra_blends_extra_rows_with_another_extra_photo():
    from encoder.train import mix_extra

    gen = torch.Generator().manual_seed(3)
    x = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 255
    y, mixed = mix_extra(x, 4, 0.5, gen)
    assert mixed.tolist() == [False] * 4 + mixed[4:].tolist() and int(mixed.sum()) == 4
    assert torch.equal(y[~mixed], x[~mixed])          # the P x K rows and the unchosen extras are untouched
    for r in torch.nonzero(mixed).flatten().tolist():
        # y_r = lam x_r + (1 - lam) x_j for one other extra photo j and lam in [0, 1]
        fits = []
        for j in range(4, 12):
            if j == r:
                continue
            d = (x[r] - x[j]).flatten()
            lam = float(((y[r] - x[j]).flatten() @ d) / (d @ d))
            fits.append((float((y[r] - (lam * x[r] + (1 - lam) * x[j])).abs().max()), lam, j))
        err, lam, j = min(fits)
        assert err < 1e-3 and 0.0 <= lam <= 1.0, (r, j, err, lam)
    same, none = mix_extra(x, 4, 0.0, gen)
    assert torch.equal(same, x) and not none.any()


def test_mixed_photos_are_out_of_the_triplets_but_in_the_distillation(att_cache, tmp_path, monkeypatch):
    """A blend of two faces has no identity: its label is -1 for the miner, while the teacher's
    embedding of the blend is the student's target."""
    pytest.importorskip("face_recognition_models", reason="the teacher extra is not installed (./dev teacher)")
    import encoder.train as train

    seen = []
    real = train.batch_loss

    def spy(e, labels, teacher, cfg, miner, loss_fn):
        seen.append((labels.clone(), teacher.clone()))
        return real(e, labels, teacher, cfg, miner, loss_fn)

    monkeypatch.setattr(train, "batch_loss", spy)
    cfg = _cfg(teacher_in_loop=True, w_distill=1.0, w_relation=4.0, mixup=1.0)
    run_training(cfg, att_cache, tmp_path / "m", stop_at=1)
    labels, teacher = seen[0]
    n_pk = cfg.p * cfg.k
    assert (labels[:n_pk] >= 0).all() and (labels[n_pk:] == -1).all()
    assert teacher.shape == (n_pk + cfg.extra, 128) and torch.isfinite(teacher).all()


def test_mixup_without_the_teacher_in_the_loop_is_refused(att_cache, tmp_path):
    with pytest.raises(ValueError, match="mixup needs teacher_in_loop"):
        run_training(_cfg(mixup=0.5), att_cache, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_fine_tuning_refuses_a_start_of_another_encoder_config(att_cache, tmp_path):
    import dataclasses

    from encoder.checkpoint import load_checkpoint, save_checkpoint

    trained, _ = run_training(_cfg(), att_cache, tmp_path / "base")
    save_checkpoint(tmp_path / "base.pt", trained, name="base")
    source, _ = load_checkpoint(tmp_path / "base.pt")
    larger = dataclasses.replace(source.config, input_size=source.config.input_size + 16)
    with pytest.raises(ValueError, match="another encoder config"):
        run_training(_cfg(encoder=larger, init_from=str(tmp_path / "base.pt")), att_cache, tmp_path / "other")


def test_running_a_finished_training_again_keeps_its_summary(att_cache, tmp_path):
    model, summary = run_training(_cfg(), att_cache, tmp_path / "run")
    again, summary2 = run_training(_cfg(), att_cache, tmp_path / "run")     # e.g. to export it again
    assert summary2 == summary and summary["photos_per_second"] > 0
    assert json.loads((tmp_path / "run/summary.json").read_text()) == summary
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("inputs,end_to_end", [("teacher", False), ("student", True)])
@pytest.mark.slow
def test_blockwise_distillation_trains_and_resumes(att_cache, tmp_path, inputs, end_to_end):
    """Blockwise distillation of a chip_resnet student: alone (no end-to-end pass), or chained
    with the end-to-end losses on the embedding of the same pass; a resumed run is the same run."""
    pytest.importorskip("face_recognition_models", reason="the teacher extra is not installed (./dev teacher)")
    from encoder.face_encoder import EncoderConfig

    e2e = dict(w_triplet=1.0, w_distill=1.0, w_relation=4.0) if end_to_end else dict(
        w_triplet=0.0, w_distill=0.0, w_relation=0.0)
    cfg = _cfg(teacher_in_loop=True, mixup=1.0, w_blockwise=1.0, blockwise_inputs=inputs, center_teacher=False,
               encoder=EncoderConfig(backbone="chip_resnet", input_size=112, dropout=0.0, head="pool"), **e2e)
    straight, summary = run_training(cfg, att_cache, tmp_path / "a")
    last = summary["history"][-1]
    assert last["blockwise"] > 0 and "val_auc" in last
    assert ("distill" in last) == end_to_end and (last["triplets"] > 0) == end_to_end
    log = [json.loads(line) for line in (tmp_path / "a/log.jsonl").read_text().splitlines()]
    bw = [r["blockwise"] for r in log if "blockwise" in r]
    assert all(np.isfinite(bw)) and len(bw) == cfg.steps
    if not end_to_end:       # alone, six steps already lower it; chained, the e2e losses pull too
        assert bw[-1] < bw[0]
    run_training(cfg, att_cache, tmp_path / "b", stop_at=4)
    resumed, _ = run_training(cfg, att_cache, tmp_path / "b")
    a, b = straight.state_dict(), resumed.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_bias_lr_mult_puts_biases_in_their_own_faster_group_without_decay():
    from encoder.face_encoder import EncoderConfig, FaceEncoder
    from encoder.train import create_optimizer

    model = FaceEncoder(EncoderConfig(backbone="chip_resnet", input_size=112, dropout=0.0, head="pool"))
    cfg = TrainConfig(encoder=model.config, lr=1e-3, weight_decay=0.01, bias_lr_mult=10.0)
    opt = create_optimizer(model, cfg)
    rest, biases = opt.param_groups
    n_bias = sum(1 for n, _ in model.named_parameters() if n.endswith(".bias"))
    assert len(biases["params"]) == n_bias == 30 and biases["weight_decay"] == 0.0 and biases["lr_mult"] == 10.0
    assert len(rest["params"]) + n_bias == len(list(model.parameters())) and rest["weight_decay"] == 0.01
    assert len(create_optimizer(model, TrainConfig(encoder=model.config)).param_groups) == 1   # old runs resume


@pytest.mark.slow
def test_fit_pool_head_finds_the_teachers_head_in_closed_form(att_cache):
    """fit_pool_head: a student that holds dlib's weights, its head scrambled, gets the teacher's
    head back by least squares: its own outputs are the teacher's descriptors again (raw, or less a
    mean where the teacher is centred), on the fitted photos and on photos it did not see."""
    pytest.importorskip("face_recognition_models", reason="the teacher extra is not installed (./dev teacher)")
    from encoder.dlib_resnet import InLoopTeacher, chip_encoder_from_dlib
    from encoder.face_encoder import EncoderConfig, preprocess
    from encoder.train import fit_pool_head

    model = chip_encoder_from_dlib(EncoderConfig(backbone="chip_resnet", input_size=112, dropout=0.0,
                                                 head="pool")).eval()
    teacher = InLoopTeacher()
    crops = torch.from_numpy(np.array(att_cache.crops))
    seen, unseen = crops[:64], crops[64:]
    descriptors = {n: teacher.descriptors(c.permute(0, 3, 1, 2).float()) for n, c in (("seen", seen), ("unseen", unseen))}

    def head_error(name, mean):
        target = descriptors[name] if mean is None else descriptors[name] - mean
        with torch.no_grad():
            out = model.head_fc(model.forward_features(preprocess(seen if name == "seen" else unseen, 112)).mean((2, 3)))
        return float((out - target).pow(2).mean() / target.pow(2).mean())

    assert head_error("unseen", None) < 1e-8
    for mean in (None, descriptors["seen"].mean(0)):
        torch.manual_seed(0)
        with torch.no_grad():
            model.head_fc.weight.copy_(0.05 * torch.randn_like(model.head_fc.weight))
            model.head_fc.bias.normal_()
        scrambled = head_error("unseen", mean)
        fit = fit_pool_head(model, teacher, seen, descriptor_mean=mean)
        assert fit["head_fit_photos"] == 64 and fit["head_rel_mse_before"] > 0.5
        # the model's own head now gives the teacher's descriptors on the fitted photos (128 rows for
        # 257 unknowns: an exact fit there, and on unseen photos as close as 64 photos allow)
        assert fit["head_rel_mse_after"] < 1e-3 and head_error("seen", mean) < 1e-3, fit
        assert head_error("unseen", mean) < min(0.5, scrambled / 1000), (scrambled, head_error("unseen", mean))


@pytest.mark.slow
def test_refit_head_runs_once_before_the_first_step_and_is_on_record(att_cache, tmp_path):
    """refit_head in a training run: evaluated before and after, first in the history and the
    log, and not again when the run resumes (the resumed run equals the straight one)."""
    pytest.importorskip("face_recognition_models", reason="the teacher extra is not installed (./dev teacher)")
    from encoder.face_encoder import EncoderConfig

    cfg = _cfg(teacher_in_loop=True, w_blockwise=1.0, w_triplet=0.0, w_distill=0.0, w_relation=0.0,
               center_teacher=False, refit_head=48,
               encoder=EncoderConfig(backbone="chip_resnet", input_size=112, dropout=0.0, head="pool"))
    straight, summary = run_training(cfg, att_cache, tmp_path / "a")
    refit = summary["history"][0]
    assert refit["step"] == 0 and refit["head_fit_photos"] == 48
    assert refit["head_rel_mse_after"] < refit["head_rel_mse_before"]
    assert "before_val_auc" in refit and "val_auc" in refit
    run_training(cfg, att_cache, tmp_path / "b", stop_at=4)
    resumed, _ = run_training(cfg, att_cache, tmp_path / "b")
    log = [json.loads(line) for line in (tmp_path / "b/log.jsonl").read_text().splitlines()]
    assert sum("refit_head" in r for r in log) == 1
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    # a run of 0 steps refits the head alone (after end-to-end training has moved the head off)
    _, only = run_training(replace(cfg, steps=0), att_cache, tmp_path / "c")
    assert [r["step"] for r in only["history"]] == [0] and only["final"]["head_fit_photos"] == 48
    with pytest.raises(ValueError, match="refit_head needs teacher_in_loop"):
        _cfg(refit_head=10)

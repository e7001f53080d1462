"""The closed-form chained refit (encoder/block_refit.py) on small synthetic teacher/student pairs."""
import copy

import pytest
import torch

from encoder.block_refit import refine_block, refit_chain
from encoder.checkpoint import load_checkpoint
from encoder.face_encoder import EncoderConfig, FaceEncoder


def _encoder(seed: int) -> FaceEncoder:
    torch.manual_seed(seed)
    return FaceEncoder(EncoderConfig(backbone="chip_resnet", input_size=112, embedding_dim=128,
                                     dropout=0.0, head="pool")).eval()


def _inputs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 112, 112, generator=g) * 255 - 127.5) / 128


def _perturbed(teacher: FaceEncoder, blocks, head: bool = False, seed: int = 7) -> FaceEncoder:
    student = copy.deepcopy(teacher)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for j in blocks:
            w = student.backbone.convs[2 + 2 * j].weight
            w.add_(0.5 * w.std() * torch.randn(w.shape, generator=g))
        if head:
            student.head_fc.weight.add_(0.5 * student.head_fc.weight.std() * torch.randn(student.head_fc.weight.shape,
                                                                                         generator=g))
    return student


@torch.no_grad()
def _maps_after(model: FaceEncoder, x: torch.Tensor, last_block: int) -> torch.Tensor:
    b = model.backbone
    m = b.stem(b.chips(x))
    for j in range(last_block + 1):
        m = b.block(j, m)
    return m


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean() / b.pow(2).mean())


@pytest.mark.slow
def test_a_student_that_differs_only_in_second_convolutions_is_refit_to_the_teacher_on_new_inputs():
    # the hidden maps are the teacher's, so the exact least-squares solution is the teacher's block:
    # this checks the geometry (patch order, padding, the strided block's shortcut) end to end
    teacher = _encoder(0)
    student = _perturbed(teacher, blocks=[0, 1, 2, 3])
    fresh = _inputs(6, seed=2)
    assert _rel(_maps_after(student, fresh, 3), _maps_after(teacher, fresh, 3)) > 1e-2
    report = refit_chain(student, teacher, [_inputs(12, seed=1), _inputs(12, seed=3)], blocks=[0, 1, 2, 3],
                         positions=10 ** 6, ridge=1e-10, relu_aware=False, head=False)
    assert report["views"] == 24 and set(report["blocks"]) == {"block0", "block1", "block2", "block3"}
    assert _rel(_maps_after(student, fresh, 3), _maps_after(teacher, fresh, 3)) < 1e-6
    for j in range(4):
        assert report["blocks"][f"block{j}"]["rel_mse_after"] < 1e-6


@pytest.mark.slow
def test_the_refit_changes_only_second_convolutions_and_the_head_and_lowers_every_error():
    teacher = _encoder(0)
    student = _perturbed(teacher, blocks=range(14), head=True)
    other = _encoder(1)                           # first convolutions and stem of another network
    with torch.no_grad():
        student.backbone.convs[0].weight.copy_(other.backbone.convs[0].weight)
        for j in range(14):
            student.backbone.convs[1 + 2 * j].weight.copy_(other.backbone.convs[1 + 2 * j].weight)
    before = copy.deepcopy(student.state_dict())
    report = refit_chain(student, teacher, [_inputs(16, seed=4)], positions=64, ridge=1e-4)
    after = student.state_dict()
    for k in before:
        conv = k.startswith("backbone.convs.") and int(k.split(".")[2])
        changes = k.startswith("head_fc") or (conv is not False and conv > 0 and conv % 2 == 0)
        assert torch.equal(before[k], after[k]) != changes, k
    for name, r in {**report["blocks"], "head": report["head"]}.items():
        assert r["rel_mse_after"] < r["rel_mse_before"], (name, r)


def test_it_refuses_a_student_of_another_backbone():
    teacher = _encoder(0)
    student = FaceEncoder(EncoderConfig(backbone="face_resnet", input_size=64, embedding_dim=128, dropout=0.0)).eval()
    with pytest.raises(ValueError, match="chip_resnet"):
        refit_chain(student, teacher, [_inputs(2, seed=0)])


def _block2_perturbed(teacher: FaceEncoder) -> tuple[FaceEncoder, torch.Tensor, torch.Tensor]:
    """A copy of the teacher with block 2's two convolutions perturbed -> (student, block 2's input
    maps, the teacher's block 2 output on them)."""
    student = copy.deepcopy(teacher)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for k in (5, 6):                              # block 2's first and second convolutions
            w = student.backbone.convs[k].weight
            w.add_(0.3 * w.std() * torch.randn(w.shape, generator=g))
    maps = _maps_after(student, _inputs(16, seed=5), 1)          # blocks 0-1 are the teacher's
    with torch.no_grad():
        target = teacher.backbone.block(2, maps)
    return student, maps, target


@pytest.mark.slow
def test_refinement_trains_both_convolutions_of_one_block_toward_the_teachers_output():
    teacher = _encoder(0)
    student, maps, target = _block2_perturbed(teacher)
    before = copy.deepcopy(student.state_dict())
    r = refine_block(student.backbone, 2, maps.to(torch.bfloat16), target.to(torch.bfloat16),
                     epochs=40, lr=1e-3, batch=8, gen=torch.Generator().manual_seed(0))
    assert r["rel_mse_after"] < 0.5 * r["rel_mse_before"], r
    after = student.state_dict()
    for k in before:
        assert torch.equal(before[k], after[k]) != k.startswith(("backbone.convs.5.", "backbone.convs.6.")), k
    assert all(q.requires_grad for q in student.parameters())    # as it was handed in


def test_the_chain_with_refinement_reports_each_block_and_leaves_the_stem():
    teacher = _encoder(0)
    student = _perturbed(teacher, blocks=range(14))
    stem = student.backbone.convs[0].weight.clone()
    report = refit_chain(student, teacher, [_inputs(8, seed=6)], blocks=[0, 5], positions=32,
                         refine_epochs=1, maps_dtype=torch.bfloat16)
    assert set(report["blocks"]) == {"block0", "block5"} and report["maps_dtype"] == "torch.bfloat16"
    assert report["head"]["rel_mse_after"] < report["head"]["rel_mse_before"]
    for r in report["blocks"].values():
        assert r["refine"]["rel_mse_before"] == r["rel_mse_after"]   # handed on, not measured twice
    assert torch.equal(stem, student.backbone.convs[0].weight)


@pytest.mark.slow
def test_the_refinement_is_as_strong_under_bfloat16_autocast():
    teacher = _encoder(0)
    results = []
    for bf16 in (False, True):
        student, maps, target = _block2_perturbed(teacher)
        r = refine_block(student.backbone, 2, maps, target, epochs=40, lr=1e-3, batch=8,
                         gen=torch.Generator().manual_seed(0), bf16=bf16)
        assert student.backbone.convs[5].weight.dtype == torch.float32   # the weights stay float32
        results.append(r)
    exact, bf16 = results
    assert exact["rel_mse_before"] == bf16["rel_mse_before"]
    assert bf16["rel_mse_after"] < 0.5 * bf16["rel_mse_before"], bf16
    assert bf16["rel_mse_after"] < 1.5 * exact["rel_mse_after"], (exact, bf16)


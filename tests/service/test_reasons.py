"""One vocabulary of reasons: the proto's, facegate.reasons.Reason, and what the product code says."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from facegate.reasons import Reason
from facegate.v1 import facegate_pb2 as pb
from service.servicer import _reason

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("service", "encoder", "index", "gates", "bench")


def test_the_enum_is_the_protos_reasons():
    assert [r.value for r in Reason] == [n for n in pb.Reason.keys() if n != "REASON_UNSPECIFIED"]


def test_each_reason_maps_to_its_proto_value_and_none_to_unspecified():
    for r in Reason:
        assert pb.Reason.Name(_reason(r)) == r.value
    assert _reason(None) == pb.REASON_UNSPECIFIED


def test_a_reason_the_proto_lacks_is_a_bug_not_a_silent_unspecified():
    with pytest.raises(ValueError):
        _reason("BLURRY")


def _reason_literals(path: Path) -> list[tuple[int, str]]:
    names = {r.value for r in Reason}
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names]


def test_product_code_names_reasons_only_through_the_enum():
    found = {f"{p.relative_to(ROOT)}:{line}": v for pkg in PRODUCT for p in sorted((ROOT / pkg).rglob("*.py"))
             for line, v in _reason_literals(p)}
    assert found == {}


def test_the_literal_finder_finds_one(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('x = "NO_FACE"\ny = Reason.NO_FACE\n')
    assert _reason_literals(f) == [(1, "NO_FACE")]

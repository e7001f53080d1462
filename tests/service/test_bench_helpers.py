"""The benches' own arithmetic."""
import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("cluster_run", Path(__file__).resolve().parents[2] / "bench/cluster_run.py")
cluster_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cluster_run)


def test_adjusted_rand_index():
    ari = cluster_run.adjusted_rand_index
    assert ari([0, 0, 1, 1], [5, 5, 7, 7]) == pytest.approx(1.0)           # same partition, other names
    # contingency [[2,0],[1,1]]: sum_ij=1, sum_a=2, sum_b=3, expected=1, best=2.5 -> 0/1.5 = 0
    assert ari([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.0)
    # [[2,1],[0,3]] over 6: sum_ij=1+3=4, sum_a=3+3=6, sum_b=1+6=7, expected=42/15=2.8, best=6.5
    assert ari([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]) == pytest.approx((4 - 2.8) / (6.5 - 2.8))

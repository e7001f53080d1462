"""One small interface for the gated stages: a name, load from a checkpoint, predict."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Gate(Protocol):
    name: str

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Gate":
        """From a checkpoint file (None: the one that ships with facegate); no network."""

    def predict(self, x: Any) -> Any:
        """One input (an RGB image array, WAV bytes) -> the gate's finding."""


def create_gate(name: str, path: str | Path | None = None) -> Gate:
    from .daynight import DayNightGate
    from .trigger_word import TriggerWordGate

    gates = {DayNightGate.name: DayNightGate, TriggerWordGate.name: TriggerWordGate}
    if name not in gates:
        raise ValueError(f"unknown gate {name!r}; known: {sorted(gates)}")
    return gates[name].load(path)

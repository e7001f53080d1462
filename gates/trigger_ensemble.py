"""Two or more trigger-word detectors as one gate: the mean of their probabilities, one threshold.

  python -m gates.trigger_ensemble runs/trigger-pair/robust.pt runs/trigger-pair/accents.pt \
      --out gates/weights/trigger_word.pt

The members must have been trained on the same hold-out (the same test speaker, threshold speaker,
negatives and background): the ensemble is tested where each member was. Its threshold is chosen
the way the first member's was, on the first member's validation set (rebuilt from its config: the
same seeded clips; the threshold speaker the weights never saw), among tm.pick_threshold's thresholds
within that recipe's false-trigger bound. Why two: the robust recipe finds real speakers' words but
fires on accented near misses ("accurate", "motivate"); the accents recipe hears those as other words
but misses more real words; leave one speaker out, their mean keeps most of each one's strength
(bench/trigger_run.py --loso --recipe pair).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .trigger_word import TriggerEnsemble, TriggerNet, TriggerWordGate, save_trigger

VERSION = "trigger-word-3"


def same_holdout(metas: list[dict]) -> None:
    keys = ("activates", "test_activates", "threshold_activates", "negatives", "backgrounds")
    first = {k: metas[0].get("holdout", {}).get(k) for k in keys}
    for m in metas[1:]:
        other = {k: m.get("holdout", {}).get(k) for k in keys}
        if other != first:
            raise ValueError(f"members were trained on different hold-outs: {first} and {other}")


def combine(members: list[str | Path], data_dir: Path, cache: Path, out: Path | None = None,
            log=lambda m: print(m, file=sys.stderr)) -> dict:
    """Load the members, choose the ensemble's threshold on the first member's validation set, and
    (with `out`) write the gate checkpoint. -> the validation metrics and the members' versions."""
    from .train_trigger import config_from_dict, evaluate, split_files, tts_plan, validation_set

    gates = [TriggerWordGate.load(m) for m in members]
    if len(gates) < 2:
        raise ValueError("an ensemble needs at least two member checkpoints")
    if any(not isinstance(g.model, TriggerNet) for g in gates):
        raise ValueError("members must be single detectors, not ensembles")
    metas = [g.meta for g in gates]
    same_holdout(metas)
    if len({(m.get("label_span"), m.get("min_gap_steps")) for m in metas}) != 1:
        raise ValueError("members disagree on label_span or min_gap_steps")
    if "config" not in metas[0]:
        raise ValueError(f"{members[0]} holds no training config: its validation set cannot be rebuilt "
                         "for the ensemble's threshold")
    cfg = config_from_dict(metas[0]["config"])
    ens = TriggerEnsemble.of([g.model for g in gates])
    val_set = validation_set(cfg, split_files(Path(data_dir), cfg), tts_plan(cfg), Path(cache))
    val = evaluate(ens, val_set, cfg)
    log(json.dumps({"ensemble_val": val}))
    info = [{"checkpoint": str(p), "version": m.get("version"), "recipe": m.get("config", {}).get("recipe"),
             "threshold": m.get("threshold"), "val_metrics": m.get("val_metrics")} for p, m in zip(members, metas)]
    if out:
        save_trigger(out, ens, threshold=val["threshold"], label_span=metas[0].get("label_span"),
                     min_gap_steps=metas[0].get("min_gap_steps"), config=metas[0]["config"],
                     holdout=metas[0]["holdout"], val_metrics=val, version=VERSION, members=info,
                     threshold_chosen_on=f"{metas[0].get('threshold_chosen_on')}, the first member's validation set",
                     training_data=metas[0].get("training_data"))
    return {"val": val, "members": info, "checkpoint": str(out) if out else None}


def main(argv=None):
    import argparse

    from .train_trigger import DEFAULT_DATA
    from .tts import DEFAULT_CACHE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("members", nargs="+", help="member gate checkpoints (python -m gates.train_trigger --export)")
    ap.add_argument("--out", required=True, help="write the ensemble gate checkpoint here")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (holds trigger_word/)")
    ap.add_argument("--tts-cache", default=None, help="espeak-ng WAV cache (default .cache/facegate/tts)")
    a = ap.parse_args(argv)
    res = combine(a.members, Path(a.data), Path(a.tts_cache) if a.tts_cache else DEFAULT_CACHE, Path(a.out))
    print(json.dumps(res))


if __name__ == "__main__":
    main()

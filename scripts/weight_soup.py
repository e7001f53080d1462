"""Average the weights of encoders of one architecture (a "model soup", Wortsman et al. 2022).

Usage: .venv/bin/python scripts/weight_soup.py OUT.pt NAME CKPT CKPT [CKPT ...]
Every floating tensor (batch-norm statistics included) is the plain mean; the soup keeps the
ingredients' preprocessing (which must agree), flip averaging included. Evaluate it with `facegate eval-pairs
... --checkpoint OUT.pt`. Session 10 tried s96fm + s96fm2 and s96cd + s96fm + s96fm2
(docs/encoder/experiments/weight_soup.json): no gain.
"""
import argparse
import copy

from encoder.checkpoint import load_checkpoint, save_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("name")
    ap.add_argument("checkpoints", nargs="+")
    args = ap.parse_args()
    loaded = [load_checkpoint(p) for p in args.checkpoints]
    configs = {str(m.config) for m, _ in loaded}
    if len(configs) != 1:
        raise SystemExit(f"the checkpoints differ in architecture: {sorted(configs)}")
    preps = {str(sorted(meta["preprocessing"].items())) for _, meta in loaded}
    if len(preps) != 1:
        raise SystemExit(f"the checkpoints differ in preprocessing: {sorted(preps)}")
    prep = loaded[0][1]["preprocessing"]
    states = [m.state_dict() for m, _ in loaded]
    mean = {k: sum(s[k] for s in states) / len(states) if v.is_floating_point() else v
            for k, v in states[0].items()}
    soup = copy.deepcopy(loaded[0][0])
    soup.load_state_dict(mean)
    ckpt = save_checkpoint(args.out, soup, name=args.name,
                           flip_average=bool(prep.get("flip_average", False)),
                           precision=prep.get("precision", "float32"),
                           training={"soup_of": [meta["version"] for _, meta in loaded]})
    print(ckpt["version"])


if __name__ == "__main__":
    main()

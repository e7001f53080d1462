"""Exact flat search against HNSW (and IVF-PQ) at 10k, 100k and 1M templates: recall@1 against
exact, the latency of one query (p50 / p99), memory per template and build time.

  nice -n 5 python bench/index_scale.py [--sizes 10000,100000,1000000] [--plot docs/index/index_scale.png]

What is measured. Each kind is the FAISS index that index/vector_index.py builds for it
(`make_faiss_index`: the parameters the service runs), searched as the service searches: one
probe at a time (Identify searches one probe), k = the service's identify_k (5). Searches are
timed on each of `--threads` OpenMP thread counts (2: this machine's cores and what the service
gets by default, then 1); builds use the most. Latency is the wall time of one `index.search`
call on one query, p50 and p99 over `--queries` queries (`--flat-queries` of them for flat,
whose searches take tens of ms at 1M): the index search alone, no encoder, no gRPC. Recall@1 is
the share of queries whose first neighbour is the exact (flat) search's first neighbour.
Memory per template is the size of `faiss.serialize_index` over the count (what the index
holds in memory; the process's RSS growth during the build is beside it, noisy because freed
memory is reused). Build time is add (and train) of all templates.

HNSW (IndexHNSWFlat, inner product): M 32 and efConstruction 80 (`--hnsw-m`,
`--hnsw-ef-construction`); the operating point is the service's efSearch (`--hnsw-ef-search`,
vector_index.HNSW_EF_SEARCH); efSearch is also swept (`--ef-search`, latency on the first thread
count) and `min_ef_search_for_target_recall` is the smallest that reaches `--target-recall`.
IVF-PQ (IndexIVFPQ, nlist ~ 4 sqrt(N), PQ of `--pq-m` bytes, with an exact re-ranking of the
best `--refine` x k candidates over the full vectors: IndexRefineFlat): nprobe is swept and its
operating point is the smallest nprobe reaching the target.

The templates. Random unit vectors in 128-d are nearly orthogonal to each other (every pair at
distance ~1.41); face embeddings are not: they fill a narrow cone, people are clusters in it,
and that is what makes approximate search hard (many near neighbours at similar distances). So
the synthetic templates come from a model fitted to real embeddings: the shipped encoder's
embeddings of LFW DevTest photos (people with two or more photos, up to `--fit-per-person` each;
never training photos), computed once and cached under .cache/index_scale/ (the embeddings only,
keyed by the encoder's version). The fit: the mean and covariance of the people's centres
(between-identity) and the covariance of photos around their person's centre (within-identity).
An identity is a centre drawn from the between-identity Gaussian; its `--per-identity` templates
(3: a few enrollment photos) are the centre plus within-identity noise, L2-normalised. The
within-identity noise is scaled so that synthetic genuine pairs have the median distance of
the real genuine pairs; the JSON's `model` compares the two (genuine and impostor median
distances, real against synthetic). A query is an enrolled template plus the difference of
two within-identity draws (a genuine pair's difference), re-normalised: a new photo of an
enrolled person, at a genuine pair's distance from the template it was made from. Distances are
facegate's unit (CONTRACT.md): d = sqrt(2 - 2 ip) between unit vectors.

Seeds are explicit (`--seed`): the same sizes and seed give the same templates and queries.
Output: a `model` line (real against synthetic distances), one JSON object per (kind, size),
then a summary with the crossover: for each thread count and for p50 and p99, the template
count at which HNSW's latency drops below flat's, flat's taken as linear in the count (least
squares on relative error through its measured sizes), HNSW's interpolated in log(count). The
p99 of one query on a shared machine is mostly the scheduler (a thread waiting for a core: 4 ms
ticks), so p50 is the steadier basis for the crossover; treat one run's p99 as noisy.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402

from index.vector_index import HNSW_EF_SEARCH, make_faiss_index  # noqa: E402

DIM = 128
CACHE = ROOT / ".cache" / "index_scale"
LFW = ROOT.parent / "shared" / "data" / "faces" / "lfw"


# ----------------------------------------------------------------------------------- the model
def lfw_embeddings(lfw: Path, per_person: int, checkpoint=None) -> tuple[np.ndarray, np.ndarray, str]:
    """(embeddings n x 128, person label per row, encoder version) of LFW DevTest people with two
    or more photos, up to `per_person` photos each; cached by encoder version."""
    from encoder.checkpoint import read_meta
    version = read_meta(checkpoint).get("version", "unversioned")
    cache = CACHE / f"lfw_devtest_{version}_{per_person}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["x"], z["person"], version
    from encoder.embedder import Embedder
    from encoder.images import decode_image

    people = []
    for line in (lfw / "peopleDevTest.txt").read_text().splitlines()[1:]:
        name, n = line.split("\t")
        if int(n) >= 2:
            people.append((name, min(int(n), per_person)))
    paths, person = [], []
    for p, (name, n) in enumerate(people):
        for j in range(1, n + 1):
            paths.append(lfw / "images" / name / f"{name}_{j:04d}.jpg")
            person.append(p)
    embedder = Embedder.from_checkpoint(checkpoint)
    x = np.stack([embedder.embed_for_evaluation(decode_image(f))[0]
                  for f in tqdm(paths, desc="embed LFW DevTest", unit="photo", file=sys.stderr)])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=x.astype(np.float32), person=np.array(person))
    return x.astype(np.float32), np.array(person), version


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _median_pair_distance(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float(np.median(np.linalg.norm(x[a] - x[b], axis=1)))


class FaceModel:
    """Identity centres ~ N(mean, between); a template = unit(centre + scale * within noise)."""

    def __init__(self, x: np.ndarray, person: np.ndarray, seed: int):
        people = np.unique(person)
        centres = np.stack([x[person == p].mean(0) for p in people])
        counts = np.array([(person == p).sum() for p in people])
        resid = np.concatenate([(x[person == p] - centres[i]) * np.sqrt(counts[i] / (counts[i] - 1))
                                for i, p in enumerate(people)])
        within = np.cov(resid, rowvar=False)
        between = np.cov(centres, rowvar=False) - within * np.mean(1 / counts)
        self.mean = centres.mean(0)
        self.between, self.within = _sqrt_psd(between), _sqrt_psd(within)
        self.scale = 1.0
        # real genuine / impostor pairs, to fit the scale and to compare against
        rng = np.random.default_rng(seed)
        gen = [(i, j) for p in people for i, j in _pairs(np.flatnonzero(person == p))]
        ga, gb = np.array(gen).T
        ia, ib = rng.integers(0, len(x), (2, 20000))
        keep = person[ia] != person[ib]
        self.real = {"genuine_median": _median_pair_distance(x, ga, gb),
                     "impostor_median": _median_pair_distance(x, ia[keep], ib[keep]),
                     "people": int(len(people)), "photos": int(len(x))}
        for _ in range(3):   # the normalisation shrinks the noise a little: fit the scale to the genuine median
            got = self.compare(seed)["synthetic_genuine_median"]
            self.scale *= self.real["genuine_median"] / got

    def centres(self, n: int, rng) -> np.ndarray:
        return self.mean + rng.standard_normal((n, DIM)).astype(np.float32) @ self.between

    def noise(self, n: int, rng) -> np.ndarray:
        return self.scale * rng.standard_normal((n, DIM)).astype(np.float32) @ self.within

    def templates(self, n: int, per_identity: int, seed: int) -> np.ndarray:
        """n templates, `per_identity` per identity (consecutive rows), in chunks (1M fits)."""
        rng = np.random.default_rng(seed)
        out = np.empty((n, DIM), np.float32)
        step = 100_000 - 100_000 % per_identity
        for s in range(0, n, step):
            m = min(step, n - s)
            c = np.repeat(self.centres(-(-m // per_identity), rng), per_identity, axis=0)[:m]
            out[s:s + m] = _unit(c + self.noise(m, rng))
        return out

    def queries(self, templates: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (queries, the row each was made from): a template plus a genuine pair's difference."""
        rng = np.random.default_rng(seed + 1)
        rows = rng.choice(len(templates), n, replace=False)
        return _unit(templates[rows] + self.noise(n, rng) - self.noise(n, rng)), rows

    def compare(self, seed: int) -> dict:
        t = self.templates(20000, 2, seed + 7)
        rng = np.random.default_rng(seed + 8)
        a, b = rng.integers(0, 10000, (2, 20000)) * 2
        q, rows = self.queries(t, 2000, seed + 9)
        return {"synthetic_genuine_median": _median_pair_distance(t, np.arange(0, 20000, 2), np.arange(1, 20000, 2)),
                "synthetic_impostor_median": _median_pair_distance(t, a[a != b], b[a != b]),
                "synthetic_query_to_template_median": float(np.median(np.linalg.norm(q - t[rows], axis=1)))}


def _pairs(idx):
    return [(idx[i], idx[j]) for i in range(len(idx)) for j in range(i + 1, len(idx))]


# ----------------------------------------------------------------------------------- measuring
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def make_ivfpq(nlist: int, pq_m: int, refine: int) -> faiss.Index:
    """IVF-PQ (inner product) whose candidates are re-ranked exactly over the full vectors."""
    ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(DIM), DIM, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexRefineFlat(ivf)
    index.k_factor = refine
    return index


def build(kind: str, x: np.ndarray, params: dict, seed: int) -> tuple[faiss.Index, float, int]:
    r0 = rss_bytes()
    t0 = time.perf_counter()
    index = make_ivfpq(**params) if kind == "ivfpq" else make_faiss_index(kind, DIM, **params)
    if not index.is_trained:
        n_train = min(len(x), max(50 * params["nlist"], 65536))
        index.train(x[np.random.default_rng(seed).choice(len(x), n_train, replace=False)])
    for s in range(0, len(x), 50_000):
        index.add(x[s:s + 50_000])
    return index, time.perf_counter() - t0, rss_bytes() - r0


def time_queries(index, q: np.ndarray, k: int, params=None, desc="") -> tuple[np.ndarray, np.ndarray]:
    """Search one query at a time -> (first neighbour per query, seconds per query)."""
    first = np.empty(len(q), np.int64)
    sec = np.empty(len(q))
    for i in range(3):   # warm caches
        index.search(q[i:i + 1], k, params=params)
    for i in tqdm(range(len(q)), desc=desc, unit="q", file=sys.stderr, leave=False, mininterval=1):
        t0 = time.perf_counter()
        _, ids = index.search(q[i:i + 1], k, params=params)
        sec[i] = time.perf_counter() - t0
        first[i] = ids[0, 0]
    return first, sec


def point(index, q, truth, a, params=None, desc="", all_threads=True) -> dict:
    """Recall@1 and one query's p50 / p99, on the first of `--threads` (and on each, by_threads)."""
    out, by = {}, {}
    for t in a.threads if all_threads else a.threads[:1]:
        faiss.omp_set_num_threads(t)
        first, sec = time_queries(index, q, a.k, params, desc=f"{desc} {t}t")
        by[str(t)] = {"p50_ms": float(np.percentile(sec, 50) * 1e3), "p99_ms": float(np.percentile(sec, 99) * 1e3)}
        out = out or {"recall_at_1": float(np.mean(first == truth[:len(q)])), **by[str(t)]}
    faiss.omp_set_num_threads(max(a.threads))
    return {**out, "by_threads": by} if all_threads else out


def memory(index, n: int) -> float:
    return len(faiss.serialize_index(index)) / n


def measure_size(n: int, a, model: FaceModel, bar) -> list[dict]:
    x = model.templates(n, a.per_identity, a.seed)
    q, _ = model.queries(x, a.queries, a.seed)
    rows = []
    faiss.omp_set_num_threads(max(a.threads))

    bar.set_postfix_str(f"{n} flat")
    flat, t_build, rss = build("flat", x, {}, a.seed)
    _, truth = flat.search(q, 1)          # exact first neighbours, batched
    truth = truth[:, 0]
    rows.append({"kind": "flat", "size": n, **point(flat, q[:a.flat_queries], truth, a, desc=f"flat {n}"),
                 "build_s": t_build, "bytes_per_template": memory(flat, n), "rss_bytes_per_template": rss / n,
                 "params": {}, "queries": min(a.queries, a.flat_queries)})
    del flat
    bar.update(1)

    if "hnsw" in a.kinds:
        bar.set_postfix_str(f"{n} hnsw build")
        params = {"m": a.hnsw_m, "ef_construction": a.hnsw_ef_construction}
        index, t_build, rss = build("hnsw", x, params, a.seed)
        sweep = [{"ef_search": ef, **point(index, q, truth, a, faiss.SearchParametersHNSW(efSearch=ef),
                                           f"hnsw {n} ef={ef}", all_threads=False)} for ef in a.ef_search]
        ok = [s["ef_search"] for s in sweep if s["recall_at_1"] >= a.target_recall]
        at = point(index, q, truth, a, faiss.SearchParametersHNSW(efSearch=a.hnsw_ef_search), f"hnsw {n}")
        rows.append({"kind": "hnsw", "size": n, **at, "build_s": t_build, "bytes_per_template": memory(index, n),
                     "rss_bytes_per_template": rss / n, "params": {**params, "ef_search": a.hnsw_ef_search},
                     "min_ef_search_for_target_recall": ok[0] if ok else None, "queries": a.queries,
                     "sweep": sweep})
        del index
        bar.update(1)

    if "ivfpq" in a.kinds:
        bar.set_postfix_str(f"{n} ivfpq build")
        params = {"nlist": ivf_nlist(n), "pq_m": a.pq_m, "refine": a.refine}
        index, t_build, rss = build("ivfpq", x, params, a.seed)
        ivf = faiss.downcast_index(index.base_index)

        def sp(nprobe):
            return faiss.IndexRefineSearchParameters(k_factor=float(a.refine),
                                                     base_index_params=faiss.SearchParametersIVF(nprobe=nprobe))
        sweep = []
        for nprobe in a.nprobe:
            p_ = sp(nprobe)
            sweep.append({"nprobe": nprobe, **point(index, q, truth, a, p_, f"ivfpq {n} nprobe={nprobe}",
                                                    all_threads=False)})
        ok = [s["nprobe"] for s in sweep if s["recall_at_1"] >= a.target_recall]
        chosen = ok[0] if ok else a.nprobe[-1]
        p_ = sp(chosen)
        rows.append({"kind": "ivfpq", "size": n, **point(index, q, truth, a, p_, f"ivfpq {n}"), "build_s": t_build,
                     "bytes_per_template": memory(index, n), "rss_bytes_per_template": rss / n,
                     "params": {**params, "nprobe": chosen, "code_bytes_per_template": memory(ivf, n)},
                     "meets_target_recall": bool(ok), "queries": a.queries, "sweep": sweep})
        del index, ivf
        bar.update(1)
    return rows


def ivf_nlist(n: int) -> int:
    return int(2 ** round(np.log2(4 * np.sqrt(n))))


# ----------------------------------------------------------------------------------- summary
def crossover(rows: list[dict], threads: str, stat: str) -> int | None:
    """The template count where HNSW's `stat` (p50_ms / p99_ms at `threads`) drops below flat's:
    flat's taken as linear in the count (least squares on relative error through its measured
    sizes), HNSW's interpolated in log(count) (held constant beyond its measured sizes)."""
    flat = sorted((r["size"], r["by_threads"][threads][stat]) for r in rows if r["kind"] == "flat")
    hnsw = sorted((r["size"], r["by_threads"][threads][stat]) for r in rows if r["kind"] == "hnsw")
    if len(flat) < 2 or not hnsw:
        return None
    n, f = np.array(flat, float).T
    slope, icpt = np.polyfit(n, f, 1, w=1 / f)
    hn, hp = np.array(hnsw, float).T
    grid = np.unique(np.geomspace(100, max(n.max(), hn.max()), 4000).astype(int))
    above = grid[slope * grid + icpt > np.interp(np.log(grid), np.log(hn), hp)]
    return int(above[0]) if len(above) else None


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for kind in sorted({r["kind"] for r in rows}):
        rs = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["size"])
        n = [r["size"] for r in rs]
        line, = a.plot(n, [r["p99_ms"] for r in rs], "o-", label=f"{kind} p99")
        a.plot(n, [r["p50_ms"] for r in rs], "s--", color=line.get_color(), alpha=0.6, label=f"{kind} p50")
        b.plot(n, [r["recall_at_1"] for r in rs], "o-", label=kind)
    a.axhline(10, color="grey", ls=":", lw=1)
    b.axhline(0.99, color="grey", ls=":", lw=1)
    for ax, t in ((a, "one query (ms), on a shared 2-core machine"), (b, "recall@1 against exact")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("templates")
        ax.set_title(t)
        ax.legend(fontsize=8)
    a.set_yscale("log")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=ints, default=[10_000, 100_000, 1_000_000], help="template counts, comma-separated")
    ap.add_argument("--kinds", default="flat,hnsw,ivfpq", help="flat is always run (the exact reference)")
    ap.add_argument("--queries", type=int, default=1000, help="single-query searches per point")
    ap.add_argument("--flat-queries", type=int, default=300, help="of those, timed on flat (60+ ms each at 1M)")
    ap.add_argument("--k", type=int, default=5, help="neighbours per search (the service's identify_k)")
    ap.add_argument("--threads", type=ints, default=[2, 1],
                    help="faiss OpenMP threads: searches are timed on each, the first is the headline (builds use the most)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-identity", type=int, default=3, help="templates per synthetic identity")
    ap.add_argument("--target-recall", type=float, default=0.99)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--hnsw-ef-construction", type=int, default=80)
    ap.add_argument("--hnsw-ef-search", type=int, default=HNSW_EF_SEARCH, help="the operating point (the service's)")
    ap.add_argument("--ef-search", type=ints, default=sorted({16, 32, 48, 64, 96, 128, 192, 256, HNSW_EF_SEARCH}),
                    help="efSearch values swept for recall (latency on the first --threads)")
    ap.add_argument("--pq-m", type=int, default=32, help="PQ bytes per template")
    ap.add_argument("--refine", type=int, default=8, help="re-rank refine x k PQ candidates over the full vectors")
    ap.add_argument("--nprobe", type=ints, default=[8, 16, 32, 64, 128])
    ap.add_argument("--lfw", type=Path, default=LFW, help="the LFW folder (its DevTest people fit the model)")
    ap.add_argument("--fit-per-person", type=int, default=4)
    ap.add_argument("--checkpoint", default=None, help="encoder checkpoint (default: the shipped one)")
    ap.add_argument("--plot", help="p50, p99 and recall against size per kind, as a PNG")
    ap.add_argument("--replot", metavar="JSON", help="only draw --plot from an earlier run's printed JSON")
    a = ap.parse_args(argv)
    if a.replot:
        if not a.plot:
            ap.error("--replot needs --plot")
        lines = [json.loads(line) for line in Path(a.replot).read_text().splitlines() if line.strip()]
        plot([r for r in lines if "kind" in r], a.plot)
        return 0
    a.kinds = [k for k in a.kinds.split(",") if k]
    unknown = set(a.kinds) - {"flat", "hnsw", "ivfpq"}
    if unknown:
        ap.error(f"unknown kinds {sorted(unknown)}: choose from flat, hnsw, ivfpq")

    x, person, version = lfw_embeddings(a.lfw, a.fit_per_person, a.checkpoint)
    model = FaceModel(x, person, a.seed)
    print(json.dumps({"model": {"encoder_version": version, **model.real, **model.compare(a.seed),
                                "within_scale": model.scale}}), flush=True)

    rows = []
    steps = len(a.sizes) * (1 + ("hnsw" in a.kinds) + ("ivfpq" in a.kinds))
    with tqdm(total=steps, desc="index_scale", unit="index", file=sys.stderr) as bar:
        for n in a.sizes:
            for r in measure_size(n, a, model, bar):
                rows.append(r)
                print(json.dumps(r), flush=True)
    big = max(a.sizes)
    h = next((r for r in rows if r["size"] == big and r["kind"] == "hnsw"), None)
    summary = {"summary": {
        "crossover_templates": {f"{stat}_{t}_threads": crossover(rows, str(t), stat)
                                for t in a.threads for stat in ("p50_ms", "p99_ms")},
        "threads": a.threads, "queries": a.queries, "k": a.k, "seed": a.seed, "sizes": a.sizes,
        "hnsw_at_largest": {k: h[k] for k in ("size", "p50_ms", "p99_ms", "recall_at_1", "params")} if h else None,
        "acceptance_1m_p99_10ms_recall_0.99": (None if big < 1_000_000 or not h else
                                               bool(h["p99_ms"] <= 10 and h["recall_at_1"] >= 0.99))}}
    print(json.dumps(summary), flush=True)
    if a.plot:
        plot(rows, a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

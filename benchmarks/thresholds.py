"""Threshold rules compared on held-out data: tune on valid, judge on test (issue 14).

Steps:
  [1/3] scores: for each dataset, a training run (default: `--strategy freeze --cache-features`, seconds) or an
        existing run folder (--run NAME=RUN_DIR), and its probabilities on valid and test
  [2/3] every rule of edgecls.metrics.THRESHOLD_RULES (and a few strengths) tuned on valid
  [3/3] report: test F1 micro/macro and labels per image predicted on test against the truth's; then the same
        over 200 random halvings of valid+test (tune on one half, judge on the other), since the test splits hold
        only 20-60 images

Run:  .venv/bin/python benchmarks/thresholds.py [--aquarium ../shared/datasets/aquarium] [--out runs/bench-thresholds]
      [--run aquarium-finetune=runs/aq-ft]
Requirements: the `train` extra.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_AQUARIUM = REPO.parent / "shared" / "datasets" / "aquarium"
RULES = (("per-class", None), ("global", None), ("shrink", 5.0), ("shrink", 20.0), ("shrink", 50.0),
         ("floor", 10.0), ("floor", 20.0))


def head_run(data: Path, out: Path, reuse: bool = False, **overrides) -> Path:
    """A cached-feature head (the run `--strategy auto` starts with), the settings of benchmarks/training.py."""
    from edgecls.config import build_config
    from edgecls.train import fit
    from edgecls.train.config import TrainConfig

    if reuse and (out / "best.pt").is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    settings = dict(strategy="freeze", cache_features=True, epochs=60, lr=3e-3, augment="none", weight_decay=1e-3,
                    progress=False)
    settings.update(overrides)
    fit(build_config(TrainConfig, overrides={"data": str(data), "out": str(out), **settings}))
    return out


def compare(run: Path, data: Path) -> dict:
    from edgecls.metrics import compute_metrics, labels_per_image, tune_thresholds
    from edgecls.train.evaluate import evaluate

    ev = {split: evaluate(run, data, split=split) for split in ("valid", "test")}
    val, test = ev["valid"], ev["test"]
    names = [c.name for c in test.tuned.per_class]
    truth = float(((test.targets > 0.5) & test.known).sum(axis=1).mean())
    support = ((val.targets > 0.5) & val.known).sum(axis=0)
    rows = {}
    for rule, strength in RULES:
        thr = tune_thresholds(val.probs, val.targets, val.known, rule=rule, strength=strength)
        rep = compute_metrics(test.probs, test.targets, test.known, names, thr)
        key = rule if strength is None else f"{rule} {strength:g}"
        rows[key] = {"f1_micro": rep.f1_micro, "f1_macro": rep.f1_macro,
                     "labels_per_image": labels_per_image(test.probs, thr), "thresholds": thr.tolist()}
    return {"run": str(run), "test_images": len(test.probs), "test_map": test.tuned.map,
            "truth_labels_per_image": truth, "val_support": support.tolist(), "rules": rows,
            "halvings": halvings(np.concatenate([val.probs, test.probs]), np.concatenate([val.targets, test.targets]),
                                 np.concatenate([val.known, test.known]), names)}


def halvings(probs: np.ndarray, targets: np.ndarray, known: np.ndarray, names: list[str], rounds: int = 200) -> dict:
    """Each rule tuned on a random half of the images and judged on the other half, ``rounds`` times: mean test F1
    micro/macro, mean |labels per image / truth's - 1|, and how often each rule has the best micro F1."""
    from edgecls.metrics import compute_metrics, labels_per_image, tune_thresholds

    rng = np.random.default_rng(0)
    n = len(probs)
    out: dict[str, dict[str, list[float]]] = {}
    for _ in range(rounds):
        order = rng.permutation(n)
        a, b = order[: n // 2], order[n // 2 :]
        truth = float(((targets[b] > 0.5) & known[b]).sum(axis=1).mean())
        for rule, strength in RULES:
            key = rule if strength is None else f"{rule} {strength:g}"
            thr = tune_thresholds(probs[a], targets[a], known[a], rule=rule, strength=strength)
            rep = compute_metrics(probs[b], targets[b], known[b], names, thr)
            row = out.setdefault(key, {"f1_micro": [], "f1_macro": [], "labels_ratio_error": []})
            row["f1_micro"].append(rep.f1_micro)
            row["f1_macro"].append(rep.f1_macro)
            row["labels_ratio_error"].append(abs(labels_per_image(probs[b], thr) / truth - 1.0))
    return {key: {k: float(np.nanmean(v)) for k, v in row.items()} for key, row in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aquarium", type=Path, default=DEFAULT_AQUARIUM)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-thresholds")
    parser.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR:DATA, an existing run to add")
    parser.add_argument("--reuse", action="store_true", help="keep the head runs already in --out")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "thresholds.json")
    args = parser.parse_args()
    from edgecls.synth import generate_synthetic

    print("[1/3] scores", flush=True)
    started = time.perf_counter()
    runs: dict[str, tuple[Path, Path]] = {}
    if (args.aquarium / "data.yaml").is_file():
        run = head_run(args.aquarium, args.out / "aquarium", args.reuse)
        runs["aquarium (Lite0 cached head)"] = (run, args.aquarium)
    else:
        print(f"{args.aquarium}: not found, skipped", file=sys.stderr)
    for n in (600, 200):  # 200 images: a few validation positives per class, where per-class tuning chases noise
        synth = args.out / f"synth-{n}-data"
        labels = synth / "labels.csv"
        if not (args.reuse and labels.is_file()):
            labels = generate_synthetic(synth, n=n, seed=1, img_size=96, overwrite=True)
        runs[f"synth {n} (Lite0 cached head)"] = (head_run(labels, args.out / f"synth-{n}", args.reuse, img_size=96),
                                                  labels)
    for item in args.run:
        name, _, rest = item.partition("=")
        run, _, data = rest.partition(":")
        runs[name] = (Path(run), Path(data))
    print("[2/3] rules", flush=True)
    results = {name: compare(run, data) for name, (run, data) in runs.items()}
    results["seconds"] = time.perf_counter() - started
    print("[3/3] report", flush=True)
    for name, r in results.items():
        if not isinstance(r, dict):
            continue
        print(f"\n{name}: {r['test_images']} test images, test mAP {r['test_map']:.4f}, truth "
              f"{r['truth_labels_per_image']:.2f} labels/image, valid positives per class {r['val_support']}")
        print("| rule | test F1 micro | test F1 macro | labels/image (truth " f"{r['truth_labels_per_image']:.2f}) |")
        print("|---|---:|---:|---:|")
        for rule, row in r["rules"].items():
            print(f"| {rule} | {row['f1_micro']:.4f} | {row['f1_macro']:.4f} | {row['labels_per_image']:.2f} |")
        print(f"\n{name}, 200 random halvings of valid+test ({r['test_images']} + valid images):")
        print("| rule | F1 micro | F1 macro | mean abs error of labels/image vs truth |")
        print("|---|---:|---:|---:|")
        for rule, row in r["halvings"].items():
            print(f"| {rule} | {row['f1_micro']:.4f} | {row['f1_macro']:.4f} | {row['labels_ratio_error']:.1%} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

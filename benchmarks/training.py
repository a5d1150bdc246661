"""Training benchmark on the real aquarium dataset (EfficientNet-Lite0 at 224, 2 CPU cores).

Steps:
  [1/5] linear probe: logistic regression on frozen Lite0 features (the baseline to beat)
  [2/5] `--strategy freeze` without the feature cache (epoch time reference)
  [3/5] `--strategy freeze --cache-features` (same frozen encoder, head trained on cached features)
  [4/5] `--strategy finetune`
  [5/5] report: val/test mAP, images/s, minutes, epoch-time ratio cached vs uncached

Run:  .venv/bin/python benchmarks/training.py [--data ../shared/datasets/aquarium] [--out runs/bench-training]
Requirements: the `train` and `dev` extras (scikit-learn for the linear probe).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "aquarium"


def linear_probe(data: Path, img_size: int) -> dict:
    """One-vs-rest logistic regression (C chosen on valid) on Lite0's pooled ImageNet features."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from edgecls.data import load_dataset
    from edgecls.metrics import mean_average_precision
    from edgecls.train._runtime import resolve_device
    from edgecls.train.backbones import ModelSpec, build_model, default_preprocess
    from edgecls.train.evaluate import predict_logits

    ds = load_dataset(data)
    spec = default_preprocess("efficientnet_lite0", img_size)
    model = build_model(ModelSpec("efficientnet_lite0", tuple(ds.class_names)), pretrained=True)
    model.head = torch.nn.Identity()  # predict_logits then returns the pooled features
    device = resolve_device("cpu")
    started = time.perf_counter()
    feats = {name: predict_logits(model, ds.split(name).samples, spec, device=device, workers=1)
             for name in ("train", "valid", "test")}
    seconds = time.perf_counter() - started
    y = {name: ds.split(name).targets() for name in feats}
    best = None
    for c in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0):
        probs = {}
        for name in ("valid", "test"):
            cols = []
            for k in range(len(ds.class_names)):
                clf = LogisticRegression(C=c, max_iter=3000).fit(feats["train"], y["train"][:, k])
                cols.append(clf.predict_proba(feats[name])[:, 1])
            probs[name] = np.stack(cols, 1)
        val = mean_average_precision(probs["valid"], y["valid"])
        if best is None or val > best["val_map"]:
            best = {"C": c, "val_map": val, "test_map": mean_average_precision(probs["test"], y["test"])}
    best["feature_seconds"] = seconds
    return best


def run_training(data: Path, out: Path, **overrides) -> dict:
    from edgecls.config import build_config
    from edgecls.train import fit
    from edgecls.train.config import TrainConfig
    from edgecls.train.evaluate import evaluate

    if out.exists():
        shutil.rmtree(out)
    cfg = build_config(TrainConfig, overrides={"data": str(data), "out": str(out), "progress": False, **overrides})
    started = time.perf_counter()
    result = fit(cfg)
    minutes = (time.perf_counter() - started) / 60
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    test = evaluate(out, data, split="test")
    return {
        "settings": {k: v for k, v in overrides.items()},
        "val_map": result.best_map,
        "test_map": test.tuned.map,
        "test_f1_micro_tuned": test.tuned.f1_micro,
        "best_epoch": result.best_epoch,
        "minutes": minutes,
        "epoch_seconds": [round(h["seconds"], 2) for h in history],
        "train_images_per_s": [round(h["train_images_per_s"], 1) for h in history],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-training")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--finetune-epochs", type=int, default=15)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "training.json")
    args = parser.parse_args()
    if not (args.data / "data.yaml").is_file():
        sys.exit(f"{args.data}: aquarium dataset not found (see ../shared/datasets/README)")

    results: dict = {"machine": {"python": platform.python_version(), "processor": platform.processor(),
                                 "cores": __import__("os").cpu_count()},
                     "date": time.strftime("%Y-%m-%d"), "img_size": args.img_size}
    print("[1/5] linear probe on frozen features", flush=True)
    results["linear_probe"] = linear_probe(args.data, args.img_size)
    print(json.dumps(results["linear_probe"]), flush=True)

    common = {"backbone": "efficientnet_lite0", "img_size": args.img_size, "batch_size": 32}
    print("[2/5] freeze, no feature cache", flush=True)
    results["freeze"] = run_training(args.data, args.out / "freeze", strategy="freeze", epochs=3, lr=3e-3,
                                     augment="none", **common)
    print(json.dumps(results["freeze"]), flush=True)
    print("[3/5] freeze with cached features", flush=True)
    results["freeze_cached"] = run_training(args.data, args.out / "freeze-cached", strategy="freeze",
                                            cache_features=True, epochs=60, lr=3e-3, augment="none",
                                            weight_decay=1e-3, **common)
    print(json.dumps(results["freeze_cached"]), flush=True)
    print("[4/5] finetune", flush=True)
    results["finetune"] = run_training(args.data, args.out / "finetune", strategy="finetune",
                                       epochs=args.finetune_epochs, lr=3e-3, **common)
    print(json.dumps(results["finetune"]), flush=True)

    uncached = np.mean(results["freeze"]["epoch_seconds"][1:])
    cached = np.mean(results["freeze_cached"]["epoch_seconds"][1:])
    results["epoch_speedup_cached_vs_uncached"] = float(uncached / cached)
    print("[5/5] report", flush=True)
    lp = results["linear_probe"]
    rows = [
        ("linear probe (logistic regression)", lp["val_map"], lp["test_map"], "-", f"{lp['feature_seconds'] / 60:.1f}"),
    ]
    for key, label in (("freeze", "freeze"), ("freeze_cached", "freeze --cache-features"), ("finetune", "finetune")):
        r = results[key]
        per_epoch = f"{np.mean(r['epoch_seconds'][1:]):.2f}"
        rows.append((label, r["val_map"], r["test_map"], per_epoch, f"{r['minutes']:.1f}"))
    print("| run | val mAP | test mAP | s/epoch (after 1st) | minutes |")
    print("|---|---:|---:|---:|---:|")
    for name, v, t, s, m in rows:
        print(f"| {name} | {v:.4f} | {t:.4f} | {s} | {m} |")
    print(f"cached epochs are {results['epoch_speedup_cached_vs_uncached']:.0f}x faster than uncached freeze epochs")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

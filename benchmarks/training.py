"""Training benchmark on the real aquarium dataset (EfficientNet-Lite0 at 224, 2 CPU cores).

Steps:
  [1/7] linear probe: logistic regression on frozen Lite0 features (the baseline to beat)
  [2/7] `--strategy freeze` without the feature cache (epoch time reference)
  [3/7] `--strategy freeze --cache-features` (same frozen encoder, head trained on cached features)
  [4/7] `--strategy finetune` (encoder at lr x 0.1)
  [5/7] `--strategy full` (everything at one lr)
  [6/7] `--strategy staged` (head for 2 epochs, then the last 2 stages)
  [7/8] `--strategy auto` with every other setting at its default (the default command; issue 14)
  [8/8] the same with `--ema` (EMA of the weights, timm's warm-up; measured against the default, same seed)
        (both auto steps: once per seed of --seeds, with the mean and spread over them: one aquarium run's val mAP
        moves by about +-0.008 with its augmentation stream alone)
  [distill] (only with --only distill) a Lite2 teacher fine-tuned on the data, then Lite0 `auto` with and without
        `--teacher` (same settings; the teacher's share of each epoch from history.jsonl's teacher_seconds), and
        cached-feature heads on a copy with 30% of the train labels NA: no teacher, the teacher on every entry,
        the teacher on known entries only (--no-distill-unknown)
  report: val/test mAP, training images/s, minutes in all and to the best epoch, cached vs uncached epochs

Run:  .venv/bin/python benchmarks/training.py [--data ../shared/datasets/aquarium] [--out runs/bench-training]
      [--only full,staged]  (runs those steps and merges them into the existing JSON) [--seeds 0,1,2]
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
    from edgecls.train._device import resolve_device
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


def na_copy(data: Path, out: Path, fraction: float = 0.3, seed: int = 0) -> Path:
    """``data``'s splits as train/valid/test.csv label files (absolute image paths) in ``out``, with ``fraction`` of
    the train split's label entries turned unknown (NA) at random; valid and test keep every label."""
    from edgecls.data import load_dataset

    ds = load_dataset(data)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train", "valid", "test"):
        split = ds.split(name)
        y, known = split.targets(), split.known()
        if name == "train":
            known = known & (rng.random(known.shape) >= fraction)
        lines = [",".join(["filename", *ds.class_names])]
        for sample, row, k in zip(split.samples, y, known):
            lines.append(",".join([str(sample.path), *("NA" if not kk else str(int(v)) for v, kk in zip(row, k))]))
        (out / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return out


def _evaluated(run: Path, data: Path) -> dict:
    """val mAP (from the run) and test mAP / labels per image of an existing run folder."""
    from edgecls.metrics import labels_per_image
    from edgecls.train import load_checkpoint
    from edgecls.train.evaluate import evaluate

    test = evaluate(run, data, split="test")
    return {"val_map": float((load_checkpoint(run / "best.pt").metrics or {})["val_map"]), "test_map": test.tuned.map,
            "labels_per_image_test_truth": float(((test.targets > 0.5) & test.known).sum(axis=1).mean()),
            "labels_per_image_test_tuned": labels_per_image(test.probs, test.tuned.thresholds), "minutes": 0.0}


def run_training(data: Path, out: Path, **overrides) -> dict:
    from edgecls.config import build_config
    from edgecls.metrics import labels_per_image
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
    to_best = sum(h["seconds"] for h in history[: result.best_epoch]) / 60
    return {
        "auto": result.auto,
        "labels_per_image_test_truth": float(((test.targets > 0.5) & test.known).sum(axis=1).mean()),
        "labels_per_image_test_tuned": labels_per_image(test.probs, test.tuned.thresholds),
        "minutes_to_best": round(to_best, 2),
        "settings": {k: v for k, v in overrides.items()},
        "val_map": result.best_map,
        "test_map": test.tuned.map,
        "test_f1_micro_tuned": test.tuned.f1_micro,
        "best_epoch": result.best_epoch,
        "minutes": minutes,
        "epoch_seconds": [round(h["seconds"], 2) for h in history],
        "train_images_per_s": [round(h["train_images_per_s"], 1) for h in history],
        "teacher_seconds": [round(h["teacher_seconds"], 2) for h in history if "teacher_seconds" in h],
    }


def distill(data: Path, out: Path, *, teacher_epochs: int, epochs: int, teacher: Path | None = None) -> dict:
    """Issue 14's distillation: teacher, student with and without it, and what NA entries taught by it add.
    ``teacher``: an existing teacher run folder to reuse instead of training one."""
    res: dict = {}
    if teacher is None:
        teacher = out / "distill-teacher"
        print(f"[distill 1/3] teacher: efficientnet_lite2 finetune, {teacher_epochs} epochs", flush=True)
        res["teacher"] = run_training(data, teacher, backbone="efficientnet_lite2", strategy="finetune",
                                      epochs=teacher_epochs, seed=0)
        print(json.dumps(res["teacher"]), flush=True)
    else:
        print(f"[distill 1/3] teacher: {teacher} (reused)", flush=True)
        res["teacher"] = {"run": str(teacher), **_evaluated(teacher, data)}
    print(f"[distill 2/3] Lite0 auto ({epochs} fine-tuning epochs) without and with the teacher", flush=True)
    for arm, extra in (("plain", {}), ("student", {"teacher": str(teacher)})):
        res[arm] = run_training(data, out / f"distill-{arm}", seed=0, epochs=epochs, **extra)
        print(json.dumps(res[arm]), flush=True)
    rows = [r for r in zip(res["student"]["epoch_seconds"], res["student"]["teacher_seconds"])]
    res["teacher_share_of_epoch"] = float(np.mean([t / s for s, t in rows])) if rows else None
    print("[distill 3/3] cached-feature heads on a copy with 30% of the train labels NA", flush=True)
    na = na_copy(data, out / "distill-na30")
    head = dict(strategy="freeze", cache_features=True, epochs=60, lr=3e-3, weight_decay=1e-3, augment="none",
                seed=0)
    for arm, extra in (("na_plain", {}), ("na_teacher_all", {"teacher": str(teacher)}),
                       ("na_teacher_known", {"teacher": str(teacher), "distill_unknown": False})):
        res[arm] = run_training(na, out / arm.replace("_", "-"), **head, **extra)
        print(json.dumps(res[arm]), flush=True)
    return res


def over_seeds(runs: list[dict], seeds: list[int]) -> dict:
    """Mean, standard deviation, minimum and maximum of val/test mAP and minutes over runs of several seeds."""
    out: dict = {"seeds": seeds}
    for name in ("val_map", "test_map", "minutes"):
        values = np.array([r[name] for r in runs], dtype=float)
        out[name] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)), "min": float(values.min()),
                     "max": float(values.max())}
    return out


STEPS = ("probe", "freeze", "freeze_cached", "finetune", "full", "staged", "auto", "auto_ema")
EXTRA_STEPS = ("distill",)  # run only when named in --only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-training")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--finetune-epochs", type=int, default=15)
    parser.add_argument("--full-epochs", type=int, default=6)
    parser.add_argument("--staged-epochs", type=int, default=6)
    parser.add_argument("--distill-teacher-epochs", type=int, default=15)
    parser.add_argument("--distill-epochs", type=int, default=15, help="fine-tuning epochs of both Lite0 arms")
    parser.add_argument("--distill-teacher", type=Path, default=None,
                        help="distill: reuse this teacher run folder instead of training a Lite2 one")
    parser.add_argument("--only", default=",".join(STEPS),
                        help=f"steps to run, of {', '.join(STEPS + EXTRA_STEPS)}")
    parser.add_argument("--seeds", default="0", help="auto and auto_ema: run once per seed (a,b,c); the first "
                        "seed's run is the step's row, the others are auto_seedN rows, with a mean over all")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "training.json")
    args = parser.parse_args()
    if not (args.data / "data.yaml").is_file():
        sys.exit(f"{args.data}: aquarium dataset not found (see ../shared/datasets/README)")
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        sys.exit(f"--seeds {args.seeds!r}: give whole numbers separated by commas, e.g. --seeds 0,1,2")
    if not seeds:
        sys.exit("--seeds: give at least one seed, e.g. --seeds 0")
    if set(only) - set(STEPS + EXTRA_STEPS):
        sys.exit(f"--only: unknown step(s) {sorted(set(only) - set(STEPS + EXTRA_STEPS))}; valid: "
                 f"{', '.join(STEPS + EXTRA_STEPS)}")

    results: dict = json.loads(args.json.read_text()) if args.json.is_file() and set(only) != set(STEPS) else {}
    results.update({"machine": {"python": platform.python_version(), "processor": platform.processor(),
                                "cores": __import__("os").cpu_count()},
                    "img_size": args.img_size})
    results.setdefault("dates", {})
    common = {"backbone": "efficientnet_lite0", "img_size": args.img_size, "batch_size": 32}
    plans = {
        "freeze": ("freeze, no feature cache", dict(strategy="freeze", epochs=3, lr=3e-3, augment="none")),
        "freeze_cached": ("freeze with cached features", dict(strategy="freeze", cache_features=True, epochs=60,
                                                              lr=3e-3, augment="none", weight_decay=1e-3)),
        "finetune": ("finetune", dict(strategy="finetune", epochs=args.finetune_epochs, lr=3e-3)),
        "full": ("full", dict(strategy="full", epochs=args.full_epochs, lr=1e-3)),
        "staged": ("staged", dict(strategy="staged", epochs=args.staged_epochs, lr=3e-3, staged_head_epochs=2,
                                  staged_unfreeze=2)),
        "auto": ("auto, the defaults", dict(seed=0)),
        "auto_ema": ("auto, the defaults and --ema", dict(seed=0, ema=True)),
    }
    for i, step in enumerate(STEPS, 1):
        if step not in only:
            continue
        if step == "probe":
            print(f"[{i}/{len(STEPS)}] linear probe on frozen features", flush=True)
            results["linear_probe"] = linear_probe(args.data, args.img_size)
            print(json.dumps(results["linear_probe"]), flush=True)
        else:
            title, settings = plans[step]
            print(f"[{i}/{len(STEPS)}] {title}", flush=True)
            if not step.startswith("auto"):
                results[step] = run_training(args.data, args.out / step.replace("_", "-"), **settings, **common)
                print(json.dumps(results[step]), flush=True)
            else:  # the default command: the data and the seed only, once per seed
                keys = []
                for n, seed in enumerate(seeds):
                    key = step if n == 0 else f"{step}_seed{seed}"
                    results[key] = run_training(args.data, args.out / key.replace("_", "-"), **{**settings,
                                                                                               "seed": seed})
                    print(json.dumps(results[key]), flush=True)
                    keys.append(key)
                if len(keys) > 1:
                    results[f"{step}_over_seeds"] = over_seeds([results[k] for k in keys], seeds)
        results["dates"][step] = time.strftime("%Y-%m-%d")
    if "distill" in only:
        results["distill"] = distill(args.data, args.out, teacher_epochs=args.distill_teacher_epochs,
                                     epochs=args.distill_epochs, teacher=args.distill_teacher)
        results["dates"]["distill"] = time.strftime("%Y-%m-%d")
        d = results["distill"]
        print("| run | val mAP | test mAP | test labels/image (truth) | minutes |")
        print("|---|---:|---:|---:|---:|")
        for key in ("teacher", "plain", "student", "na_plain", "na_teacher_all", "na_teacher_known"):
            r = d[key]
            print(f"| {key} | {r['val_map']:.4f} | {r['test_map']:.4f} | {r['labels_per_image_test_tuned']:.2f} "
                  f"({r['labels_per_image_test_truth']:.2f}) | {r['minutes']:.1f} |")
        if d.get("teacher_share_of_epoch") is not None:
            print(f"the teacher's share of a student fine-tuning epoch: {d['teacher_share_of_epoch']:.1%}")

    if "freeze" in results and "freeze_cached" in results:
        uncached = np.mean(results["freeze"]["epoch_seconds"][1:])
        cached = np.mean(results["freeze_cached"]["epoch_seconds"][1:])
        results["epoch_speedup_cached_vs_uncached"] = float(uncached / cached)
    print("report", flush=True)
    print("| run | val mAP | test mAP | train img/s (median) | s/epoch (after 1st) | minutes to best | minutes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    if "linear_probe" in results:
        lp = results["linear_probe"]
        print(f"| linear probe (logistic regression) | {lp['val_map']:.4f} | {lp['test_map']:.4f} | - | - | - | "
              f"{lp['feature_seconds'] / 60:.1f} |")
    labels = {"freeze": "freeze", "freeze_cached": "freeze --cache-features", "finetune": "finetune", "full": "full",
              "staged": "staged", "auto": "auto (defaults)", "auto_ema": "auto --ema"}
    labels.update({f"{key}_seed{seed}": f"{labels[key]}, seed {seed}" for key in ("auto", "auto_ema")
                   for seed in seeds[1:]})
    for key, label in labels.items():
        if key not in results:
            continue
        r = results[key]
        speed = np.median(r["train_images_per_s"][1:] or r["train_images_per_s"])
        to_best = r.get("minutes_to_best")
        print(f"| {label} ({len(r['epoch_seconds'])} epochs) | {r['val_map']:.4f} | {r['test_map']:.4f} | "
              f"{speed:.1f} | {np.mean(r['epoch_seconds'][1:]):.2f} | {'-' if to_best is None else f'{to_best:.1f}'} |"
              f" {r['minutes']:.1f} |")
    for key in ("auto", "auto_ema"):
        summary = results.get(f"{key}_over_seeds")
        if summary is not None and summary["seeds"] == seeds:
            v, t, m = summary["val_map"], summary["test_map"], summary["minutes"]
            print(f"{labels[key]} over seeds {','.join(map(str, seeds))}: val mAP {v['mean']:.4f} +- {v['sd']:.4f} "
                  f"({v['min']:.4f}-{v['max']:.4f}), test mAP {t['mean']:.4f} +- {t['sd']:.4f} "
                  f"({t['min']:.4f}-{t['max']:.4f}), {m['min']:.1f}-{m['max']:.1f} min")
    if "epoch_speedup_cached_vs_uncached" in results:
        print(f"cached epochs are {results['epoch_speedup_cached_vs_uncached']:.0f}x faster than uncached freeze "
              "epochs")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

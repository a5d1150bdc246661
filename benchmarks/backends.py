"""Backends benchmark: the `edgecls bench` table for EfficientNet-Lite0, MobileNetV3-Large and ResNet-50 at 224 px.

Steps:
  [1/4] bundles: bundles/aq-<model> if present; with --build, missing ones are trained on the aquarium dataset and
        exported with the recipes below (Lite0 from its offline ImageNet weights; the torchvision models start from
        random weights, since their ImageNet weights cannot be downloaded here, so their accuracy columns only show
        that every artifact agrees with its PyTorch model, not what a pretrained model would score)
  [2/4] `edgecls bench` of each bundle on the aquarium valid split: every artifact x backend here, PyTorch eager /
        channels-last / torch.compile, batch 1, 8 and 32, each row in its own process, 2 threads, medians of 3
        interleaved rounds
  [3/4] benchmarks/results/backends-<model>.{json,md,png}; with --check, nothing is written: each run is compared
        with the committed backends-<model>.json instead (same CPU and threads: every row's time within
        --tolerance, mAP within 0.002; another machine: accuracy only), and the script exits 1 when they differ
  [4/4] report: the speed targets of --targets (benchmarks/targets.yaml: issue 5's) per model, and the one-line
        summary of each row

Run:  .venv/bin/python benchmarks/backends.py [--build] [--models lite0,mnv3l,r50] [--iters 50] [--threads 2]
      [--rounds 3] [--targets benchmarks/targets.yaml] [--check [--tolerance 0.25]]
      (`make bench-check` runs it with --check --targets benchmarks/targets.yaml)
Requirements: benchmarks/requirements.txt (the `all` extra pinned to the versions the results were measured with).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
AQUARIUM = REPO.parent / "shared" / "datasets" / "aquarium" / "data.yaml"
RESULTS = REPO / "benchmarks" / "results"
TARGETS_FILE = REPO / "benchmarks" / "targets.yaml"

COMMON = dict(img_size=224, workers=1, progress=False, seed=0)
RECIPES = {
    "lite0": dict(backbone="efficientnet_lite0", strategy="freeze", cache_features=True, epochs=60, lr=3e-3,
                  weight_decay=1e-3),
    "mnv3l": dict(backbone="mobilenet_v3_large", pretrained=False, strategy="full", epochs=12, lr=2e-3),
    "r50": dict(backbone="resnet50", pretrained=False, strategy="freeze", cache_features=True, epochs=30, lr=3e-3),
}
TARGETS = {
    "lite0": ("all",),
    "mnv3l": ("all",),
    "r50": ("onnx", "onnx-int8", "openvino", "openvino-int8"),
}


def build(name: str, runs: Path, bundles: Path) -> Path:
    """Train (unless runs/aq-<name> holds a checkpoint) and export bundles/aq-<name>."""
    from edgecls.config import build_config
    from edgecls.export import ExportConfig, export
    from edgecls.train.config import TrainConfig
    from edgecls.train.loop import fit

    run_dir, bundle = runs / f"aq-{name}", bundles / f"aq-{name}"
    if not (run_dir / "best.pt").is_file():
        cfg = build_config(TrainConfig, overrides={**COMMON, **RECIPES[name], "data": str(AQUARIUM),
                                                  "out": str(run_dir)})
        start = time.perf_counter()
        result = fit(cfg)
        print(f"      trained {name}: val mAP {result.best_map:.4f} in {(time.perf_counter() - start) / 60:.1f} min")
    export(ExportConfig(checkpoint=str(run_dir), targets=TARGETS[name], data=str(AQUARIUM), out=str(bundle)))
    return bundle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lite0,mnv3l,r50")
    parser.add_argument("--bundles", type=Path, default=REPO / "bundles")
    parser.add_argument("--runs", type=Path, default=REPO / "runs")
    parser.add_argument("--build", action="store_true", help="train and export bundles that are missing")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per row (medians)")
    parser.add_argument("--batch", default="1,8,32")
    parser.add_argument("--torch-variants", default="eager,channels_last,compile")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--targets", type=Path, default=TARGETS_FILE, help="the speed targets to judge")
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed results instead of writing new ones; exit 1 if they differ")
    parser.add_argument("--tolerance", type=float, default=0.25, help="with --check: relative time change of a row "
                        "that still counts as noise")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="      %(message)s")
    for noisy in ("edgecls.export", "edgecls.runtime", "edgecls.train", "nncf"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from edgecls._io import atomic_write_text, to_json
    from edgecls.bench import BenchConfig, compare, load_baseline, run

    if not AQUARIUM.is_file():
        print(f"the aquarium dataset is absent ({AQUARIUM}); this benchmark needs it")
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in RECIPES]
    if unknown:
        print(f"unknown model(s) {unknown}; valid: {', '.join(RECIPES)}")
        return 2

    print("[1/4] bundles")
    bundles = {}
    for name in models:
        bundle = args.bundles / f"aq-{name}"
        if not (bundle / "manifest.json").is_file():
            if not args.build:
                print(f"      {bundle}: missing (pass --build to train and export it); skipped")
                continue
            bundle = build(name, args.runs, args.bundles)
        bundles[name] = bundle
        print(f"      {name}: {bundle}")

    results = {}
    print("[2/4] edgecls bench")
    for name, bundle in bundles.items():
        cfg = BenchConfig(bundle=str(bundle), data=str(AQUARIUM), split="valid", iters=args.iters, rounds=args.rounds,
                          threads=args.threads, batch=tuple(int(b) for b in args.batch.split(",")),
                          torch_variants=tuple(v for v in args.torch_variants.split(",") if v and v != "none"),
                          targets=str(args.targets))
        start = time.perf_counter()
        results[name] = run(cfg)
        print(f"      {name}: {len(results[name].rows)} rows in {(time.perf_counter() - start) / 60:.1f} min")

    if args.check:
        print("[3/4] compare with the committed results")
        differs = []
        for name, result in results.items():
            stored = args.out / f"backends-{name}.json"
            comparison = compare(result.to_dict(), load_baseline(stored), baseline=str(stored),
                                 tolerance=args.tolerance)
            print(f"\n== {name} ==\n{comparison.table()}")
            if not comparison.passed:
                differs.append(name)
        print(f"\n[4/4] {'DIFFERS: ' + ', '.join(differs) if differs else 'every model matches its committed results'}")
        return 1 if differs else 0

    print("[3/4] results")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        stem = args.out / f"backends-{name}"
        atomic_write_text(stem.with_suffix(".json"), to_json(result.to_dict()))
        atomic_write_text(stem.with_suffix(".md"), result.markdown())
        result.plot(stem.with_suffix(".png"))
        print(f"      {stem}.json / .md / .png")

    print("[4/4] report")
    for name, result in results.items():
        print(f"\n== {name} ==\n{result.table()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

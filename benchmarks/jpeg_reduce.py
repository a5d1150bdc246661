"""Reduced-size JPEG decoding: a trained checkpoint mAP with and without it, on aquarium enlarged to camera sizes.

The aquarium photos here are 320 px on the long side, far below the 2 x 224 a reduced decode needs, so they are
decoded in full either way; to see what the reduction does, each valid and test image is enlarged (cubic) to
2000 and 4000 px on the long side and saved as a quality-90 JPEG (the decode at 1/2 and 1/4 of the size).

Steps:
  [1/3] the checkpoint (e.g. `edgecls train DATA --strategy freeze --cache-features`) and its preprocessing
  [2/3] enlarged copies of valid and test
  [3/3] per size and split: mAP with full decoding and with `jpeg_reduce` (the checkpoint's model in FP32, the
        shared eval preprocessing), the difference, and the decode+preprocess time per image

Run:  .venv/bin/python benchmarks/jpeg_reduce.py CHECKPOINT [--data ../shared/datasets/aquarium] [--sizes 2000,4000]
Requirements: the `train` extra.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# ../shared beside the repository (a main checkout) or two levels up (a worktree under wt/)
SHARED = next((p / "shared" for p in (REPO.parent, REPO.parent.parent) if (p / "shared").is_dir()),
              REPO.parent / "shared")
DEFAULT_DATA = SHARED / "datasets" / "aquarium"


def enlarge(samples, out: Path, long_side: int):
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    moved = []
    for s in samples:
        img = cv2.imread(str(s.path))
        h, w = img.shape[:2]
        k = long_side / max(h, w)
        dst = out / Path(s.path).name
        cv2.imwrite(str(dst), cv2.resize(img, (round(w * k), round(h * k)), interpolation=cv2.INTER_CUBIC),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        moved.append(dataclasses.replace(s, path=dst))
    return moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--sizes", default="native,2000,4000")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    import torch

    from edgecls.data import load_dataset
    from edgecls.metrics import mean_average_precision, sigmoid
    from edgecls.preprocess import preprocess
    from edgecls.train.checkpoint import load_checkpoint
    from edgecls.train.evaluate import predict_logits

    torch.set_num_threads(2)
    print("[1/3] checkpoint")
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.build_model().eval()
    spec = ckpt.preprocess.replace(jpeg_reduce=True)
    print(f"      {ckpt.model_spec.backbone}, preprocessing {spec.to_dict()}")
    ds = load_dataset(args.data, classes=ckpt.class_names)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgecls-reduce-") as tmp:
        for size in args.sizes.split(","):
            for split in ("valid", "test"):
                samples = ds.split(split).samples
                if size != "native":
                    print(f"[2/3] {split} enlarged to {size} px")
                    samples = enlarge(samples, Path(tmp) / f"{split}-{size}", int(size))
                targets = np.stack([s.target for s in samples])
                known = np.stack([s.known for s in samples]).astype(bool)
                row = {"size": size, "split": split, "images": len(samples)}
                for name, sp in (("full", spec.replace(jpeg_reduce=False)), ("reduced", spec)):
                    print(f"[3/3] {split} {size}: {name} decoding")
                    started = time.perf_counter()
                    for s in samples[:32]:
                        preprocess(s.path, sp)
                    row[f"{name}_ms"] = (time.perf_counter() - started) / min(32, len(samples)) * 1000
                    logits = predict_logits(model, samples, sp, device=torch.device("cpu"))
                    row[f"{name}_map"] = mean_average_precision(sigmoid(logits), targets, known)
                row["delta"] = row["reduced_map"] - row["full_map"]
                rows.append(row)
                print(json.dumps(row))
    print()
    print(f"{'size':>6s} {'split':>6s} {'images':>6s} {'mAP full':>9s} {'mAP reduced':>11s} {'delta':>8s} "
          f"{'ms/img full':>11s} {'ms/img reduced':>14s}")
    for r in rows:
        print(f"{r['size']:>6s} {r['split']:>6s} {r['images']:6d} {r['full_map']:9.4f} {r['reduced_map']:11.4f} "
              f"{r['delta']:+8.4f} {r['full_ms']:11.1f} {r['reduced_ms']:14.1f}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

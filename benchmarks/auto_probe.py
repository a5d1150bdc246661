"""Can a cheap probe tell, before fine-tuning, whether fine-tuning will beat the cached-feature head? (issue 14)

`--strategy auto` would meet "at most twice the head's time when fine-tuning does not help" only if it could decide
without a fine-tuning epoch: on 2 cores one Lite0 fine-tuning epoch costs more than the whole head phase. This
measures two probes that cost about one head phase, on data where full fine-tuning is known to help (aquarium: head
val mAP 0.913, fine-tuning 0.943-0.945). A probe that does not rise above the head there cannot be the signal.

Steps:
  [1/3] one forward pass of ImageNet Lite0 over train and valid (the shared eval preprocessing), keeping the input of
        the last block groups and the pooled output of every stage
  [2/3] top-stage probe: the last block group(s), conv_head and a fresh head trained on those cached inputs
        (AdamW, one-cycle, horizontal flips of the cached maps); val mAP per epoch
  [3/3] multi-layer probe: linear heads on the final features alone and with pooled intermediate stages beside them
        (standardised), the mean of 3 seeds

Run:  .venv/bin/python benchmarks/auto_probe.py [--data ../shared/datasets/aquarium] [--split-at 6 --split-at 5]
      [--epochs 10] [--json benchmarks/results/auto-probe.json]
Requirements: the `train` extra.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgecls.data import label_priors, load_dataset
from edgecls.metrics import DEFAULT_THRESHOLD, compute_metrics
from edgecls.preprocess import preprocess
from edgecls.train.backbones import HEAD_PRIOR, PRIOR_CLIP, ModelSpec, build_model, default_preprocess
from edgecls.train.losses import MaskedBCE

REPO = Path(__file__).resolve().parents[1]
BACKBONE = "efficientnet_lite0"


def val_map(logits: torch.Tensor, split, class_names) -> float:
    probs = torch.sigmoid(logits).numpy()
    return compute_metrics(probs, split.targets(), split.known(), class_names, DEFAULT_THRESHOLD).map


def train_epoch(forward, opt, sched, x_all, split, generator=None, flip: bool = False, bs: int = 32) -> None:
    """One shuffled pass of masked BCE over cached inputs; ``flip`` mirrors half of each batch's maps (NCHW)."""
    y, known = torch.from_numpy(split.targets()).float(), torch.from_numpy(split.known())
    loss_fn = MaskedBCE()
    perm = torch.randperm(len(x_all), generator=generator)
    for i in range(0, len(x_all), bs):
        idx = perm[i : i + bs]
        x = x_all[idx].float()
        if flip:
            mirror = torch.rand(len(idx), generator=generator) < 0.5
            x[mirror] = x[mirror].flip(-1)
        loss = loss_fn(forward(x), y[idx], known[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def forward_cache(model, split, prep, split_points: list[int]):
    """Per image: the input of blocks[k] for each k in split_points, and the pooled output of every stage."""
    enc = model.encoder
    maps: dict[int, list[torch.Tensor]] = {k: [] for k in split_points}
    pooled: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for i in range(0, len(split), 32):
            x = torch.from_numpy(np.stack([preprocess(s.path, prep) for s in split.samples[i : i + 32]]))
            x = enc.bn1(enc.conv_stem(x))
            row = []
            for b, block in enumerate(enc.blocks):
                if b in maps:
                    maps[b].append(x.half())
                x = block(x)
                row.append(x.mean((2, 3)))
            row.append(enc.bn2(enc.conv_head(x)).mean((2, 3)))
            pooled.append(row)
    return {k: torch.cat(v) for k, v in maps.items()}, [torch.cat(c) for c in zip(*pooled)]


def top_stage_probe(spec, split_at: int, xtr, xva, train, valid, epochs: int, lr_top: float, seed: int) -> list[float]:
    torch.manual_seed(seed)
    model = build_model(spec, pretrained=True)
    model.init_head_bias(label_priors(train, HEAD_PRIOR))
    enc = model.encoder

    def top(t: torch.Tensor) -> torch.Tensor:
        for block in enc.blocks[split_at:]:
            t = block(t)
        return model.head(enc.forward_head(enc.bn2(enc.conv_head(t))))

    top_params = [p for b in enc.blocks[split_at:] for p in b.parameters()]
    top_params += [*enc.conv_head.parameters(), *enc.bn2.parameters()]
    opt = torch.optim.AdamW([{"params": top_params, "lr": lr_top}, {"params": model.head.parameters(), "lr": 3e-3}],
                            weight_decay=1e-2)
    n, bs = len(xtr), 32
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr_top, 3e-3], total_steps=epochs * math.ceil(n / bs),
                                                pct_start=0.1)
    maps = []
    for epoch in range(epochs):
        model.train()
        train_epoch(top, opt, sched, xtr, train, torch.Generator().manual_seed(seed * 1000 + epoch), flip=True, bs=bs)
        model.eval()
        with torch.no_grad():
            logits = torch.cat([top(xva[i : i + 128].float()) for i in range(0, len(xva), 128)])
        maps.append(val_map(logits, valid, spec.class_names))
    return maps


def linear_probe(ftr: torch.Tensor, fva: torch.Tensor, train, valid, class_names, seed: int, epochs: int = 60) -> float:
    """The auto head's optimiser recipe (AdamW 3e-3, weight decay 1e-3, cosine, dropout 0.2, bias from the data) on
    standardised features, which auto's head does not standardise: compare its rows with each other."""
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    ftr, fva = (ftr - mu) / sd, (fva - mu) / sd
    torch.manual_seed(seed)
    lin = nn.Sequential(nn.Dropout(0.2), nn.Linear(ftr.shape[1], len(class_names)))
    p = torch.as_tensor(label_priors(train, HEAD_PRIOR), dtype=torch.float32).clamp(*PRIOR_CLIP)
    with torch.no_grad():
        lin[1].weight.normal_(std=0.01)
        lin[1].bias.copy_(torch.log(p / (1 - p)))
    opt = torch.optim.AdamW(lin.parameters(), lr=3e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * math.ceil(len(ftr) / 32))
    for _ in range(epochs):
        lin.train()
        train_epoch(lin, opt, sched, ftr, train)
    lin.eval()
    with torch.no_grad():
        return val_map(lin(fva), valid, class_names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "aquarium"))
    ap.add_argument("--split-at", type=int, action="append", help="train blocks[K:] and up (default: 6 and 5)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    split_points = args.split_at or [6, 5]
    ds = load_dataset(args.data, seed=0)
    train, valid = ds.split("train"), ds.split("valid")
    spec = ModelSpec(backbone=BACKBONE, class_names=tuple(ds.class_names), head="linear", dropout=0.2)
    prep = default_preprocess(BACKBONE)
    model = build_model(spec, pretrained=True).eval()
    started = time.perf_counter()
    print(f"[1/3] forward pass over {len(train)} + {len(valid)} images", flush=True)
    mtr, ptr = forward_cache(model, train, prep, split_points)
    mva, pva = forward_cache(model, valid, prep, split_points)
    cache_s = time.perf_counter() - started
    print(f"      {cache_s:.1f} s", flush=True)
    result: dict = {"data": args.data, "backbone": BACKBONE, "cache_seconds": cache_s, "top_stage": {}, "linear": {}}
    for k in split_points:
        t = time.perf_counter()
        maps = top_stage_probe(spec, k, mtr[k], mva[k], train, valid, args.epochs, 1e-3 if k < 6 else 3e-4, seed=0)
        secs = time.perf_counter() - t
        result["top_stage"][f"blocks[{k}:]"] = {"val_map_per_epoch": maps, "seconds": secs}
        print(f"[2/3] blocks[{k}:] + conv_head on cached {tuple(mtr[k].shape[1:])}: best val mAP {max(maps):.4f}, "
              f"last {maps[-1]:.4f}, {secs:.1f} s", flush=True)
    last = len(ptr) - 1
    sets = {"final": [last], "final + last 2 stages": [last, last - 1, last - 2],
            "final + stages 3-7": list(range(2, last + 1))}
    for name, sel in sets.items():
        maps = [linear_probe(torch.cat([ptr[i] for i in sel], 1), torch.cat([pva[i] for i in sel], 1), train, valid,
                             spec.class_names, seed=s) for s in range(3)]
        result["linear"][name] = {"val_map_seeds": maps, "mean": float(np.mean(maps))}
        print(f"[3/3] linear head on {name}: val mAP {np.mean(maps):.4f} (3 seeds)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Training end to end on a tiny real backbone and a generated dataset (seconds per run)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from edgecls.data import load_dataset
from edgecls.errors import ConfigError, TrainingDiverged
from edgecls.preprocess import preprocess
from edgecls.train import fit, load_checkpoint, resume
from edgecls.train import loop as loop_module
from edgecls.train._datasets import ImageDataset
from edgecls.train.evaluate import evaluate


def test_fit_writes_a_self_describing_run(synth_small, tmp_path, tiny_config):
    cfg = tiny_config(synth_small, tmp_path / "run")
    result = fit(cfg)
    run = tmp_path / "run"
    for name in ("best.pt", "last.pt", "config.yaml", "history.jsonl", "report.json", "report.md", "loss.png",
                 "val_map.png", "pr_curves.png"):
        assert (run / name).is_file(), name
    assert result.stopped == "completed" and result.epochs_run == 2
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert result.best_map == max(h["val_map"] for h in history)

    raw = torch.load(run / "best.pt", map_location="cpu", weights_only=True)  # plain containers only
    assert raw["model_spec"]["class_names"] == [c.name for c in result.report.per_class]
    assert len(raw["thresholds"]) == len(raw["model_spec"]["class_names"])
    ckpt = load_checkpoint(run)
    assert ckpt.thresholds is not None and ckpt.thresholds.shape == (len(ckpt.class_names),)
    assert ckpt.preprocess.img_size == 64 and ckpt.config["img_size"] == 64
    assert "valid_tuned" in ckpt.metrics and ckpt.versions["torch"] == torch.__version__
    report = json.loads((run / "report.json").read_text())
    assert report["split"] == "valid" and set(report) >= {"at_0.5", "tuned", "info"}

    # evaluate reproduces the run's validation metrics from the checkpoint alone
    ev = evaluate(run, synth_small, split="valid", workers=0)
    assert ev.tuned.map == pytest.approx(result.report.map, abs=1e-6)
    assert ev.tuned.f1_micro == pytest.approx(result.report.f1_micro, abs=1e-6)


def test_refuses_to_overwrite_a_run(synth_small, tmp_path, tiny_config):
    cfg = tiny_config(synth_small, tmp_path / "run", epochs=1)
    fit(cfg)
    with pytest.raises(ConfigError, match="already holds a training run; continue it with --resume"):
        fit(cfg)


def test_validation_tensor_equals_shared_preprocessing(synth_small):
    from edgecls.train.backbones import default_preprocess

    ds = load_dataset(synth_small)
    spec = default_preprocess("efficientnet_lite0", 96)
    sample = ds.split("valid").samples[0]
    image, target, known = ImageDataset([sample], spec)[0]
    np.testing.assert_array_equal(image.numpy(), preprocess(sample.path, spec))
    np.testing.assert_array_equal(target.numpy(), sample.target)
    np.testing.assert_array_equal(known.numpy(), sample.known)


def test_resume_after_interrupt_matches_uninterrupted_run(synth_small, tmp_path, tiny_config, monkeypatch):
    full = fit(tiny_config(synth_small, tmp_path / "full", epochs=3))

    original = loop_module._Run._train_epoch

    def interrupt_in_second_epoch(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt  # what Ctrl-C raises
        return original(self, epoch)

    monkeypatch.setattr(loop_module._Run, "_train_epoch", interrupt_in_second_epoch)
    part = fit(tiny_config(synth_small, tmp_path / "part", epochs=3))
    assert part.stopped == "interrupted" and part.epochs_run == 1
    assert load_checkpoint(tmp_path / "part" / "last.pt").epoch == 1
    monkeypatch.setattr(loop_module._Run, "_train_epoch", original)

    resumed = resume(tmp_path / "part")
    assert resumed.epochs_run == 3 and resumed.stopped == "completed"
    assert round(resumed.best_map, 3) == round(full.best_map, 3)
    h_full = [json.loads(x) for x in (tmp_path / "full" / "history.jsonl").read_text().splitlines()]
    h_res = [json.loads(x) for x in (tmp_path / "part" / "history.jsonl").read_text().splitlines()]
    assert [round(h["val_map"], 3) for h in h_res] == [round(h["val_map"], 3) for h in h_full]
    assert [round(h["train_loss"], 5) for h in h_res] == [round(h["train_loss"], 5) for h in h_full]


def test_resume_rejects_changing_fixed_settings(synth_small, tmp_path, tiny_config):
    fit(tiny_config(synth_small, tmp_path / "run", epochs=1))
    with pytest.raises(ConfigError, match="batch_size cannot change"):
        resume(tmp_path / "run", {"batch_size": 8})
    extended = resume(tmp_path / "run", {"epochs": 2})
    assert extended.epochs_run == 2


def test_freeze_keeps_encoder_and_batchnorm_statistics(synth_small, tmp_path, tiny_config):
    from edgecls.train.backbones import ModelSpec, build_model

    fit(tiny_config(synth_small, tmp_path / "run", strategy="freeze", epochs=1))
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    torch.manual_seed(0)  # the run seeds with cfg.seed=0 before building the model
    initial = build_model(ModelSpec.from_dict(ckpt.model_spec.to_dict()), pretrained=False).state_dict()
    for key, value in ckpt.state_dict.items():
        if key.startswith("encoder.") and value.is_floating_point():
            assert torch.equal(value, initial[key]), key
    assert any(not torch.equal(v, initial[k]) for k, v in ckpt.state_dict.items() if k.startswith("head."))


def test_frozen_stages_keep_their_weights_and_batchnorm_statistics(synth_small, tmp_path, tiny_config):
    from edgecls.train.backbones import ModelSpec, build_model

    fit(tiny_config(synth_small, tmp_path / "run", frozen_stages=2, epochs=1))
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    spec = ModelSpec.from_dict(ckpt.model_spec.to_dict())
    torch.manual_seed(0)  # the run seeds with cfg.seed=0 before building the model
    initial = build_model(spec, pretrained=False)
    trained = build_model(spec, pretrained=False)
    trained.load_state_dict(ckpt.state_dict)

    def tensors(stage):  # weights, BatchNorm running statistics and their batch counters
        return [*stage.parameters(), *stage.buffers()]

    pairs = [list(zip(tensors(a), tensors(b))) for a, b in zip(initial.stages(), trained.stages())]
    for stage in pairs[:2]:
        assert stage and all(torch.equal(a, b) for a, b in stage)
    assert any(not torch.equal(a, b) for stage in pairs[2:] for a, b in stage)


def test_frozen_stages_refuse_the_whole_encoder(synth_small, tmp_path, tiny_config):
    from edgecls.train.backbones import ModelSpec, build_model

    n = len(build_model(ModelSpec("timm:test_efficientnet", ("a", "b")), pretrained=False).stages())
    with pytest.raises(ConfigError, match=f"--frozen-stages {n}: .* has {n} encoder stages.*give 0-{n - 1}"):
        fit(tiny_config(synth_small, tmp_path / "run", frozen_stages=n, epochs=1))
    with pytest.raises(ConfigError, match="--frozen-stages must be 0 or more"):
        tiny_config(synth_small, tmp_path / "run2", frozen_stages=-1)


def test_drop_path_drops_residual_branches_in_training_only(synth_small, tmp_path, tiny_config):
    from edgecls.train.backbones import ModelSpec, build_model

    model = build_model(ModelSpec("timm:test_efficientnet", ("a", "b")), pretrained=False)
    x = torch.randn(4, 3, 64, 64)
    model.eval()
    plain = model(x)
    assert model.set_drop_path(0.5) > 1
    rates = [getattr(m.drop_path, "drop_prob", 0.0) for m in model.encoder.modules() if hasattr(m, "has_skip")]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)
    assert torch.equal(model(x), plain)  # the identity in eval mode: exports and predictions are unchanged
    model.train()
    torch.manual_seed(0)
    first = model(x)
    assert not torch.equal(first, model(x))  # another draw of dropped branches
    result = fit(tiny_config(synth_small, tmp_path / "run", drop_path=0.2, epochs=1))
    assert result.epochs_run == 1 and "drop_path: 0.2" in (tmp_path / "run" / "config.yaml").read_text()
    resnet = build_model(ModelSpec("resnet18", ("a", "b")), pretrained=False)
    with pytest.raises(ConfigError, match="--drop-path 0.1: resnet18 has no timm residual blocks"):
        resnet.set_drop_path(0.1)
    with pytest.raises(ConfigError, match="--drop-path must be in"):
        tiny_config(synth_small, tmp_path / "run2", drop_path=1.0)


def test_cache_features_trains_the_head_on_cached_features(synth_small, tmp_path, tiny_config):
    cached = fit(tiny_config(synth_small, tmp_path / "cached", strategy="freeze", cache_features=True, epochs=3,
                             augment="none"))
    assert cached.stopped == "completed" and 0.0 <= cached.best_map <= 1.0
    ckpt = load_checkpoint(tmp_path / "cached")
    assert ckpt.thresholds is not None


def test_staged_unfreezes_after_head_epochs(synth_small, tmp_path, tiny_config):
    fit(tiny_config(synth_small, tmp_path / "run", strategy="staged", staged_head_epochs=1, staged_unfreeze=1,
                    epochs=1))
    head_only = load_checkpoint(tmp_path / "run" / "last.pt").state_dict
    resume(tmp_path / "run", {"epochs": 2})
    after = load_checkpoint(tmp_path / "run" / "last.pt").state_dict
    changed = {k.split(".")[1] for k, v in after.items() if k.startswith("encoder.") and v.is_floating_point()
               and not torch.equal(v, head_only[k])}
    assert changed, "the last stage should train in the second epoch"


@pytest.mark.parametrize("loss,extra", [("focal", {}), ("asl", {}), ("bce", {"pos_weight": "auto"})])
def test_losses_and_options_train(synth_small, tmp_path, tiny_config, loss, extra):
    result = fit(tiny_config(synth_small, tmp_path / "run", epochs=1, loss=loss, optimizer="sgd",
                             scheduler="onecycle", ema=True, grad_clip=1.0, accumulate=2, **extra))
    assert result.stopped == "completed"


def test_nan_loss_stops_and_keeps_last_good_checkpoint(synth_small, tmp_path, tiny_config, monkeypatch):
    run = tmp_path / "run"
    fit(tiny_config(synth_small, run, epochs=1))
    good = (run / "last.pt").read_bytes()

    class Exploding(torch.nn.Module):
        def forward(self, logits, targets, known):
            return (logits * float("nan")).mean()

    monkeypatch.setattr(loop_module, "build_loss", lambda cfg, pw: Exploding())
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2, step 1; the last good checkpoint"):
        resume(run, {"epochs": 2})
    assert (run / "last.pt").read_bytes() == good


def test_divergence_in_the_first_epoch_says_to_restart_with_a_lower_lr(synth_small, tmp_path, tiny_config):
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        fit(tiny_config(synth_small, run, epochs=1, lr=1e30, scheduler="constant"))  # a real divergence
    message = str(info.value)
    assert "at epoch 1" in message and "no epoch completed, so there is no checkpoint to resume" in message
    assert "start a new run with a lower learning rate (--lr 3.3e+29 instead of 1e+30" in message
    assert "--resume" not in message and not (run / "last.pt").exists()


def test_divergence_after_an_epoch_says_how_to_resume_with_a_lower_lr(synth_small, tmp_path, tiny_config):
    run = tmp_path / "run"
    fit(tiny_config(synth_small, run, epochs=1, scheduler="constant"))
    good = (run / "last.pt").read_bytes()
    with pytest.raises(TrainingDiverged) as info:
        resume(run, {"epochs": 2, "lr": 1e30})  # --resume accepts --lr; this one makes the loss NaN for real
    message = str(info.value)
    assert "at epoch 2" in message and f"the last good checkpoint is kept in {run / 'last.pt'} (epoch 1)" in message
    assert f"edgecls train --resume {run} --lr 3.3e+29" in message
    assert (run / "last.pt").read_bytes() == good

    resumed = resume(run, {"epochs": 2, "lr": 1e-3})  # the advice works: a lower lr continues from epoch 1
    assert resumed.stopped == "completed" and resumed.epochs_run == 2
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [h["lr"] for h in history] == [pytest.approx(3e-3), pytest.approx(1e-3)]
    assert "lr: 0.001" in (run / "config.yaml").read_text()
    groups = load_checkpoint(run / "last.pt").training["optimizer"]["param_groups"]
    assert {round(g["lr"], 8) for g in groups} == {1e-3, 1e-4}  # head at lr, encoder at lr * encoder_lr_scale


def test_resume_with_lr_rescales_the_cosine_schedule(synth_small, tmp_path, tiny_config):
    run = tmp_path / "run"
    fit(tiny_config(synth_small, run, epochs=1))
    before = load_checkpoint(run / "last.pt").training["scheduler"]["base_lrs"]
    resume(run, {"epochs": 2, "lr": 1e-3})
    after = load_checkpoint(run / "last.pt").training["scheduler"]["base_lrs"]
    assert after == pytest.approx([b / 3 for b in before])


def test_a_loss_far_above_its_first_value_is_a_warning(synth_small, tmp_path, tiny_config, caplog):
    caplog.set_level("WARNING", logger="edgecls.train")
    result = fit(tiny_config(synth_small, tmp_path / "run", epochs=1, strategy="freeze", optimizer="sgd", lr=1e4,
                             scheduler="constant"))
    assert result.stopped == "completed"  # a warning, not an error: the run goes on
    warned = [r.getMessage() for r in caplog.records if "over 100x its first value" in r.getMessage()]
    assert len(warned) == 1 and "try a lower --lr than 10000" in warned[0]

    caplog.clear()
    fit(tiny_config(synth_small, tmp_path / "calm", epochs=1))
    assert not [r for r in caplog.records if "its first value" in r.getMessage()]


def test_lr_must_be_finite_and_positive(synth_small, tmp_path, tiny_config):
    for lr in (0.0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="--lr must be a finite number above 0"):
            tiny_config(synth_small, tmp_path / "run", lr=lr)


def test_training_batches_are_full_and_loss_plot_gets_the_validation_loss(synth_small, tmp_path, tiny_config,
                                                                          monkeypatch):
    from edgecls.train import _report

    drawn = {}
    original = _report.plot_loss

    def recording_plot_loss(iterations, losses, path, **kwargs):
        drawn.update(kwargs, iterations=list(iterations), losses=list(losses))
        return original(iterations, losses, path, **kwargs)

    monkeypatch.setattr(_report, "plot_loss", recording_plot_loss)
    n_train = len(load_dataset(synth_small).split("train"))
    assert n_train % 16 != 0  # the last batch would be smaller than the others
    run = tmp_path / "run"
    fit(tiny_config(synth_small, run, epochs=2))
    per_epoch = n_train // 16  # the incomplete last batch is dropped
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [h["iteration"] for h in history] == [per_epoch, 2 * per_epoch]
    assert len(load_checkpoint(run / "last.pt").training["losses"]) == 2 * per_epoch
    assert drawn["iterations"] == list(range(1, 2 * per_epoch + 1))
    assert drawn["val_iterations"] == [per_epoch, 2 * per_epoch]
    assert drawn["val_losses"] == [h["val_loss"] for h in history]
    assert (run / "loss.png").is_file()

    # a train set of one batch or less keeps its only batch
    assert [loop_module._batches_per_epoch(n, 16) for n in (10, 16, 17, 42)] == [1, 1, 1, 2]


def test_label_file_with_na_missing_and_corrupt_images_trains(tmp_path, tiny_config, caplog):
    import cv2

    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(24):
        img = np.full((48, 48, 3), 40, np.uint8)
        labels = [int(rng.random() < 0.5) for _ in range(4)]
        for k, on in enumerate(labels):
            if on:
                cv2.circle(img, (8 + 10 * k, 24), 5, (60 * k, 255, 255 - 60 * k), -1)
        cv2.imwrite(str(images / f"image_{i}.jpg"), img)
        values = ["NA" if (i + k) % 11 == 0 else str(v) for k, v in enumerate(labels)]
        lines.append(f"image_{i}.jpg " + " ".join(values))
    (images / "image_24.jpg").write_bytes(b"not a jpeg")
    lines.append("image_24.jpg 1 0 0 1")
    lines.append("image_25.jpg 0 1 NA 0")  # missing file
    (tmp_path / "data" / "labels.txt").write_text("\n".join(lines) + "\n")

    ds = load_dataset(tmp_path / "data" / "labels.txt", classes=("a", "b", "c", "d"))
    assert {s.path.name for s in ds.skipped} == {"image_24.jpg", "image_25.jpg"}
    result = fit(tiny_config(tmp_path / "data" / "labels.txt", tmp_path / "run", classes="a,b,c,d", epochs=1))
    assert result.stopped == "completed"
    assert load_checkpoint(tmp_path / "run").class_names == ("a", "b", "c", "d")


@pytest.mark.slow
def test_two_process_ddp_on_cpu_with_gloo(synth_small, tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:  # a free port: a fixed one collides with another run of the suite on this machine
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    run = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", port,
        "-m", "edgecls.cli", "train", str(synth_small), "--out", str(run), "--backbone", "timm:test_efficientnet",
        "--no-pretrained", "--img-size", "64", "--epochs", "1", "--batch-size", "8", "--workers", "0",
        "--no-progress", "--no-amp", "--device", "cpu", "--strategy", "finetune",  # auto refuses torchrun
    ]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "best.pt").is_file() and (run / "report.json").is_file()
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1
    shutil.rmtree(run)


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_out_refuses_a_folder_that_is_not_a_run_unless_force(synth_small, tmp_path, tiny_config):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "config.yaml").write_text("mine: 1\n")
    (folder / "notes.txt").write_text("my only copy\n")
    cfg = tiny_config(synth_small, folder, epochs=1)
    with pytest.raises(ConfigError, match="is not an edgecls run folder.*pass --force"):
        fit(cfg)
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "notes.txt"]
    assert (folder / "config.yaml").read_text() == "mine: 1\n"

    fit(cfg, force=True)  # asked for: the run goes in beside the user's file
    assert (folder / "notes.txt").read_text() == "my only copy\n" and (folder / "best.pt").is_file()


def test_force_starts_a_run_over_and_leftovers_of_a_killed_run_are_removed(synth_small, tmp_path, tiny_config):
    run = tmp_path / "run"
    cfg = tiny_config(synth_small, run, epochs=1)
    fit(cfg)
    (run / "keep.txt").write_text("not the run's\n")
    pid = _dead_pid()
    stale = [run / f".last.pt.{pid}-abcd1234.tmp", run / ".best.pt.x1y2z3_w.tmp"]  # killed mid-write (new, old names)
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    alive = run / f".last.pt.{__import__('os').getpid()}-abcd1234.tmp"  # a running process's: kept
    alive.write_bytes(b"being written")
    foreign = run / ".notes.abcd1234.tmp"  # not one of the run's names: not ours to remove
    foreign.write_bytes(b"x")
    with pytest.raises(ConfigError, match="already holds a training run.*--resume .*--force"):
        fit(cfg)
    (run / "history.jsonl").write_text('{"epoch": 99}\n')  # proves the old history is not kept
    fit(cfg, force=True)
    assert not any(p.exists() for p in stale)
    assert alive.exists() and foreign.exists() and (run / "keep.txt").is_file()
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1]

    pid = _dead_pid()
    (run / f".history.jsonl.{pid}-q9w8e7r6.tmp").write_text("partial")
    resume(run, {"epochs": 2})
    assert not list(run.glob(f".history.jsonl.{pid}-*.tmp"))


def test_cli_train_out_names_the_flag(synth_small, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edgecls.cli import cli

    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"mine")
    args = ["train", str(synth_small), "--out", str(folder), "--backbone", "timm:test_efficientnet", "--no-pretrained",
            "--img-size", "64", "--epochs", "1", "--workers", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert "not an edgecls run folder" in result.output and "--force" in result.output
    assert "Traceback" not in result.output and [p.name for p in folder.iterdir()] == ["a.jpg"]
    result = CliRunner().invoke(cli, ["train", "--resume", str(folder), "--force"])
    assert result.exit_code == 1 and "give only one of them" in result.output


def test_a_run_stopped_before_its_first_epoch_needs_force(synth_small, tmp_path, tiny_config):
    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "config.yaml").write_text("data: x\n")
    with pytest.raises(ConfigError, match="stopped before its first epoch .*--force"):
        fit(tiny_config(synth_small, run, epochs=1))
    assert (run / "config.yaml").read_text() == "data: x\n"


def _skewed_label_file(root, n=30):
    """A label file whose classes are 80% / 50% / 10% / 0% positive, with NA entries only on negatives of class a."""
    import cv2

    images = root / "images"
    images.mkdir(parents=True)
    lines = []
    for i in range(n):
        img = np.full((48, 48, 3), 30 + 5 * i, np.uint8)
        cv2.imwrite(str(images / f"image_{i}.jpg"), img)
        a = "1" if i % 5 else ("NA" if i % 10 == 0 else "0")  # 24 positives, 3 negatives, 3 NA
        values = [a, str(int(i % 2 == 0)), str(int(i % 10 == 3)), "0"]
        lines.append(f"image_{i}.jpg " + " ".join(values))
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    return root / "labels.txt"


def test_head_bias_starts_at_the_logit_of_each_class_frequency(tmp_path, tiny_config):
    from edgecls.data import label_priors
    from edgecls.train.backbones import PRIOR_CLIP

    labels = _skewed_label_file(tmp_path / "data")
    train = load_dataset(labels, classes=("a", "b", "c", "d")).split("train")
    priors = label_priors(train)
    known_a = train.known()[:, 0]
    assert 0 < (~known_a).sum() and priors[0] == pytest.approx(train.targets()[known_a, 0].mean())  # NA excluded
    assert priors[0] > 0.8 and priors[3] == 0.0
    # an lr so small that one epoch leaves the head where it started
    fit(tiny_config(labels, tmp_path / "run", classes="a,b,c,d", epochs=1, lr=1e-9, dropout=0.0))
    bias = load_checkpoint(tmp_path / "run").state_dict["head.1.bias"].double().numpy()
    p = np.clip(priors, *PRIOR_CLIP)
    np.testing.assert_allclose(bias, np.log(p / (1 - p)), atol=1e-4)
    assert bias[3] == pytest.approx(np.log(0.01 / 0.99), abs=1e-4)  # clipped, not -inf


def _head_weights(path):
    return {k: v for k, v in load_checkpoint(path).state_dict.items() if k.startswith("head.")}


def test_auto_trains_a_cached_head_then_finetunes_from_it_and_keeps_the_better(synth_small, tmp_path, tiny_config,
                                                                               caplog):
    caplog.set_level("INFO", logger="edgecls.train")
    run = tmp_path / "run"
    result = fit(tiny_config(synth_small, run, strategy="auto", epochs=2, head_epochs=8))
    assert (run / "head" / "best.pt").is_file() and (run / "head" / "report.md").is_file()
    head = load_checkpoint(run / "head")
    assert head.config["strategy"] == "freeze" and head.config["cache_features"] is True
    a = result.auto
    assert a is not None and a["winner"] in ("head", "finetune")
    assert a["margin"] == pytest.approx(a["finetune_val_map"] - a["head_val_map"])
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert a["finetune_val_map"] == max(h["val_map"] for h in history)
    assert result.best_map == max(a["head_val_map"], a["finetune_val_map"])
    assert "strategy: auto" in (run / "config.yaml").read_text()
    report = (run / "report.md").read_text()
    assert f"**auto_winner**: {a['winner']}" in report and "**auto_margin**" in report
    assert "**labels_per_image_truth**" in report and "**labels_per_image_tuned**" in report
    assert any(m.startswith("auto: ") and "won" in m for m in caplog.messages)
    ckpt = load_checkpoint(run)
    if a["winner"] == "head":
        assert result.best_epoch == 0
        assert all(torch.equal(v, ckpt.state_dict[k]) for k, v in _head_weights(run / "head").items())
    else:
        assert result.best_epoch >= 1 and a["finetune_val_map"] > a["head_val_map"]
    # its fine-tuning phase resumes (the head phase is not run again)
    extended = resume(run, {"epochs": 3})
    assert extended.epochs_run >= 2 and extended.auto is not None
    assert extended.auto["head_val_map"] == pytest.approx(a["head_val_map"])


def test_auto_keeps_the_head_when_finetuning_does_not_beat_it(synth_small, tmp_path, tiny_config, caplog,
                                                                monkeypatch):
    caplog.set_level("INFO", logger="edgecls.train")
    original = loop_module._Run._validate

    def finetuning_that_hurts(self, epoch):  # fault injection: the fine-tuned weights rank every label backwards
        logits, loss = original(self, epoch)
        if self.head_run is not None:
            logits = (5.0 * (1.0 - 2.0 * self.val_split.targets())).astype(np.float32)
        return logits, loss

    monkeypatch.setattr(loop_module._Run, "_validate", finetuning_that_hurts)
    run = tmp_path / "run"
    result = fit(tiny_config(synth_small, run, strategy="auto", epochs=6, head_epochs=8, cooldown_epochs=2))
    assert result.auto["winner"] == "head" and result.best_epoch == 0 and result.auto["margin"] < 0
    # patience 3 after its own best (epoch 1), and no cool-down: fine-tuning never beat the head
    assert result.stopped == "early_stop" and result.epochs_run == 4
    ckpt = load_checkpoint(run)
    assert all(torch.equal(v, ckpt.state_dict[k]) for k, v in _head_weights(run / "head").items())
    assert result.best_map == pytest.approx(result.auto["head_val_map"])
    assert ckpt.thresholds is not None and "**auto_winner**: head" in (run / "report.md").read_text()
    assert any("the cached-feature head won" in m for m in caplog.messages)
    assert any("early stopping: val mAP has not improved for 3 epochs" in m for m in caplog.messages)


def test_ema_decay_warms_up_as_timm_model_ema_v3_and_is_capped():
    from torch.optim.swa_utils import AveragedModel

    from edgecls.train.loop import _warmup_ema, ema_decay_at

    assert ema_decay_at(1, 0.999) == pytest.approx(1 - 2 ** -0.75)
    assert ema_decay_at(200, 0.999) == pytest.approx(1 - 201 ** -0.75)  # ~0.981: 15 aquarium epochs average ~4
    assert ema_decay_at(10**6, 0.999) == 0.999  # a long run reaches the ceiling
    net = torch.nn.Linear(3, 2)
    ema = AveragedModel(net, multi_avg_fn=_warmup_ema(0.999), use_buffers=True)
    expected = None
    for step in range(6):
        with torch.no_grad():
            net.weight.add_(float(step + 1))
        ema.update_parameters(net)
        if expected is None:
            expected = net.weight.detach().clone()  # the first update copies
        else:
            d = ema_decay_at(step, 0.999)
            expected = d * expected + (1 - d) * net.weight.detach()
    torch.testing.assert_close(ema.module.weight, expected)


def test_ema_weights_are_what_best_pt_holds_and_what_was_evaluated(synth_small, tmp_path, tiny_config):
    run = tmp_path / "run"
    result = fit(tiny_config(synth_small, run, epochs=1, ema=True, lr=3e-2))
    last = load_checkpoint(run / "last.pt")
    best = load_checkpoint(run)
    ema = last.training["ema"]
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert int(ema["n_averaged"]) == history[-1]["iteration"]  # one average per optimizer step
    averaged = {k[len("module."):]: v for k, v in ema.items() if k.startswith("module.")}
    assert set(averaged) == set(best.state_dict)
    floats = [k for k, v in best.state_dict.items() if v.is_floating_point()]
    assert all(torch.equal(best.state_dict[k], averaged[k]) for k in floats)  # best.pt = the EMA, not the raw
    assert any(not torch.equal(best.state_dict[k], last.state_dict[k]) for k in floats)
    # export's loading path (strict keys and shapes) takes it; evaluate reproduces the run's (EMA) validation mAP
    best.build_model()
    assert evaluate(run, synth_small, split="valid", workers=0).tuned.map == pytest.approx(result.best_map, abs=1e-6)
    # a run saved before ema_warmup existed (its config has no such key) still resumes
    config = (run / "config.yaml").read_text()
    assert "ema_warmup: true" in config
    (run / "config.yaml").write_text(config.replace("ema_warmup: true\n", ""))
    assert resume(run, {"epochs": 2}).epochs_run == 2


def test_patience_then_a_cool_down_with_the_lr_falling_to_zero_and_its_resume(synth_small, tmp_path, tiny_config,
                                                                             monkeypatch, caplog):
    caplog.set_level("INFO", logger="edgecls.train")
    validate, step = loop_module._Run._validate, loop_module._Run._optimizer_step
    lrs: dict[str, list[float]] = {}

    def worse_after_the_first_epoch(self, epoch):  # fault injection: val mAP falls, so patience runs out
        logits, loss = validate(self, epoch)
        sign = 1.0 if epoch == 0 else -1.0
        return (sign * 5.0 * (2.0 * self.val_split.targets() - 1.0)).astype(np.float32), loss

    def recording_step(self):  # records the lr each optimizer step is taken with
        lrs.setdefault(self.run_dir.name, []).append(self.optimizer.param_groups[0]["lr"])
        step(self)

    monkeypatch.setattr(loop_module._Run, "_validate", worse_after_the_first_epoch)
    monkeypatch.setattr(loop_module._Run, "_optimizer_step", recording_step)
    result = fit(tiny_config(synth_small, tmp_path / "run", epochs=10, patience=1, cooldown_epochs=2))
    # epoch 2 is the first without progress: patience 1 runs out there, epochs 3-4 cool down, then it stops
    assert result.stopped == "early_stop" and result.epochs_run == 4 and result.best_epoch == 1
    per_epoch = len(lrs["run"]) // 4
    cooling = np.array(lrs["run"][2 * per_epoch:])
    start = lrs["run"][2 * per_epoch - 1]  # the cosine's lr at the last step before the cool-down began ...
    assert cooling[0] == pytest.approx(start, rel=0.05)  # ... whose next value is where the cool-down starts
    assert np.allclose(cooling, cooling[0] * (1 - np.arange(2 * per_epoch) / (2 * per_epoch)))
    assert any("1 epochs: 2 more with the learning rate falling to 0" in m for m in caplog.messages)
    assert any("the 2-epoch cool-down is done" in m for m in caplog.messages)
    history = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert history[-1]["lr"] == pytest.approx(cooling[-1])

    # interrupted in the cool-down's second epoch, resumed: the same steps at the same lrs
    train_epoch = loop_module._Run._train_epoch
    interrupted = []

    def interrupt_in_fourth_epoch(self, epoch):
        if epoch == 3 and not interrupted:
            interrupted.append(epoch)
            raise KeyboardInterrupt
        return train_epoch(self, epoch)

    monkeypatch.setattr(loop_module._Run, "_train_epoch", interrupt_in_fourth_epoch)
    part = fit(tiny_config(synth_small, tmp_path / "part", epochs=10, patience=1, cooldown_epochs=2))
    assert part.stopped == "interrupted" and part.epochs_run == 3
    resumed = resume(tmp_path / "part")
    assert resumed.stopped == "early_stop" and resumed.epochs_run == 4
    assert np.allclose(lrs["part"], lrs["run"])
    # a cool-down needs the schedule's room: one epoch left, one epoch of cool-down
    short = fit(tiny_config(synth_small, tmp_path / "short", epochs=3, patience=1, cooldown_epochs=5))
    assert short.epochs_run == 3 and short.stopped == "early_stop"


def test_cpu_training_loads_its_data_in_the_training_process_unless_told(synth_small, tmp_path, tiny_config):
    from edgecls.train._device import default_workers

    # a forked loader worker would turn every page the training step writes into a copy-on-write fault, each epoch
    fit(tiny_config(synth_small, tmp_path / "run", epochs=1, workers=None))
    assert "workers: 0\n" in (tmp_path / "run" / "config.yaml").read_text()
    fit(tiny_config(synth_small, tmp_path / "told", epochs=1, workers=1))
    assert "workers: 1\n" in (tmp_path / "told" / "config.yaml").read_text()
    assert default_workers(torch.device("cuda")) == min(4, max(1, (os.cpu_count() or 2) // 2))


def test_a_run_is_the_same_whichever_number_of_workers_loads_it(synth_small, tmp_path, tiny_config):
    # augmented crops, flips and colours are seeded per image, not by the process that loads them
    runs = {}
    for workers in (0, 2):
        fit(tiny_config(synth_small, tmp_path / f"w{workers}", epochs=2, workers=workers, augment="strong"))
        history = [json.loads(line) for line in (tmp_path / f"w{workers}" / "history.jsonl").read_text().splitlines()]
        runs[workers] = ([(r["train_loss"], r["val_map"]) for r in history],
                         load_checkpoint(tmp_path / f"w{workers}" / "last.pt").state_dict)
    assert runs[0][0] == runs[2][0]
    assert all(torch.equal(v, runs[2][1][k]) for k, v in runs[0][1].items())


_FAULTS = """
import resource, sys, torch
from edgecls.train._device import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
for _ in range(5):  # warm up (torch's and the thread pool's first allocations, the heap's growth)
    torch.empty(16 << 20).fill_(1.0)  # 64 MB: above glibc's largest mmap threshold
faults = []
for _ in range(20):  # page faults of each reallocation; the median is the steady state
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 << 20).fill_(1.0)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sorted(faults)[len(faults) // 2])
"""


def test_keep_freed_memory_stops_the_page_faults_of_reallocating_large_tensors():
    import subprocess
    import sys

    from edgecls.train._device import KEEP_FREED_MEMORY_ENV

    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
                             env={**os.environ, KEEP_FREED_MEMORY_ENV: "1"})
        applied, count = out.stdout.split()
        return applied, int(count)

    applied, kept = faults("keep")
    if applied != "True":
        pytest.skip("this libc is not glibc: keep_freed_memory does nothing here")
    _, default = faults("default")
    pages = (64 << 20) // 4096  # a reallocation zero-filled again by the kernel
    assert default > pages // 2, default
    assert kept < default // 20, (kept, default)

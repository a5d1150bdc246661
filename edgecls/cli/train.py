"""`edgecls train`, `edgecls evaluate` and `edgecls backbones`: thin commands over :mod:`edgecls.train`."""

from __future__ import annotations

import sys
from typing import Any

import click

from edgecls.cli.errors import user_errors
from edgecls.cli.options import ConfigCommand, options_from
from edgecls.cli.options import given as given_flags


def _require_train() -> None:
    """Fail in one line, naming the extra, when the training stack is not installed (a runtime-only install)."""
    from edgecls._deps import require

    require("torch", extra="train")


def _train_options() -> list[click.Option]:
    from edgecls.train.config import TrainConfig

    return options_from(TrainConfig)


@click.command(cls=ConfigCommand, options=_train_options, last=True)
@click.argument("data", required=False)
@click.option("--out", "-o", help="run directory to create (checkpoints, report, plots)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file; keys mirror these flags")
@click.option("--resume", type=click.Path(file_okay=False),
              help="continue the run in this folder; only --epochs, --patience, --lr and --workers/--device/--progress "
                   "may change")
@click.option("--force", is_flag=True, help="start over in an --out that holds an earlier run (its files are removed) "
              "or other files")
@user_errors
def train(data: str | None, out: str | None, config_path: str | None, resume: str | None, force: bool,
          **flags: Any) -> None:
    """Fine-tune a backbone on DATA (label file, folder, YOLO data.yaml or COCO json).

    --out must be a new or empty folder; an earlier run there needs --resume (continue it) or --force (start over)."""
    from edgecls.config import build_config, load_yaml
    from edgecls.errors import ConfigError

    _require_train()
    from edgecls.train import format_report
    from edgecls.train.config import TrainConfig
    from edgecls.train.loop import fit
    from edgecls.train.loop import resume as resume_run

    given = given_flags(flags)
    if resume:
        if data or out or config_path:
            raise ConfigError("--resume takes the data, output and settings of the run; drop DATA, --out and --config")
        if force:
            raise ConfigError("--resume continues the run and --force starts it over; give only one of them")
        result = resume_run(resume, given)
    else:
        if data is not None:
            given["data"] = data
        if out is not None:
            given["out"] = out
        in_yaml = {str(k).replace("-", "_") for k in load_yaml(config_path)} if config_path else set()
        needed = (("data", "DATA"), ("out", "--out"))
        missing = [name for key, name in needed if key not in given and key not in in_yaml]
        if missing:
            raise ConfigError(
                f"train needs {' and '.join(missing)}: edgecls train DATA --out RUN_DIR (or `data:` and `out:` in "
                "--config), or edgecls train --resume RUN_DIR to continue a run"
            )
        cfg = build_config(TrainConfig, yaml_path=config_path, overrides=given)
        result = fit(cfg, force=force)
    if result.stopped == "interrupted":
        sys.exit(130)
    if result.report is not None and result.report_at_half is not None:
        click.echo(format_report(result.report_at_half, result.report, split="valid"))
    if result.auto is not None:
        a = result.auto
        kept = ("fine-tuning" if a["winner"] == "finetune" else "the cached-feature head")
        click.echo(f"auto: kept {kept}: head val mAP {a['head_val_map']:.4f} ({a['head_seconds']:.0f} s), fine-tuning "
                   f"{a['finetune_val_map']:.4f} ({a['finetune_epochs']} epochs, {a['finetune_seconds']:.0f} s), "
                   f"{a['margin']:+.4f}")
    click.echo(
        f"best epoch {result.best_epoch} of {result.epochs_run} ({result.stopped}), val mAP {result.best_map:.4f}, "
        f"{result.seconds / 60:.1f} min"
    )
    click.echo(f"checkpoint: {result.best_checkpoint}")
    click.echo(f"report:     {result.run_dir / 'report.md'}")


@click.command()
@click.argument("checkpoint")
@click.argument("data")
@click.option("--split", default="test", show_default=True, help="train, valid or test")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@user_errors
def evaluate(checkpoint: str, data: str, split: str, batch_size: int, device: str, as_json: bool) -> None:
    """Report mAP, F1, Hamming loss, subset accuracy and per-class metrics of CHECKPOINT (file or run folder)
    on a split of DATA, at 0.5 and at the checkpoint's tuned thresholds."""
    _require_train()
    from edgecls._io import to_json
    from edgecls.train import format_report
    from edgecls.train.evaluate import evaluate as run_eval

    result = run_eval(checkpoint, data, split=split, batch_size=batch_size, device=device)
    if as_json:
        data = {"split": result.split, "at_0.5": result.at_half.to_dict(), "tuned": result.tuned.to_dict()}
        click.echo(to_json(data), nl=False)
    else:
        click.echo(format_report(result.at_half, result.tuned, split=result.split))


@click.command()
@user_errors
def backbones() -> None:
    """List the backbones `--backbone` accepts."""
    _require_train()
    from edgecls.train.backbones import backbone_info, list_backbones

    for name in list_backbones():
        info = backbone_info(name)
        click.echo(f"{name:22s} {info.source:12s} {info.default_img_size:4d}px  {info.description}")
    click.echo("timm:<arch>            timm         any timm model name, e.g. timm:convnext_nano")


def register(group: click.Group) -> None:
    """Add the training commands (train, evaluate, backbones) to ``group``."""
    for command in (train, evaluate, backbones):
        group.add_command(command)

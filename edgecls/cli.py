"""The `edgecls` command line: parse, build a config, call one library function, print.

This is the only module that knows about click. Library errors (:class:`EdgeclsError`) become one-line
messages here; heavy modules are imported inside the commands so `edgecls --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import sys
import typing
from typing import Any, Callable

import click

from edgecls import __version__
from edgecls._cli_errors import user_errors
from edgecls.config import _unwrap_optional

log = logging.getLogger("edgecls")


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if verbose == 0 else "%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("edgecls")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def options_from(cls: type, *, exclude: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One click option per dataclass field (``--encoder-lr-scale`` for ``encoder_lr_scale``), default None so
    that only flags the user gave override the YAML file and the dataclass defaults."""
    hints = typing.get_type_hints(cls)

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        for fld in reversed(dataclasses.fields(cls)):
            if not fld.metadata.get("flag", True) or fld.name in exclude:
                continue
            tp, _ = _unwrap_optional(hints[fld.name])
            flag = "--" + fld.name.replace("_", "-")
            default = fld.default.value if isinstance(fld.default, enum.Enum) else fld.default
            text = fld.metadata.get("help", "")
            if tp is bool:
                func = click.option(f"{flag}/--no-{flag[2:]}", fld.name, default=None,
                                    help=f"{text} [default: {'yes' if default else 'no'}]")(func)
                continue
            if isinstance(tp, type) and issubclass(tp, enum.Enum):
                kind: Any = click.Choice([m.value for m in tp], case_sensitive=False)
            elif tp in (int, float):
                kind = tp
            else:
                kind = str
            shown = ",".join(default) if isinstance(default, tuple) else default
            func = click.option(flag, fld.name, type=kind, default=None,
                                help=f"{text} [default: {shown}]" if shown is not None else text)(func)
        return func

    return decorator


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="edgecls")
@click.option("-v", "--verbose", count=True, help="more log output")
def cli(verbose: int) -> None:
    """Multi-label image classifiers from fine-tuning to INT8 edge deployment."""
    _setup_logging(verbose)


# ------------------------------------------------------------------------------------------------------------------
# training


def _require_train() -> None:
    """Fail in one line, naming the extra, when the training stack is not installed (a runtime-only install)."""
    from edgecls._deps import require

    require("torch", extra="train")


def _train_options(func: Callable[..., Any]) -> Callable[..., Any]:
    from edgecls.train.config import TrainConfig

    return options_from(TrainConfig)(func)


@cli.command()
@click.argument("data", required=False)
@click.option("--out", "-o", help="run directory to create (checkpoints, report, plots)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file; keys mirror these flags")
@click.option("--resume", type=click.Path(file_okay=False),
              help="continue the run in this folder; only --epochs, --patience, --lr and --workers/--device/--progress "
                   "may change")
@click.option("--force", is_flag=True, help="start over in an --out that holds an earlier run (its files are removed) "
              "or other files")
@_train_options
@user_errors
def train(data: str | None, out: str | None, config_path: str | None, resume: str | None, force: bool,
          **flags: Any) -> None:
    """Fine-tune a backbone on DATA (label file, folder, YOLO data.yaml or COCO json).

    --out must be a new or empty folder; an earlier run there needs --resume (continue it) or --force (start over)."""
    from edgecls.config import build_config, load_yaml
    from edgecls.errors import ConfigError

    _require_train()
    from edgecls.train._report import format_report
    from edgecls.train.config import TrainConfig
    from edgecls.train.loop import fit
    from edgecls.train.loop import resume as resume_run

    given = {k: v for k, v in flags.items() if v is not None}
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
    click.echo(
        f"best epoch {result.best_epoch} of {result.epochs_run} ({result.stopped}), val mAP {result.best_map:.4f}, "
        f"{result.seconds / 60:.1f} min"
    )
    click.echo(f"checkpoint: {result.best_checkpoint}")
    click.echo(f"report:     {result.run_dir / 'report.md'}")


@cli.command()
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
    from edgecls.train._report import format_report
    from edgecls.train.evaluate import evaluate as run_eval

    result = run_eval(checkpoint, data, split=split, batch_size=batch_size, device=device)
    if as_json:
        data = {"split": result.split, "at_0.5": result.at_half.to_dict(), "tuned": result.tuned.to_dict()}
        click.echo(to_json(data), nl=False)
    else:
        click.echo(format_report(result.at_half, result.tuned, split=result.split))


@cli.command()
@user_errors
def backbones() -> None:
    """List the backbones `--backbone` accepts."""
    _require_train()
    from edgecls.train.backbones import backbone_info, list_backbones

    for name in list_backbones():
        info = backbone_info(name)
        click.echo(f"{name:22s} {info.source:12s} {info.default_img_size:4d}px  {info.description}")
    click.echo("timm:<arch>            timm         any timm model name, e.g. timm:convnext_nano")


# ------------------------------------------------------------------------------------------------------------------
# data


@cli.group()
def data() -> None:
    """Inspect datasets and generate the embedded synthetic one."""


@data.command("inspect")
@click.argument("path")
@click.option("--classes", help="class names for label files without a header (a,b,c)")
@click.option("--json", "as_json", is_flag=True, help="print the statistics as JSON")
@user_errors
def data_inspect(path: str, classes: str | None, as_json: bool) -> None:
    """Per-class counts, label cardinality, co-occurrence, suggested pos_weight and problems of PATH."""
    from edgecls._io import to_json
    from edgecls.data import format_stats, inspect_dataset, load_dataset

    names = tuple(c.strip() for c in classes.split(",")) if classes else None
    stats = inspect_dataset(load_dataset(path, classes=names))
    if as_json:
        click.echo(to_json(dataclasses.asdict(stats)), nl=False)
    else:
        click.echo(format_stats(stats))


@data.command("synth")
@click.argument("out")
@click.option("--n", default=600, show_default=True, type=int, help="number of images")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--img-size", default=192, show_default=True, type=int)
@click.option("--force", is_flag=True, help="replace an existing folder that this command made (nothing else)")
@user_errors
def data_synth(out: str, n: int, seed: int, img_size: int, force: bool) -> None:
    """Generate the embedded multi-label scene dataset (shapes on textured backgrounds) into OUT."""
    from edgecls.synth import generate_synthetic

    labels = generate_synthetic(out, n=n, seed=seed, img_size=img_size, overwrite=force)
    click.echo(f"wrote {n} images and {labels}")




def _register_commands() -> None:
    """Commands of the runtime (predict, run, doctor), the exporter (export, parity) and the benchmark (bench) live
    beside their packages."""
    from edgecls import _cli_bench, _cli_export, _cli_runtime

    _cli_runtime.register(cli)
    _cli_export.register(cli)
    _cli_bench.register(cli)


_register_commands()


def main() -> None:
    cli(prog_name="edgecls")


if __name__ == "__main__":  # pragma: no cover
    main()

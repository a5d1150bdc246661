"""`edgecls export` and `edgecls parity`: parse, build the config, call the library, print the report.

``register(cli)`` adds both commands to the main click group (kept here so `edgecls/cli.py` stays short).
"""

from __future__ import annotations

from typing import Any

import click

from edgecls._cli_errors import user_errors

_TARGET_HELP = ("onnx, onnx-int8, openvino, openvino-int8, coreml, coreml-int8, tensorrt, tensorrt-int8, or all "
                "(every target this machine can produce); repeat for several")


def _options(func: Any) -> Any:
    opts = [
        click.option("--target", "-t", "targets", multiple=True, required=True, help=_TARGET_HELP),
        click.option("--data", required=True, help="dataset of the checkpoint: calibration and parity images"),
        click.option("--out", "-o", required=True, help="bundle folder to create"),
        click.option("--calib-split", help="split of the INT8 calibration images [default: train]"),
        click.option("--calib-size", type=int, help="calibration images [default: 300]"),
        click.option("--opset", type=int, help="ONNX opset, >= 17 [default: 18]"),
        click.option("--max-batch", type=int, help="largest batch of TensorRT/CoreML [default: 32]"),
        click.option("--max-map-drop", type=float,
                     help="INT8 budget (absolute mAP drop); setting it also makes openvino-int8 accuracy-aware "
                          "[default: 0.01, plain quantization]"),
        click.option("--fp32-tolerance", type=float, help="FP32 budget: max |delta p| [default: 1e-4]"),
        click.option("--fp16-min-agreement", type=float,
                     help="FP16/BF16 budget: share of decisions agreeing with PyTorch's [default: 0.99]"),
        click.option("--fp16-max-map-drop", type=float, help="FP16/BF16 budget: absolute mAP drop [default: 0.01]"),
        click.option("--fp16-tolerance", type=float,
                     help="FP16/BF16 extra budget on max |delta p| (always reported) [default: none]"),
        click.option("--parity-split", help="split the parity check runs on [default: valid]"),
        click.option("--seed", type=int, help="seed of the calibration sample [default: 0]"),
        click.option("--openvino-precision", type=click.Choice(["f32", "bf16", "f16"]),
                     help="OpenVINO inference precision hint the IRs are checked with [default: f32]"),
        click.option("--allow-parity-failure", is_flag=True, default=None, help="write the bundle even if a budget "
                     "breaks"),
        click.option("--force", is_flag=True, default=None, help="replace an existing bundle"),
        click.option("--require-engine", is_flag=True, default=None,
                     help="fail unless TensorRT engines can be built here"),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def register(cli: click.Group) -> None:
    """Add the `export` and `parity` commands to ``cli``."""

    @cli.command("export")
    @click.argument("checkpoint")
    @_options
    @user_errors
    def export_cmd(checkpoint: str, **flags: Any) -> None:
        """Export CHECKPOINT (file or run folder) to deployable artifacts with proven parity, as one bundle."""
        from edgecls.export import ExportConfig, export

        given = {k: v for k, v in flags.items() if v is not None}
        result = export(ExportConfig(checkpoint=checkpoint, **given))
        click.echo(result.table)
        for note in result.notes:
            click.echo(f"note: {note}")
        verdict = "all artifacts within budget" if result.passed else "SOME ARTIFACTS BROKE THEIR BUDGET (allowed)"
        click.echo(f"bundle: {result.bundle} ({verdict})")

    @cli.command("parity")
    @click.argument("bundle")
    @click.argument("data")
    @click.option("--artifact", "-a", "artifacts", multiple=True, help="check only these artifacts (repeatable)")
    @click.option("--no-write", is_flag=True, help="print the report without updating parity.json")
    @click.option("--verify/--no-verify", default=True, show_default=True,
                  help="check the model files against the sha256 in the bundle's manifest before running them")
    @user_errors
    def parity_cmd(bundle: str, data: str, artifacts: tuple[str, ...], no_write: bool, verify: bool) -> None:
        """Re-run the parity check of BUNDLE on this machine with the images of DATA; updates parity.json."""
        from edgecls.export import check_bundle

        result = check_bundle(bundle, data, artifacts=artifacts or None, write=not no_write, verify=verify)
        click.echo(result.table)
        if not result.passed:
            raise click.ClickException("some artifacts broke their parity budget (see the table above)")
        if not result.reports:
            click.echo("no artifact of this bundle can run on this machine")

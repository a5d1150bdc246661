"""`edgecls export` and `edgecls parity`: parse, build the :class:`edgecls.export.ExportConfig`, call the library,
print the report."""

from __future__ import annotations

from typing import Any

import click

from edgecls.cli.errors import user_errors
from edgecls.cli.options import ConfigCommand, given, options_from


def target_help() -> str:
    """`--target`'s help: the names of the export target registry."""
    from edgecls.export.targets import ALL, list_targets

    names = ", ".join(t.name for t in list_targets())
    return f"{names}, or {ALL} (every target this machine can produce); repeat for several"


def _export_options() -> list[click.Option]:
    from edgecls.export import ExportConfig

    return options_from(ExportConfig, exclude=("checkpoint",), helps={"targets": target_help()})


@click.command("export", cls=ConfigCommand, options=_export_options)
@click.argument("checkpoint")
@user_errors
def export_cmd(checkpoint: str, **flags: Any) -> None:
    """Export CHECKPOINT (file or run folder) to deployable artifacts with proven parity, as one bundle."""
    from edgecls.config import build_config
    from edgecls.export import ExportConfig, export

    result = export(build_config(ExportConfig, overrides={"checkpoint": checkpoint, **given(flags)}))
    click.echo(result.table)
    for note in result.notes:
        click.echo(f"note: {note}")
    verdict = "all artifacts within budget" if result.passed else "SOME ARTIFACTS BROKE THEIR BUDGET (allowed)"
    click.echo(f"bundle: {result.bundle} ({verdict})")


@click.command("parity")
@click.argument("bundle")
@click.argument("data")
@click.option("--artifact", "-a", "artifacts", multiple=True, help="check only these artifacts (repeatable)")
@click.option("--no-write", is_flag=True, help="print the report without updating parity.json")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="check the model files against the sha256 in the bundle's manifest before running them")
@click.option("--logits", "logits_out", type=click.Path(dir_okay=False),
              help="also write each measured artifact's logits here (.npz), to compare two machines")
@user_errors
def parity_cmd(bundle: str, data: str, artifacts: tuple[str, ...], no_write: bool, verify: bool,
               logits_out: str | None) -> None:
    """Re-run the parity check of BUNDLE on this machine with the images of DATA; updates parity.json."""
    from edgecls.export import check_bundle

    result = check_bundle(bundle, data, artifacts=artifacts or None, write=not no_write, verify=verify)
    click.echo(result.table)
    if logits_out:
        click.echo(f"logits: {result.save_logits(logits_out)}")
    if result.note:
        click.echo(f"note: {result.note}")
    if not result.passed:
        raise click.ClickException("some artifacts broke their parity budget (see the table above)")
    if not result.reports:
        click.echo("no artifact of this bundle can run on this machine")


def register(group: click.Group) -> None:
    """Add the `export` and `parity` commands to ``group``."""
    group.add_command(export_cmd)
    group.add_command(parity_cmd)

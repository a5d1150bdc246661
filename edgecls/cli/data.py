"""`edgecls data inspect` and `edgecls data synth`: thin commands over :mod:`edgecls.data` and :mod:`edgecls.synth`."""

from __future__ import annotations

import dataclasses

import click

from edgecls.cli.errors import user_errors


@click.group()
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


def register(group: click.Group) -> None:
    """Add the `data` command group to ``group``."""
    group.add_command(data)

"""The `edgecls` click group: logging set-up, the commands of every group, and :func:`main`."""

from __future__ import annotations

import logging
import sys

import click

from edgecls import __version__
from edgecls.cli import bench, data, export, runtime, serve, train


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if verbose == 0 else "%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("edgecls")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="edgecls")
@click.option("-v", "--verbose", count=True, help="more log output")
def cli(verbose: int) -> None:
    """Multi-label image classifiers from fine-tuning to INT8 edge deployment."""
    _setup_logging(verbose)


for _group in (train, data, runtime, export, bench, serve):
    _group.register(cli)


def main() -> None:
    cli(prog_name="edgecls")

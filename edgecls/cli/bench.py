"""`edgecls bench`: parse, build a :class:`edgecls.bench.BenchConfig`, call :func:`edgecls.bench.run`, print."""

from __future__ import annotations

from typing import Any

import click

from edgecls.cli.errors import user_errors
from edgecls.cli.options import ConfigCommand, given, options_from


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _batches(value: str) -> tuple[int, ...]:
    from edgecls.errors import ConfigError

    try:
        return tuple(int(v) for v in _csv(value))
    except ValueError:
        raise ConfigError(f"--batch takes comma-separated batch sizes such as 1,8,32, got {value!r}") from None


def backends_help() -> str:
    """`--backends`' help: the runtime's backend registry, and pytorch."""
    from edgecls.bench import PYTORCH
    from edgecls.runtime.backends import BACKEND_NAMES

    return f"comma-separated: {', '.join((*BACKEND_NAMES, PYTORCH))}"


def _bench_options() -> list[click.Option]:
    from edgecls.bench import BenchConfig

    return options_from(BenchConfig, exclude=("bundle",), helps={"backends": backends_help()})


@click.command(cls=ConfigCommand, options=_bench_options)
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML file of BenchConfig fields (keys mirror these flags); the flags given override it")
@click.option("--in-process", is_flag=True, help="run every row in this process (no per-row peak RSS)")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="write every figure as JSON here")
@click.option("--md", "md_out", type=click.Path(dir_okay=False), help="write the Markdown table here")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), help="write a latency bar chart (PNG) here")
@click.option("--baseline", type=click.Path(dir_okay=False),
              help="a stored `bench --json` file: compare every row with it, exit 1 when they differ beyond noise")
@click.option("--tolerance", type=float, default=0.25, show_default=True,
              help="with --baseline: relative change of a row's time that still counts as noise")
@click.option("--map-tolerance", type=float, default=0.002, show_default=True,
              help="with --baseline: |mAP change| of a row that still counts as the same accuracy")
@user_errors
def bench(bundle: str, config_path: str | None, in_process: bool, json_out: str | None, md_out: str | None,
          plot_out: str | None, baseline: str | None, tolerance: float, map_tolerance: float, **flags: Any) -> None:
    """Time and score every artifact of BUNDLE on every backend here, beside PyTorch, in one table."""
    from edgecls._io import atomic_write_text, to_json
    from edgecls.bench import BenchConfig, check_tolerances, compare, load_baseline, run
    from edgecls.config import build_config

    values = given(flags)
    if "batch" in values:
        values["batch"] = _batches(values["batch"])
    if "torch_variants" in values and values["torch_variants"].strip().lower() == "none":
        values["torch_variants"] = ()
    if in_process:
        values["isolate"] = False
    cfg = build_config(BenchConfig, yaml_path=config_path, overrides={"bundle": bundle, **values})
    stored = None
    if baseline:  # a bad file or tolerance fails before the measuring starts
        check_tolerances(tolerance, map_tolerance)
        stored = load_baseline(baseline)
    result = run(cfg)
    click.echo(result.table())
    written: list[Any] = []
    if json_out:
        written.append(atomic_write_text(json_out, to_json(result.to_dict())))
    if md_out:
        written.append(atomic_write_text(md_out, result.markdown()))
    if plot_out:
        written.append(result.plot(plot_out))
    for path in written:
        click.echo(f"wrote {path}")
    if stored is not None:
        comparison = compare(result.to_dict(), stored, baseline=baseline, tolerance=tolerance,
                             map_tolerance=map_tolerance)
        click.echo("\n" + comparison.table())
        if not comparison.passed:
            raise SystemExit(1)


def register(group: click.Group) -> None:
    """Add the `bench` command to ``group``."""
    group.add_command(bench)

"""`edgecls bench`: parse, build a :class:`edgecls.bench.BenchConfig`, call :func:`edgecls.bench.run`, print."""

from __future__ import annotations

from typing import Any

import click

from edgecls._cli_errors import user_errors


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def _batches(value: str) -> tuple[int, ...]:
    from edgecls.errors import ConfigError

    try:
        return tuple(int(v) for v in _csv(value))
    except ValueError:
        raise ConfigError(f"--batch takes comma-separated batch sizes such as 1,8,32, got {value!r}") from None


def register(cli: click.Group) -> None:
    """Add the `bench` command to ``cli``."""

    @cli.command()
    @click.argument("bundle", type=click.Path(exists=True, file_okay=False))
    @click.option("--data", default=None, help="dataset of the bundle, for the mAP/F1 columns [default: none]")
    @click.option("--split", default="valid", show_default=True, help="split of --data to measure on")
    @click.option("--backends", default=None,
                  help="comma-separated: onnxruntime, openvino, tensorrt, coreml, pytorch [default: all here]")
    @click.option("--artifact", "artifacts", multiple=True, help="only this artifact of the bundle (repeatable)")
    @click.option("--batch", default="1,8,32", show_default=True, help="batch sizes whose throughput is measured")
    @click.option("--warmup", type=int, default=10, show_default=True, help="untimed calls before timing")
    @click.option("--iters", type=int, default=50, show_default=True, help="timed batch-1 calls, at least")
    @click.option("--min-seconds", type=float, default=1.0, show_default=True,
                  help="each timed loop also lasts at least this long (--max-seconds still ends it)")
    @click.option("--max-seconds", type=float, default=10.0, show_default=True, help="time budget of one timed loop")
    @click.option("--threads", type=int, default=None, help="CPU threads per engine [default: all usable cores]")
    @click.option("--torch-variants", default="eager,channels_last,compile", show_default=True,
                  help="PyTorch reference rows (eager, channels_last, compile), or none")
    @click.option("--checkpoint", default=None, help="checkpoint of the PyTorch rows [default: the bundle's source]")
    @click.option("--rounds", type=int, default=1, show_default=True,
                  help="measure every row this many times, interleaved; report the medians")
    @click.option("--max-busy", type=float, default=0.10, show_default=True,
                  help="share of all CPUs other processes may take during the rows a speed target compares; above "
                       "it the target reads 'not judged: machine busy (N%)'")
    @click.option("--targets", default=None, type=click.Path(dir_okay=False),
                  help="a targets file (e.g. benchmarks/targets.yaml): judge its speed targets [default: judge none]")
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
    @click.option("--verify/--no-verify", default=True, show_default=True,
                  help="check the model files against the sha256 in the bundle's manifest before timing them")
    @user_errors
    def bench(bundle: str, data: str | None, split: str, backends: str | None, artifacts: tuple[str, ...],
              batch: str, warmup: int, iters: int, min_seconds: float, max_seconds: float, threads: int | None,
              torch_variants: str, checkpoint: str | None, rounds: int, max_busy: float, targets: str | None,
              in_process: bool,
              json_out: str | None,
              md_out: str | None, plot_out: str | None, baseline: str | None, tolerance: float,
              map_tolerance: float, verify: bool) -> None:
        """Time and score every artifact of BUNDLE on every backend here, beside PyTorch, in one table."""
        from edgecls._io import atomic_write_text, to_json
        from edgecls.bench import BenchConfig, compare, load_baseline, run
        from edgecls.bench._compare import check_tolerances

        variants = () if torch_variants.strip().lower() == "none" else _csv(torch_variants)
        cfg = BenchConfig(bundle=bundle, data=data, split=split, backends=_csv(backends), artifacts=artifacts,
                          batch=_batches(batch), warmup=warmup, iters=iters, min_seconds=min_seconds,
                          max_seconds=max_seconds, threads=threads, torch_variants=variants, checkpoint=checkpoint,
                          isolate=not in_process, rounds=rounds, max_busy=max_busy, verify=verify, targets=targets)
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

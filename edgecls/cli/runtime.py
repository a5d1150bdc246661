"""`edgecls predict`, `edgecls run` and `edgecls doctor`: thin click commands over :mod:`edgecls.runtime.commands`
and :mod:`edgecls.runtime.doctor`.

:func:`register` adds them to a group. Each body parses flags, calls one library function and
prints its summary; library errors become one-line ``Error: ...`` messages (exit 1), Ctrl-C exits 130 after every
output is flushed and closed. Heavy modules are imported inside the commands so ``edgecls --help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

from edgecls.cli.errors import user_errors
from edgecls.cli.options import ConfigCommand, RegistryChoice


def backend_choices() -> tuple[str, ...]:
    """What `--backend` takes: auto, then the runtime's backend registry."""
    from edgecls.runtime.backends import BACKEND_NAMES

    return ("auto", *BACKEND_NAMES)


FORMATS = ("table", "json", "jsonl", "csv")
PREDICT_UNREADABLE_EXIT = 3  # `predict`: all rows written, but some input could not be read


def _engine_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--backend", type=RegistryChoice(backend_choices), default="auto", show_default=True,
                     help="inference engine; auto picks the fastest that works here"),
        click.option("--device", default=None, help="cpu, gpu/cuda[:N], npu, or the backend's device name (GPU.1)"),
        click.option("--artifact", default=None, help="force one artifact of the bundle, e.g. onnx-int8"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


_threads_option = click.option("--threads", type=click.IntRange(min=1), default=None,
                               help="CPU inference threads (at most the CPUs present)")
_verify_option = click.option("--verify/--no-verify", default=True, show_default=True,
                              help="check the model files against the sha256 in the bundle's manifest before loading")
_mode_option = click.option("--engine-mode", type=click.Choice(("auto", "latency", "throughput")), default="auto",
                            show_default=True,
                            help="engine set up for single inputs (latency) or for batches (throughput); auto: "
                                 "throughput for folders and video files, latency for cameras, streams, --realtime")
_max_pixels_option = click.option("--max-pixels", type=click.IntRange(min=0), default=100_000_000, show_default=True,
                                  help="refuse images (or frames) declaring more pixels, before decoding; 0: no limit")


def _finish(summary: Any) -> None:
    """Print the run's summary to stderr; exit 130 after Ctrl-C."""
    if getattr(summary, "output_closed", False):  # stdout's reader left (| head): keep Python from complaining
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    click.echo(summary.format(), err=True)
    if summary.interrupted:
        sys.exit(130)



ENGINES = ("local", "ray")
PREDICT_FORMATS = (*FORMATS, "parquet")


class WorkersType(click.ParamType):
    """`--workers`: N (decode threads with --engine local, workers with ray) or MIN,MAX (ray's autoscaling pool)."""

    name = "N|MIN,MAX"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        from edgecls.errors import ConfigError
        from edgecls.scale.config import parse_workers

        try:
            parse_workers(value)
        except ConfigError as exc:
            self.fail(str(exc).removeprefix(f"--workers {value!r}: "), param, ctx)
        return str(value).replace(" ", "")


def _scale_options() -> list[click.Option]:
    from edgecls.cli.options import options_from
    from edgecls.scale.config import ScaleConfig

    return options_from(ScaleConfig)


RAY_ONLY = ("address", "threads_per_worker", "path_column", "block_size")


@click.command(cls=ConfigCommand, options=_scale_options, last=True)
@click.argument("bundle")
@click.argument("paths", nargs=-1, required=True)
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local: this process; ray: a Ray Data job over many machines, rows written in resumable blocks "
                   "(see the options from --address on)")
@_engine_options
@_threads_option
@click.option("--batch", type=click.IntRange(min=1), default=None, help="images per inference [default: 16; 32 per "
                                                                          "worker with --engine ray]")
@click.option("--workers", type=WorkersType(), default=None,
              help="local: decode threads [default: up to 4]; ray: workers, N or MIN,MAX [default: CPUs / "
                   "--threads-per-worker]")
@click.option("--format", "fmt", type=click.Choice(PREDICT_FORMATS), default=None,
              help="local: table, json, jsonl or csv [default: table]; ray: parquet, csv or jsonl [default: parquet]")
@click.option("--out", "-o", default=None,
              help="local: write results to this file, not stdout; ray (required): the output folder or URI")
@click.option("--progress/--no-progress", default=None, help="progress bar [default: on a terminal]")
@click.option("--truth", default=None, metavar="LABELS_FILE",
              help="true labels of the images (a label file like the training data's): the summary adds how "
                   "many images are exactly right and the label accuracy")
@_mode_option
@_max_pixels_option
@_verify_option
@user_errors
def predict(bundle: str, paths: tuple[str, ...], engine: str, backend: str, device: str | None, artifact: str | None,
            threads: int | None, batch: int | None, workers: str | None, fmt: str | None, out: str | None,
            progress: bool | None, truth: str | None, engine_mode: str,
            max_pixels: int, verify: bool, **ray_flags: Any) -> None:
    """Classify images, folders (recursive) and globs with BUNDLE; one row per image, in input order.

    An unreadable image (missing, corrupt, not a regular file, or over --max-pixels) becomes an error row and the
    run goes on.

    With --engine ray, SOURCE can also be a CSV or Parquet listing (--path-column) or a URI (s3://, gs://, file://),
    and the rows go to --out in blocks; rerunning the same command resumes after a crash.

    \b
    Exit status:
      0  every image was classified
      3  every row was written, but at least one input could not be read (its row holds the error)
      2  usage error (an unknown option or a bad value)
      1  failure: nothing or not everything was classified (bad bundle, backend, --out ...)
      130  interrupted (Ctrl-C) after the rows so far were written"""
    ctx = click.get_current_context()
    if engine == "ray":
        return _predict_on_ray(bundle, paths, backend=backend, device=device, artifact=artifact, threads=threads,
                               batch=batch, workers=workers, fmt=fmt, out=out, progress=progress, truth=truth,
                               max_pixels=max_pixels, verify=verify, engine_mode=engine_mode,
                               ray_flags=ray_flags)
    given = [f"--{k.replace('_', '-')}" for k in RAY_ONLY if ray_flags.get(k) is not None]
    if given or fmt == "parquet" or (workers is not None and "," in workers):
        what = ", ".join(given) or ("--format parquet" if fmt == "parquet" else "--workers MIN,MAX")
        raise click.UsageError(f"{what}: for --engine ray only", ctx)
    from edgecls.runtime.commands import predict_paths

    param = {p.name: p for p in ctx.command.params}
    bundle = click.Path(exists=True).convert(bundle, param["bundle"], ctx)  # as before --engine: a path here
    out = click.Path(dir_okay=False).convert(out, param["out"], ctx) if out is not None else None
    summary = predict_paths(bundle, paths, backend=backend, device=device, artifact=artifact, threads=threads,
                            batch=batch or 16, workers=int(workers) if workers else None, fmt=fmt or "table",
                            out=out, progress=progress, truth=truth, max_pixels=max_pixels, verify=verify,
                            mode="throughput" if engine_mode == "auto" else engine_mode)
    _finish(summary)
    if summary.errors:
        sys.exit(PREDICT_UNREADABLE_EXIT)


def _predict_on_ray(bundle: str, paths: tuple[str, ...], *, threads: int | None, truth: str | None,
                    fmt: str | None, engine_mode: str, ray_flags: dict[str, Any], **flags: Any) -> None:
    """`predict --engine ray`: build the :class:`ScaleConfig`, call :func:`edgecls.scale.run`, print its summary."""
    from edgecls.cli.options import given
    from edgecls.config import build_config
    from edgecls.scale import ScaleConfig, run

    ctx = click.get_current_context()
    if threads is not None:
        raise click.UsageError("--threads: with --engine ray, give --threads-per-worker", ctx)
    if truth is not None:
        raise click.UsageError("--truth: for --engine local only (score the written rows afterwards)", ctx)
    if fmt is not None and fmt not in ("parquet", "csv", "jsonl"):
        raise click.UsageError(f"--format {fmt}: --engine ray writes parquet, csv or jsonl", ctx)
    if flags.get("out") is None:
        raise click.UsageError("--engine ray writes files: give --out DIR_OR_URI", ctx)
    if engine_mode == "latency":
        raise click.UsageError("--engine-mode latency: Ray workers run batches in the engine's throughput mode", ctx)
    cfg = build_config(ScaleConfig, overrides=given({**ray_flags, **flags, "format": fmt}))
    summary = run(bundle, paths, cfg)
    _finish(summary)
    if summary.errors:
        sys.exit(PREDICT_UNREADABLE_EXIT)


@click.command()
@click.argument("bundle", type=click.Path(exists=True))
@click.option("--camera", default=None, help="camera index (0 is the first camera)")
@click.option("--source", default=None, help="video file, stream URL (rtsp://...) or GStreamer pipeline")
@_engine_options
@_threads_option
@click.option("--show/--no-show", default=None, help="show a window [default: when a display is available]")
@click.option("--save", type=click.Path(dir_okay=False), default=None, help="write overlaid frames to an mp4")
@click.option("--jsonl", type=click.Path(dir_okay=False), default=None, help="one JSON line per frame here")
@click.option("--realtime", is_flag=True, help="play a video file at its frame rate, dropping like a camera")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="stop after this many frames")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="video files: infer up to this many already-decoded frames together (cameras: always 1)")
@click.option("--reconnect-tries", type=click.IntRange(min=0), default=3, show_default=True,
              help="a live source that stops is reopened this many times in a row (0.5 s, 1 s, 2 s... apart) "
                   "before the run ends with an error; a try counts only once a frame arrives")
@click.option("--frame-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="seconds without a frame after which a live source counts as stalled")
@_mode_option
@_max_pixels_option
@_verify_option
@user_errors
def run(bundle: str, camera: str | None, source: str | None, backend: str, device: str | None,
        artifact: str | None, threads: int | None, show: bool | None, save: str | None, jsonl: str | None,
        realtime: bool, max_frames: int | None, batch: int, reconnect_tries: int, frame_timeout: float,
        engine_mode: str, max_pixels: int, verify: bool) -> None:
    """Classify a camera (--camera 0) or a video/stream (--source) frame by frame, with an overlay.

    Headless (--no-show) without --jsonl prints one JSON line per frame. A camera or stream that drops is
    reopened with back-off --reconnect-tries times, then the run ends with an error."""
    from edgecls.runtime.commands import run_stream
    from edgecls.runtime.stream import backoff_delays

    summary = run_stream(bundle, camera=camera, source=source, backend=backend, device=device, artifact=artifact,
                         threads=threads, show=show, save=save, jsonl=jsonl, realtime=realtime,
                         max_frames=max_frames, batch=batch, backoff=backoff_delays(reconnect_tries),
                         frame_timeout=frame_timeout, max_pixels=max_pixels, verify=verify,
                         mode=None if engine_mode == "auto" else engine_mode)
    _finish(summary)

@click.command()
@click.argument("bundle", type=click.Path(exists=True), required=False)
@_engine_options
@click.option("--load", is_flag=True, help="also load the chosen artifact to prove it works")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@_verify_option
@user_errors
def doctor(bundle: str | None, backend: str, device: str | None, artifact: str | None, load: bool,
           as_json: bool, verify: bool) -> None:
    """Show the backends and devices of this machine and what auto would choose for BUNDLE."""
    from edgecls.runtime.doctor import doctor as run_doctor

    report = run_doctor(bundle, backend=backend, device=device, artifact=artifact, load=load, as_json=as_json,
                        verify=verify)
    if report.error:
        sys.exit(1)


def register(group: click.Group) -> None:
    """Add the runtime commands (predict, run, doctor) to ``group``."""
    for command in (predict, run, doctor):
        group.add_command(command)

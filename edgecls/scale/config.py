"""`ScaleConfig`: how an `edgecls predict --engine ray` job runs (cluster, workers, output); plain Python, no Ray."""

from __future__ import annotations

from dataclasses import dataclass

from edgecls.config import field
from edgecls.errors import ConfigError
from edgecls.preprocess import DEFAULT_MAX_PIXELS

OUTPUT_FORMATS = ("parquet", "csv", "jsonl")


@dataclass(frozen=True)
class ScaleConfig:
    """One batch job over many images: where Ray runs, how many workers, where the rows go.

    Everything a worker computes comes from the bundle (preprocessing, thresholds), exactly as on the device; these
    fields only say how the work is spread and written.
    """

    address: str | None = field(None, help="Ray cluster to run on: auto (the one started on this machine with `ray "
                                           "start`), HOST:PORT or ray://HOST:10001 [default: a local Ray on this "
                                           "machine's CPUs]")
    workers: str | None = field(None, help="N, or MIN,MAX for an autoscaling pool of workers (each opens the bundle "
                                           "once) [default: the cluster's CPUs / --threads-per-worker]", flag=False)
    threads_per_worker: int = field(2, help="CPU threads of each worker (inference and decoding)")
    batch: int = field(32, help="images per inference call of a worker", flag=False)
    out: str | None = field(None, help="output folder or URI (s3://bucket/prefix, file:///...)", flag=False)
    format: str = field("parquet", help="file format of the output blocks", choices=OUTPUT_FORMATS, flag=False)
    path_column: str = field("path", help="the column holding image paths or URIs in a CSV or Parquet SOURCE")
    block_size: int = field(1000, help="images per output file; a rerun skips the files already complete")
    backend: str = field("auto", help="inference engine of every worker (auto: the fastest on each node)", flag=False)
    device: str | None = field(None, help="device of every worker", flag=False)
    artifact: str | None = field(None, help="force one artifact of the bundle", flag=False)
    verify: bool = field(True, help="check the model files' sha256 before a worker loads them", flag=False)
    max_pixels: int = field(DEFAULT_MAX_PIXELS, help="refuse larger images before decoding (0: no limit)", flag=False)
    progress: bool | None = field(None, help="Ray Data's progress bars [default: on a terminal]", flag=False)

    def __post_init__(self) -> None:
        if self.format not in OUTPUT_FORMATS:
            raise ConfigError(f"--format {self.format!r} is not an output of --engine ray; valid: "
                              f"{', '.join(OUTPUT_FORMATS)}")
        for name, value in (("threads_per_worker", self.threads_per_worker), ("batch", self.batch),
                            ("block_size", self.block_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels < 0:
            raise ConfigError(f"--max-pixels must be a whole number >= 0 (0: no limit), got {self.max_pixels!r}")
        if not self.path_column:
            raise ConfigError("--path-column cannot be empty")
        parse_workers(self.workers)

    @property
    def worker_range(self) -> tuple[int, int] | None:
        """(min, max) workers, or None for the default (see :func:`edgecls.scale.cluster.plan_workers`)."""
        return parse_workers(self.workers)


def parse_workers(text: str | int | None) -> tuple[int, int] | None:
    """``"4"`` -> (4, 4), ``"1,4"`` -> (1, 4), None -> None; a :class:`ConfigError` for anything else."""
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or any(n < 1 for n in numbers) or (len(numbers) == 2 and numbers[0] > numbers[1]):
        raise ConfigError(f"--workers {text!r}: give N or MIN,MAX (whole numbers >= 1, MIN <= MAX), e.g. 4 or 2,8")
    return (numbers[0], numbers[-1])

"""The Ray job: read bytes -> ``map_batches`` on a pool of workers that each open the bundle's ``Classifier`` once ->
result rows, and the runner that writes them in deterministic blocks so that a rerun resumes.

Nothing here computes an answer itself: a worker decodes with its classifier's
:class:`edgecls.preprocess.Preprocessor` (OpenCV, the one preprocessing of training, export and the runtime; uint8
pixels for an artifact that normalises in the engine) and scores with :class:`edgecls.runtime.Classifier`, so its rows
are those of local ``edgecls predict`` on the same backend.

Resume, exactly once: the sorted inputs are cut into blocks of ``block_size``; block i is written as
``part-{i:06d}-{digest}.{format}``, where the digest covers the block's paths and the settings that change its rows
(the bundle's manifest, backend, device, artifact, --max-pixels, format). A local file is written under a temporary
name and renamed; an object-store PUT appears whole or not at all. A rerun of the same command skips every block whose
file is there and holds its row count, and the driver keeps the first row of each path, so a task that Ray retries
after a worker crash cannot write an input twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgecls._deps import require
from edgecls.errors import ConfigError, DataError, EdgeclsError
from edgecls.manifest import MANIFEST_NAME, Manifest
from edgecls.scale.cluster import READ_CPUS, WorkerPlan, cluster_size, connect, plan_workers, ray_module
from edgecls.scale.config import ScaleConfig
from edgecls.scale.sources import Inputs, Output, is_uri, list_inputs, open_output, resolve_uri

log = logging.getLogger("edgecls.scale")

JOB_FILE = "_edgecls_job.json"  # in the output folder: what the blocks there belong to
PROB_PREFIX = "prob_"
READ_TASKS_PER_NODE = 2  # read tasks at once per node (the read of a 1,000-image slice of local JPEGs is ~50 ms)
READ_THREADS = 16  # files of a remote filesystem (S3, GCS) read at once by one read task
MAX_FILE_BYTES = 512 << 20  # an input file larger than this is an error row, not read into memory
_INTERNAL = ("_block", "_worker", "_busy", "_started", "_done")  # columns the runner reads and does not write
_SUFFIX = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}
_SCHEMA = 1


def _pa() -> Any:
    return require("pyarrow", extra="ray")


def result_columns(class_names: Sequence[str]) -> list[str]:
    """The columns of a result row, in order: path, labels, one ``prob_<class>`` per class, error, artifact, backend."""
    return ["path", "labels", *(PROB_PREFIX + n for n in class_names), "error", "artifact", "backend"]


# ---------------------------------------------------------------------------------------------------------------------
# the bundle on every node


def load_manifest(bundle: str | Path) -> tuple[Manifest, str]:
    """The bundle's manifest and the sha256 of its manifest.json, read by the driver before any work starts (a path
    or a URI); a :class:`ConfigError` naming the bundle when it is not one."""
    text = str(bundle)
    if is_uri(text):
        filesystem, location, _ = resolve_uri(text)
        where = f"{text.rstrip('/')}/{MANIFEST_NAME}"
        try:
            with filesystem.open_input_stream(f"{location.rstrip('/')}/{MANIFEST_NAME}") as f:
                raw = f.read()
        except Exception as exc:
            raise ConfigError(f"{where}: cannot read the bundle's manifest ({_first_line(exc)}); every worker must be "
                              "able to read BUNDLE") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{where}: not a manifest ({exc})") from None
        return Manifest.from_dict(data, where=where), hashlib.sha256(raw).hexdigest()
    path = Path(text)
    if not path.is_dir():
        raise ConfigError(f"{text}: no such bundle folder (--engine ray takes an `edgecls export` bundle folder or "
                          "its URI, readable by every worker)")
    manifest = Manifest.load(path)
    return manifest, hashlib.sha256((path / MANIFEST_NAME).read_bytes()).hexdigest()


def local_bundle(bundle: str, manifest_sha: str, filesystem: Any = None, location: str | None = None) -> str:
    """A folder on this node holding the bundle: the path itself, or for a URI a copy in the user's cache (fetched
    once per node and manifest; the runtime then checks every model file's sha256 as it loads it). ``filesystem``
    and ``location``: the URI as the driver resolved it (its endpoint and credentials travel with it)."""
    if not is_uri(bundle):
        return bundle
    from edgecls._io import user_cache_dir

    dest = user_cache_dir("scale-bundles", manifest_sha[:24])
    if (dest / MANIFEST_NAME).is_file():
        return str(dest)
    fs_mod = require("pyarrow.fs", extra="ray", package="pyarrow")
    if filesystem is None or location is None:
        filesystem, location, _ = resolve_uri(bundle)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{os.urandom(4).hex()}.partial")
    try:
        fs_mod.copy_files(location, str(tmp), source_filesystem=filesystem,
                          destination_filesystem=fs_mod.LocalFileSystem())
        try:
            os.replace(tmp, dest)
        except OSError:  # another worker of this node was first
            pass
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)


# ---------------------------------------------------------------------------------------------------------------------
# read -> predict


def read_bytes(batch: Any, filesystems: Sequence[Any]) -> Any:
    """Ray Data read step: each input's bytes (``data``), or its ``error`` when it cannot be read (missing, not a
    regular file, too large, no permission); one bad file never fails the task. Local files are read in turn (from
    the page cache or a local disk, a thread per file costs more than it saves); files of a remote filesystem on
    :data:`READ_THREADS` threads, as their latency, not the CPU, bounds the rate."""
    pa = _pa()
    fs_mod = require("pyarrow.fs", extra="ray", package="pyarrow")
    items = list(zip(batch.column("path").to_pylist(), batch.column("fs").to_pylist(),
                     batch.column("loc").to_pylist()))

    def one(item: tuple[str, int, str]) -> tuple[bytes | None, str | None]:
        path, fs_id, loc = item
        filesystem = filesystems[fs_id]
        try:
            if isinstance(filesystem, fs_mod.LocalFileSystem):
                return _read_local(path, loc)
            info = filesystem.get_file_info(loc)
            if info.type == fs_mod.FileType.NotFound:
                return None, f"{path}: image file not found"
            if info.type != fs_mod.FileType.File:
                return None, f"{path}: not a regular file; skipped"
            if info.size is not None and info.size > MAX_FILE_BYTES:
                return None, f"{path}: {info.size:,} bytes, over the {MAX_FILE_BYTES >> 20} MB an input may have"
            with filesystem.open_input_stream(loc) as f:
                return f.read(), None
        except Exception as exc:  # a network or permission error on one file
            return None, f"{path}: cannot read image file ({_first_line(exc)})"

    remote = any(not isinstance(filesystems[fs_id], fs_mod.LocalFileSystem) for _, fs_id, _ in items)
    if remote and len(items) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(items)), thread_name_prefix="edgecls-read") as pool:
            results = list(pool.map(one, items))
    else:
        results = [one(item) for item in items]
    return batch.append_column("data", pa.array([d for d, _ in results], pa.binary())).append_column(
        "error", pa.array([e for _, e in results], pa.string()))


def _read_local(path: str, location: str) -> tuple[bytes | None, str | None]:
    """As the runtime reads a local image (the same messages as local ``edgecls predict``)."""
    import stat

    try:
        st = os.stat(location)
    except FileNotFoundError:
        return None, f"{path}: image file not found"
    except OSError as exc:
        return None, f"{path}: cannot read image file ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return None, f"{path}: a folder, not an image file"
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device" \
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "special"
        return None, f"{path}: not a regular file ({kind}); skipped"
    if st.st_size > MAX_FILE_BYTES:
        return None, f"{path}: {st.st_size:,} bytes, over the {MAX_FILE_BYTES >> 20} MB an input may have"
    try:
        with open(location, "rb") as f:
            return f.read(), None
    except OSError as exc:
        return None, f"{path}: cannot read image file ({exc.strerror or exc})"


class Predictor:
    """The Ray Data worker: opens the bundle's :class:`~edgecls.runtime.Classifier` once, then turns batches of
    (path, data, error) into result rows (:func:`result_columns`), decoding on ``threads`` threads.

    Subclass it to add columns or behaviour and pass the subclass as ``predictor=`` to :func:`predict_dataset` or
    :func:`run`.
    """

    def __init__(self, bundle: "BundleSource", options: dict[str, Any], internal: bool = False) -> None:
        init_at, init_cpu = time.time(), time.process_time()  # CPU: this process's, all its threads
        from concurrent.futures import ThreadPoolExecutor

        from edgecls.runtime import Classifier

        imported_at, imported_cpu = time.time(), time.process_time()
        self.threads = int(options["threads"])
        self.clf = Classifier(local_bundle(bundle.path, bundle.manifest_sha, bundle.filesystem, bundle.location),
                              options["backend"], options["device"],
                              artifact=options["artifact"], threads=self.threads, verify=options["verify"],
                              max_pixels=options["max_pixels"], mode="throughput")  # batches: no latency bound
        self.pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="edgecls-decode")
        self._local = threading.local()
        self.internal = internal
        self.worker = f"{_node_ip()}:{os.getpid()}"
        self.artifact = self.clf.artifact.name
        self.backend = self.clf.backend.name
        # wall-clock times (epoch s) of this worker's start, for the job's start-up breakdown (JobSummary.timeline),
        # and the CPU seconds of its steps (``cpu_*``: what a loaded machine does not inflate), whether the engine came
        # from its compiled-model cache
        loaded_cpu = time.process_time()
        self.started: dict[str, Any] = {
            "process": _process_start(), "init": init_at, "imported": imported_at, "loaded": time.time(),
            "cpu_boot": round(init_cpu, 4), "cpu_import": round(imported_cpu - init_cpu, 4),
            "cpu_load": round(loaded_cpu - imported_cpu, 4),
            "engine_cache_hit": self.clf.backend.info().get("engine_cache_hit")}
        self._loaded_cpu = loaded_cpu
        self.batches = 0

    def _load(self, path: str, data: bytes | None, error: str | None) -> tuple[np.ndarray | None, str | None]:
        if error is not None:
            return None, error
        try:
            pre = getattr(self._local, "pre", None)
            if pre is None:  # one per decode thread (its resize buffer is reused); the artifact's input kind
                pre = self._local.pre = self.clf.preprocessor()
            return pre(data or b"", name=path, max_pixels=self.clf.max_pixels), None
        except DataError as exc:
            return None, str(exc)
        except Exception as exc:  # a decoder crash on one odd file must not end the job
            return None, f"{path}: {type(exc).__name__}: {exc}"

    def __call__(self, batch: Any) -> Any:
        pa = _pa()
        start = time.perf_counter()
        if self.batches == 0:
            self.started["called"] = time.time()  # Ray Data's first batch to this worker (the model loaded before)
        paths = batch.column("path").to_pylist()
        loaded = list(self.pool.map(self._load, paths, batch.column("data").to_pylist(),
                                    batch.column("error").to_pylist()))
        ok = [i for i, (tensor, _) in enumerate(loaded) if tensor is not None]
        names = self.clf.class_names
        probs = np.full((len(paths), len(names)), np.nan)
        labels: list[list[str]] = [[] for _ in paths]
        if ok:
            scored = self.clf.probs(np.stack([loaded[i][0] for i in ok]))
            for i, pred in zip(ok, self.clf.predictions(scored, [paths[i] for i in ok])):
                probs[i] = pred.probs
                labels[i] = list(pred.labels)
        valid = np.zeros(len(paths), dtype=bool)
        valid[ok] = True
        columns: dict[str, Any] = {"path": pa.array(paths, pa.string()),
                                   "labels": pa.array(labels, pa.list_(pa.string()))}
        for k, name in enumerate(names):
            columns[PROB_PREFIX + name] = pa.array(probs[:, k], pa.float64(), mask=~valid)
        columns["error"] = pa.array([err for _, err in loaded], pa.string())
        columns["artifact"] = pa.array([self.artifact] * len(paths), pa.string())
        columns["backend"] = pa.array([self.backend] * len(paths), pa.string())
        if self.internal:
            columns["_block"] = batch.column("_block")
            columns["_worker"] = pa.array([self.worker] * len(paths), pa.string())
            columns["_busy"] = pa.array([time.perf_counter() - start] + [0.0] * (len(paths) - 1), pa.float64())
            first = self.batches == 0
            if first:
                self.started["cpu_first_batch"] = round(time.process_time() - self._loaded_cpu, 4)
            columns["_started"] = pa.array([json.dumps(self.started) if first else None] + [None] * (len(paths) - 1),
                                           pa.string())
            columns["_done"] = pa.array([time.time()] + [None] * (len(paths) - 1), pa.float64())
        self.batches += 1
        return pa.table(columns)

    def __del__(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=False)


def check_bundle_on_a_worker(bundle: "BundleSource", options: dict[str, Any], timeout: float = 600.0) -> None:
    """Check the bundle as a worker will open it, in one Ray task on the cluster, before any work: a bundle a node
    cannot read (a path only the driver has, a URI it cannot fetch), that no engine of that node runs, or whose model
    file fails its sha256 is one :class:`ConfigError`.

    Light on purpose: the task plans the load (which artifact on which engine, as ``Classifier`` would) and checks
    that artifact's files (inside the bundle, present, their sha256), but builds no engine; each worker loads the model
    once itself, and a failure there still ends the job with one line (:func:`_job_error`). On a Ray whose only
    node is this machine, the check runs here, in this process.
    """
    ray = ray_module()
    if _only_this_node(ray):  # a local Ray: this process sees what its workers see, without a task to start
        error = probe_bundle(bundle, options)
        if error is not None:
            raise ConfigError(f"BUNDLE {bundle.path}: a worker cannot open it: {error}")
        return
    try:
        error = ray.get(_probe_task(ray).remote(bundle, options), timeout=timeout)
    except Exception as exc:
        raise ConfigError(f"BUNDLE {bundle.path}: a Ray worker could not check it ({_first_line(exc)})") from None
    if error is not None:
        raise ConfigError(f"BUNDLE {bundle.path}: a worker cannot open it: {error}")


def _only_this_node(ray: Any) -> bool:
    """Whether every node of the cluster that has CPUs is the one this process runs on."""
    try:
        here = ray.get_runtime_context().get_node_id()
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    except Exception:
        return False
    return bool(nodes) and all(n.get("NodeID") == here for n in nodes)


def _probe_task(ray: Any) -> Any:
    return ray.remote(num_cpus=READ_CPUS, max_retries=0)(probe_bundle)


def probe_bundle(bundle: "BundleSource", options: dict[str, Any]) -> str | None:
    """What :func:`check_bundle_on_a_worker` runs on a node: None when the bundle can be opened there, else why not."""
    try:
        from edgecls.runtime.plan import check_artifact_files, plan

        root = Path(local_bundle(bundle.path, bundle.manifest_sha, bundle.filesystem, bundle.location))
        manifest = Manifest.load(root)
        choices = plan(manifest, root, backend=options["backend"], device=options["device"],
                       artifact=options["artifact"])
        check_artifact_files(root, choices[0].artifact, choices[0].path, verify=bool(options["verify"]))
    except Exception as exc:
        return f"{exc}" if isinstance(exc, EdgeclsError) else f"{type(exc).__name__}: {_first_line(exc)}"
    return None


def _process_start() -> float | None:
    """When this process started (epoch s; Linux), None elsewhere."""
    try:
        stat = Path(f"/proc/{os.getpid()}/stat").read_text()
        since_boot = int(stat[stat.rindex(")") + 2:].split()[19]) / os.sysconf("SC_CLK_TCK")
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _node_ip() -> str:
    try:
        return ray_module().util.get_node_ip_address()
    except Exception:
        return "local"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_slices(inputs: Inputs, blocks: Sequence["Block"], cluster_cpus: float) -> list[Any]:
    """The inputs of ``blocks`` as pyarrow tables (path, fs, loc, _block), each one Ray block of a read task."""
    pa = _pa()
    count = sum(b.stop - b.start for b in blocks)
    size = int(min(512, max(16, count // max(8, int(cluster_cpus * 8)))))
    slices = []
    for block in blocks:
        for start in range(block.start, block.stop, size):
            stop = min(block.stop, start + size)
            slices.append(pa.table({
                "path": pa.array(inputs.paths[start:stop], pa.string()),
                "fs": pa.array(inputs.fs_index[start:stop], pa.int32()),
                "loc": pa.array(inputs.locations[start:stop], pa.string()),
                "_block": pa.array([block.index] * (stop - start), pa.int32()),
            }))
    return slices


def read_tasks(plan: WorkerPlan) -> int:
    """How many read tasks run at once: :data:`READ_TASKS_PER_NODE` per node of the cluster."""
    return max(1, READ_TASKS_PER_NODE * plan.nodes)


def _options(config: ScaleConfig) -> dict[str, Any]:
    return {"threads": config.threads_per_worker, "backend": config.backend, "device": config.device,
            "artifact": config.artifact, "verify": config.verify, "max_pixels": config.max_pixels}


def _dataset(bundle: "BundleSource", inputs: Inputs, blocks: Sequence["Block"], config: ScaleConfig,
             plan: WorkerPlan, *, predictor: type | None, internal: bool) -> Any:
    ray = ray_module()
    cls = predictor or Predictor
    slices = _read_slices(inputs, blocks, plan.cluster_cpus)
    # from_blocks: the slices' metadata computed here (from_arrow runs one Ray task per slice for it, each in a
    # worker process that must first start and import Ray Data)
    ds = ray.data.from_blocks(slices) if hasattr(ray.data, "from_blocks") else ray.data.from_arrow(slices)
    fs_mod = require("pyarrow.fs", extra="ray", package="pyarrow")
    read = {"fn_kwargs": {"filesystems": list(inputs.filesystems)}, "batch_format": "pyarrow", "batch_size": None}
    if all(isinstance(f, fs_mod.LocalFileSystem) for f in inputs.filesystems):
        # Local files: read by the workers themselves (the same CPU request, so Ray Data fuses the two steps into
        # the actor pool): no read tasks, whose worker processes would each start and import Ray Data, for reads
        # that take microseconds a file
        ds = ds.map_batches(read_bytes, num_cpus=plan.cpus, **read)
    else:
        # Remote files: a bounded pool of read tasks beside the workers (latency, not CPU, bounds a read; each
        # task reads on threads, and each task running at once is a worker process of its own)
        ds = ds.map_batches(read_bytes, num_cpus=READ_CPUS, compute=ray.data.TaskPoolStrategy(size=read_tasks(plan)),
                            **read)
    compute = ray.data.ActorPoolStrategy(size=plan.max_workers) if plan.min_workers == plan.max_workers else \
        ray.data.ActorPoolStrategy(min_size=plan.min_workers, max_size=plan.max_workers)
    ds = ds.map_batches(cls, fn_constructor_args=(bundle, _options(config), internal),
                        batch_size=config.batch, batch_format="pyarrow", compute=compute, num_cpus=plan.cpus)
    return ds


@dataclass(frozen=True)
class BundleSource:
    """The bundle as every worker opens it: an absolute path (a folder every node can read) or a URI with the
    filesystem the driver resolved it on."""

    path: str
    manifest_sha: str
    filesystem: Any = None
    location: str | None = None


def _worker_bundle(bundle: str | Path, manifest_sha: str) -> BundleSource:
    text = str(bundle)
    if not is_uri(text):
        return BundleSource(os.path.abspath(text), manifest_sha)
    filesystem, location, _ = resolve_uri(text)
    return BundleSource(text, manifest_sha, filesystem, location)


def predict_dataset(bundle: str | Path, sources: Sequence[str | Path], config: ScaleConfig | None = None, *,
                    predictor: type | None = None) -> Any:
    """A ``ray.data.Dataset`` of result rows (:func:`result_columns`), one per input, to compose with other Ray
    pipelines (``.write_parquet(...)``, ``.filter(...)``, ...); nothing runs until it is consumed.

    Connects to Ray first (``config.address``; a local Ray when None and none is running). ``sources``: see
    :func:`edgecls.scale.sources.list_inputs`. Unreadable or corrupt inputs are rows whose ``error`` says why.
    ``config.out`` and ``config.format`` are not used here (see :func:`run`).
    """
    config = config or ScaleConfig()
    manifest, manifest_sha = load_manifest(bundle)
    inputs = list_inputs(sources, path_column=config.path_column)
    connect(config.address)
    cpus, nodes = cluster_size()
    plan = plan_workers(config.worker_range, config.threads_per_worker, cluster_cpus=cpus, nodes=nodes)
    blocks = plan_blocks(inputs, config.block_size, {})
    return _dataset(_worker_bundle(bundle, manifest_sha), inputs, blocks, config, plan, predictor=predictor,
                    internal=False)


# ---------------------------------------------------------------------------------------------------------------------
# blocks and the output folder


@dataclass(frozen=True)
class Block:
    """Inputs ``start:stop`` of the sorted list, written as ``name``."""

    index: int
    start: int
    stop: int
    name: str

    @property
    def size(self) -> int:
        return self.stop - self.start


def _settings(config: ScaleConfig, manifest_sha: str) -> dict[str, Any]:
    """What changes a block's rows or file (not where or how fast it runs)."""
    return {"schema": _SCHEMA, "manifest_sha256": manifest_sha, "backend": config.backend, "device": config.device,
            "artifact": config.artifact, "max_pixels": config.max_pixels, "format": config.format,
            "block_size": config.block_size}


def _digest(settings: dict[str, Any], paths: Sequence[str]) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for p in paths:
        h.update(b"\0" + p.encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def plan_blocks(inputs: Inputs, block_size: int, settings: dict[str, Any], suffix: str = "parquet") -> list[Block]:
    """Fixed-size blocks of the sorted inputs, each named by its index and a digest of its paths and ``settings``."""
    blocks = []
    for index, start in enumerate(range(0, len(inputs), block_size)):
        stop = min(len(inputs), start + block_size)
        digest = _digest(settings, inputs.paths[start:stop])[:16]
        blocks.append(Block(index, start, stop, f"part-{index:06d}-{digest}.{suffix}"))
    return blocks


def _claim(output: Output, job: dict[str, Any]) -> None:
    """Write (or check) the job file of the output folder: a rerun must be the same job (same inputs and settings),
    so blocks of two jobs never mix. Fails here, before any work, when the output cannot be written."""
    path = output.path(JOB_FILE)
    try:
        with output.filesystem.open_input_stream(path) as f:
            found = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        found = None
    except Exception as exc:
        if "not found" not in str(exc).lower() and "no such" not in str(exc).lower():
            raise ConfigError(f"--out {output.uri}: cannot read {JOB_FILE} there ({_first_line(exc)})") from None
        found = None
    if found is not None:
        if not isinstance(found, dict) or found.get("job") != job["job"]:
            raise ConfigError(f"--out {output.uri}: holds the results of another job (its inputs or settings "
                              f"differ, see {JOB_FILE}); give a new --out, or rerun that job's exact command to "
                              "resume it")
        return
    text = json.dumps(job, indent=2) + "\n"
    try:
        if output.local:
            from edgecls._io import atomic_write_text

            atomic_write_text(path, text)
        else:
            with output.filesystem.open_output_stream(path) as f:
                f.write(text.encode())
    except Exception as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _first_line(exc)
        raise ConfigError(f"--out {output.uri}: cannot write there ({reason}); give a folder or bucket you can "
                          "write to") from None


def _existing(output: Output) -> dict[str, int | None]:
    fs_mod = require("pyarrow.fs", extra="ray", package="pyarrow")
    selector = fs_mod.FileSelector(output.location, recursive=False, allow_not_found=True)
    try:
        infos = output.filesystem.get_file_info(selector)
    except Exception as exc:
        raise ConfigError(f"--out {output.uri}: cannot list it ({_first_line(exc)})") from None
    return {i.base_name: i.size for i in infos if i.type == fs_mod.FileType.File}


def _rows_in(output: Output, name: str, fmt: str) -> int | None:
    """Rows of a finished output file, None when it cannot be read whole."""
    try:
        if fmt == "parquet":
            pq = require("pyarrow.parquet", extra="ray", package="pyarrow")
            with output.filesystem.open_input_file(output.path(name)) as f:
                return pq.read_metadata(f).num_rows
        with output.filesystem.open_input_stream(output.path(name)) as f:
            text = f.read()
        if not text.endswith(b"\n"):
            return None
        lines = text.count(b"\n")
        return lines - 1 if fmt == "csv" else lines
    except Exception:
        return None


def _write(output: Output, name: str, table: Any, fmt: str) -> None:
    """One block's file: a temporary name renamed on a local disk, one PUT on an object store."""
    if fmt == "parquet":
        pq = require("pyarrow.parquet", extra="ray", package="pyarrow")

        def write(where: Any) -> None:
            pq.write_table(table, where)
    elif fmt == "csv":
        csv = require("pyarrow.csv", extra="ray", package="pyarrow")
        pc = require("pyarrow.compute", extra="ray", package="pyarrow")
        flat = table.set_column(table.column_names.index("labels"), "labels",
                                pc.binary_join(table.column("labels"), ";"))

        def write(where: Any) -> None:
            csv.write_csv(flat, where)
    else:
        lines = "".join(json.dumps(row, allow_nan=False) + "\n" for row in table.to_pylist()).encode()

        def write(where: Any) -> None:
            if isinstance(where, (str, Path)):
                Path(where).write_bytes(lines)
            else:
                where.write(lines)
    if output.local:
        from edgecls._io import atomic_save

        atomic_save(output.path(name), lambda tmp: write(str(tmp)))
        return
    with output.filesystem.open_output_stream(output.path(name)) as f:
        write(f)


# ---------------------------------------------------------------------------------------------------------------------
# the runner


@dataclass
class WorkerStats:
    images: int = 0
    busy_s: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.images / self.busy_s if self.busy_s > 0 else 0.0


@dataclass
class JobSummary:
    """What a run did: ``images`` inputs in ``blocks`` blocks, of which ``skipped`` blocks were already complete;
    ``written`` rows this run, ``errors`` of them error rows, in ``seconds`` (the whole run, Ray start included);
    ``workers`` per worker (``node-ip:pid``): images and seconds busy."""

    images: int
    blocks: int
    skipped: int
    written: int
    errors: int
    seconds: float
    out: str
    fmt: str
    plan: WorkerPlan | None = None
    workers: dict[str, WorkerStats] = field(default_factory=dict)
    engines: list[str] = field(default_factory=list)  # "artifact on backend" of the rows written
    first_row_s: float | None = None  # from the start of the run to the first row back
    interrupted: bool = False
    # where the start went, in seconds from the start of the run: the driver's steps (``listed``, ``connected``,
    # ``planned``, ``checked``, ``first_row``, ``end``) and, per worker, when its process started, its __init__ began,
    # the runtime was imported, the model was loaded, its first batch came in and was done (``process``, ``init``,
    # ``imported``, ``loaded``, ``called``, ``first_batch``)
    timeline: dict[str, float] = field(default_factory=dict)
    worker_timeline: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        lines = [f"{self.written} images ({self.errors} error rows) in {self.seconds:.2f} s, "
                 f"{self.images_per_second:.1f} img/s; {self.blocks - self.skipped} of {self.blocks} blocks written, "
                 f"{self.skipped} already complete; {self.images} inputs in all -> {self.out} ({self.fmt})"]
        if self.plan is not None:
            lines.append(f"pool: {self.plan.describe()}")
        if self.engines:
            lines.append(f"engine: {', '.join(self.engines)}")
        for worker, stats in sorted(self.workers.items()):
            lines.append(f"  worker {worker}: {stats.images} images, {stats.busy_s:.2f} s busy, "
                         f"{stats.images_per_second:.1f} img/s")
        return ("interrupted: " if self.interrupted else "") + "\n".join(lines)


def run(bundle: str | Path, sources: Sequence[str | Path], config: ScaleConfig, *, predictor: type | None = None,
        on_block: Callable[[Block], None] | None = None) -> JobSummary:
    """Classify every input of ``sources`` on Ray and write the rows in blocks under ``config.out``; resumable.

    Before any work (and before Ray starts): the bundle's manifest is read, the sources are listed (none found is a
    :class:`ConfigError`), and the output folder is claimed (a job file written, or checked on a rerun: another
    job's folder is refused). Then the blocks not yet complete are run; each is written as its last row arrives.
    ``on_block(block)`` is called after each block is written. Ray Data's progress bars show with
    ``config.progress`` (None: on a terminal).
    """
    start = time.perf_counter()
    epoch = time.time() - (time.perf_counter() - start)
    if not config.out:
        raise ConfigError("--engine ray writes files: give --out DIR_OR_URI")
    _, manifest_sha = load_manifest(bundle)
    inputs = list_inputs(sources, path_column=config.path_column)
    output = open_output(config.out)
    settings = _settings(config, manifest_sha)
    blocks = plan_blocks(inputs, config.block_size, settings, _SUFFIX[config.format])
    _claim(output, {"job": _digest(settings, inputs.paths), "settings": settings, "inputs": len(inputs),
                    "blocks": len(blocks), "bundle": str(bundle), "sources": [str(s) for s in sources]})
    if output.local:
        from edgecls._io import remove_stale_temps

        remove_stale_temps(output.location, [b.name for b in blocks] + [JOB_FILE], (".tmp",))
    existing = _existing(output)
    todo = [b for b in blocks if not (b.name in existing and _rows_in(output, b.name, config.format) == b.size)]
    summary = JobSummary(len(inputs), len(blocks), len(blocks) - len(todo), 0, 0, 0.0, output.uri, config.format)
    mark = _marker(summary.timeline, start)
    mark("listed")
    if not todo:
        summary.seconds = time.perf_counter() - start
        return summary
    started = connect(config.address)
    mark("connected")
    try:
        ray = ray_module()
        ctx = ray.data.DataContext.get_current()
        import sys

        ctx.enable_progress_bars = bool(sys.stderr.isatty() if config.progress is None else config.progress)
        cpus, nodes = cluster_size()
        summary.plan = plan_workers(config.worker_range, config.threads_per_worker, cluster_cpus=cpus, nodes=nodes)
        mark("planned")
        source = _worker_bundle(bundle, manifest_sha)
        check_bundle_on_a_worker(source, _options(config))
        mark("checked")
        log.info("edgecls predict --engine ray: %d inputs, %d block(s) to run (%d complete); %s", len(inputs),
                 len(todo), summary.skipped, summary.plan.describe())
        ds = _dataset(source, inputs, todo, config, summary.plan, predictor=predictor, internal=True)
        try:
            _stream(ds, {b.index: b for b in todo}, output, config.format, summary, start, epoch, on_block)
        except KeyboardInterrupt:
            summary.interrupted = True
        except EdgeclsError:
            raise
        except Exception as exc:
            raise _job_error(exc) from None
    finally:
        summary.seconds = time.perf_counter() - start
        mark("end")
        if started:
            ray_module().shutdown()
    return summary


def _marker(timeline: dict[str, float], start: float) -> Callable[[str], None]:
    def mark(name: str) -> None:
        timeline[name] = round(time.perf_counter() - start, 4)
    return mark


def _stream(ds: Any, pending: dict[int, Block], output: Output, fmt: str, summary: JobSummary, start: float,
            epoch: float, on_block: Callable[[Block], None] | None) -> None:
    pa = _pa()
    pc = require("pyarrow.compute", extra="ray", package="pyarrow")
    seen: dict[int, set[str]] = {}
    parts: dict[int, list[Any]] = {}
    engines: set[str] = set()
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        if summary.first_row_s is None:
            summary.first_row_s = time.perf_counter() - start
            summary.timeline["first_row"] = round(summary.first_row_s, 4)
        _worker_times(batch, summary.worker_timeline, epoch)
        for index in pc.unique(batch.column("_block")).to_pylist():
            block = pending.get(index)
            if block is None:
                continue  # a block already written (rows of a retried task)
            sub = batch.filter(pc.equal(batch.column("_block"), index))
            have = seen.setdefault(index, set())
            keep = []
            for path in sub.column("path").to_pylist():
                keep.append(path not in have)
                have.add(path)
            if not all(keep):
                sub = sub.filter(pa.array(keep))
            parts.setdefault(index, []).append(sub)
            if len(have) < block.size:
                continue
            table = pa.concat_tables(parts.pop(index)).sort_by("path")
            del seen[index], pending[index]
            for worker, busy, rows in _per_worker(table):
                stats = summary.workers.setdefault(worker, WorkerStats())
                stats.busy_s += busy
                stats.images += rows
            engines.update(f"{a} on {b}" for a, b in set(zip(table.column("artifact").to_pylist(),
                                                             table.column("backend").to_pylist())))
            _write(output, block.name, table.drop_columns(list(_INTERNAL)), fmt)
            summary.written += table.num_rows
            summary.errors += table.num_rows - table.column("error").null_count
            if on_block is not None:
                on_block(block)
    summary.engines = sorted(engines)
    if pending:
        raise DataError(f"{len(pending)} block(s) got no rows for some inputs (Ray dropped them); run the same "
                        "command again to finish them")


def _worker_times(batch: Any, timeline: dict[str, dict[str, float]], epoch: float) -> None:
    """Each worker's start (process, init, imported, loaded) and its first batch done, in s from the run's start."""
    workers = batch.column("_worker").to_pylist()
    for worker, started, done in zip(workers, batch.column("_started").to_pylist(), batch.column("_done").to_pylist()):
        entry = timeline.setdefault(worker, {})
        if started is not None:
            for key, value in json.loads(started).items():
                if key.startswith("cpu_") or isinstance(value, bool):  # CPU seconds and flags, as they are
                    entry[key] = value
                elif value is not None:
                    entry[key] = round(value - epoch, 4)
        if done is not None:
            entry["first_batch"] = round(min(entry.get("first_batch", float("inf")), done - epoch), 4)


def _per_worker(table: Any) -> list[tuple[str, float, int]]:
    workers = table.column("_worker").to_pylist()
    busy = table.column("_busy").to_pylist()
    out: dict[str, list[float]] = {}
    for w, b in zip(workers, busy):
        entry = out.setdefault(w, [0.0, 0])
        entry[0] += b
        entry[1] += 1
    return [(w, b, int(n)) for w, (b, n) in out.items()]


def _job_error(exc: BaseException) -> EdgeclsError:
    """One line for a job that Ray could not finish: the edgecls error a worker raised (a bundle it cannot open),
    or Ray's own first line."""
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            break
        if isinstance(cause, EdgeclsError):
            return ConfigError(f"a worker failed: {cause}")
        inner = getattr(cause, "cause", None)
        cause = inner if isinstance(inner, BaseException) else cause.__cause__
    text = str(exc)
    for line in text.splitlines():  # a RayTaskError's text ends with the worker's exception
        if "edgecls.errors." in line:
            return ConfigError(f"a worker failed: {line.split(': ', 1)[-1].strip()}")
    return ConfigError(f"the Ray job failed: {type(exc).__name__}: {_first_line(exc)}")

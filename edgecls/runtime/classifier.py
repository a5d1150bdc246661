"""`Classifier`: a bundle (or one model file) on the best backend here, images in, labels out.

Preprocessing is :func:`edgecls.preprocess.preprocess` driven by the bundle's :class:`PreprocessSpec`; the model
returns logits, the runtime applies the sigmoid and each label is on when its probability reaches the threshold tuned
for the artifact that runs (every artifact of a bundle carries its own thresholds).

Artifact choice with ``backend="auto"``: the fastest backend that is installed and works here (see
:mod:`edgecls.runtime.backends`), then among the bundle's artifacts that backend runs, its INT8 artifact when the
device runs INT8 fast (VNNI/AMX on x86, dot-product on Arm, tensor cores on NVIDIA), else its float artifact; the
backend's native format (OpenVINO IR for OpenVINO, the TensorRT artifact for TensorRT) before plain ONNX.
"""

from __future__ import annotations

import logging
import mmap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, overload

import numpy as np

from edgecls.bundle import (
    ENGINE_SETTINGS_NAME,
    META_PREFIX,
    artifact_paths,
    bundle_file,
    check_inside,
    companions,
    verify_files,
)
from edgecls.errors import ConfigError, EdgeclsError
from edgecls.manifest import MANIFEST_NAME, Artifact, Manifest, precision_name
from edgecls.metrics import sigmoid
from edgecls.preprocess import DEFAULT_MAX_PIXELS, ImageSource, PreprocessSpec, preprocess
from edgecls.runtime.backends import (
    BACKEND_NAMES,
    Backend,
    Candidate,
    auto_candidates,
    backend_module,
    check_input_size,
    check_threads,
    device_kind,
    normalize_precision,
    one_line,
    probe,
)

log = logging.getLogger("edgecls.runtime")

_SUFFIX_FORMAT = {".onnx": "onnx", ".xml": "openvino", ".mlpackage": "coreml", ".mlmodel": "coreml",
                  ".engine": "tensorrt", ".plan": "tensorrt"}


@dataclass(frozen=True)
class Prediction:
    """One image's result: sigmoid probabilities per class and the labels at or above their thresholds.

    An image that could not be read is an error row: ``error`` holds the message and ``probs`` is None.
    """

    source: str
    probs: np.ndarray | None
    labels: tuple[str, ...]
    class_names: tuple[str, ...]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def probabilities(self) -> dict[str, float]:
        if self.probs is None:
            return {}
        return {name: float(p) for name, p in zip(self.class_names, self.probs)}

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"source": self.source, "labels": list(self.labels),
                                "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()}}
        if self.error is not None:
            data["error"] = self.error
        return data


@dataclass(frozen=True)
class Choice:
    """One way to run a bundle here: an artifact on a backend and device, and why."""

    artifact: Artifact
    path: Path
    backend: str
    device: str | None
    precision: str | None
    reason: str
    candidate: Candidate | None = field(default=None, compare=False)


# ---------------------------------------------------------------------------------------------------------------------
# ONNX metadata without the onnx package


def _varint(buf: Any, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file (ModelProto field 14), read by walking the top-level protobuf fields.

    Memory-mapped and skipping the graph, so it costs microseconds and needs neither onnx nor a backend.
    """
    props: dict[str, str] = {}
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            pos, end = 0, len(mm)
            while pos < end:
                tag, pos = _varint(mm, pos)
                number, wire = tag >> 3, tag & 7
                if wire == 0:
                    _, pos = _varint(mm, pos)
                elif wire == 1:
                    pos += 8
                elif wire == 5:
                    pos += 4
                elif wire == 2:
                    size, pos = _varint(mm, pos)
                    if number == 14:
                        key, value = _string_pair(mm[pos : pos + size])
                        props[key] = value
                    pos += size
                else:
                    raise ValueError(f"unexpected wire type {wire}")
    except (OSError, ValueError, IndexError) as exc:
        raise ConfigError(f"{path}: not a readable ONNX file ({exc})") from None
    return props


def _string_pair(buf: bytes) -> tuple[str, str]:
    pos, out = 0, {1: "", 2: ""}
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        size, pos = _varint(buf, pos)
        out[tag >> 3] = buf[pos : pos + size].decode("utf-8", errors="replace")
        pos += size
    return out[1], out[2]


# ---------------------------------------------------------------------------------------------------------------------
# what to run


def _artifact_path(root: Path, art: Artifact) -> Path:
    """The artifact's file, resolved; an IntegrityError when its manifest path leaves the bundle."""
    return bundle_file(root, art.path, field="path", artifact=art.name)


def check_artifact_files(root: Path, art: Artifact, path: Path | None = None, *, verify: bool = True) -> Path:
    """The one check before a bundle's model file is opened (predict, run, doctor, parity and bench all call it).

    Returns the model path to load (the artifact's unless ``path`` is given). Raises
    :class:`edgecls.errors.IntegrityError` when a path the manifest names for the artifact, ``path`` or a file an
    engine reads beside it (an IR's .bin, engine.json) leaves the bundle (absolute, ``..``, a symlink out), and, with
    ``verify``, when the files that will be opened differ from the sha256 the manifest records (see
    :mod:`edgecls.bundle`); a :class:`ConfigError` naming the file when it (or an IR's .bin) is missing.
    """
    named = artifact_paths(root, art)
    path = check_inside(root, path, field="the model file", artifact=art.name) if path is not None \
        else named[f"artifacts[{art.name}].path"]
    beside = companions(Path(path), art.format)
    inside = sorted(path.rglob("*")) if path.is_dir() else []  # a folder artifact (.mlpackage): every file in it
    for extra in (*beside, *inside):
        if extra.exists() or extra.is_symlink():
            check_inside(root, extra, field=f"beside {Path(path).name}" if extra in beside else
                         f"inside {Path(path).name}", artifact=art.name)
    missing = [] if path.exists() else [path]
    if art.format == "openvino" and path.suffix == ".xml" and not path.with_suffix(".bin").exists():
        missing.append(path.with_suffix(".bin"))
    if missing:
        names = ", ".join(str(p) for p in missing)
        raise ConfigError(
            f"bundle {root}: artifact {art.name!r} needs {names}, which is missing; re-export the bundle "
            "(edgecls export) or choose another artifact with --artifact"
        )
    if verify:
        verify_artifact_files(root, art, path)
    return path


def verify_artifact_files(root: Path, art: Artifact, path: Path) -> None:
    """Hash the files a backend opens for ``art`` at ``path`` (the model, an IR's .bin, engine.json), each once, and
    compare them with the manifest's record; an :class:`edgecls.errors.IntegrityError` when one differs.

    Call :func:`check_artifact_files` first (containment and existence); it calls this with ``verify=True``.
    """
    verify_files(root, art, [path, *(p for p in companions(Path(path), art.format) if p.is_file())])


def _precision_for(art: Artifact, backend: str) -> str | None:
    """The precision to ask the backend for, so predictions match the artifact's parity run.

    The exporter records the hint its parity run used (``details["inference_precision_hint"]`` for OpenVINO IR,
    f32 unless configured otherwise); the rest follows the artifact's precision.
    """
    recorded = art.details.get("precision_hint")
    if recorded and art.details.get("backend") in (None, backend):
        return normalize_precision(recorded)
    if art.format == "openvino" and backend == "openvino":
        return normalize_precision(art.details.get("inference_precision_hint") or "f32")
    if art.format == "tensorrt":
        return None  # engine.json next to the ONNX decides
    if art.precision == "int8":
        return "int8"
    if art.precision == "fp16" and backend == "tensorrt":
        return "f16"
    if backend == "coreml":
        return None
    return "f32"  # fp32 artifacts, fp16-compressed IR and int8-weight-compressed models compute in f32


def _tensorrt_model(root: Path, art: Artifact) -> Path:
    """The file the TensorRT backend loads for a tensorrt artifact: its prebuilt engine when ``engine.json`` says it
    was built on this GPU model with this TensorRT version, else the portable ONNX (built and cached on first use)."""
    import json

    path = _artifact_path(root, art)
    onnx = bundle_file(root, art.details["onnx"], field="details.onnx", artifact=art.name) if art.details.get("onnx") \
        else path.with_name("model.onnx")
    if path.suffix.lower() not in (".engine", ".plan"):
        return path
    settings_file = bundle_file(root, art.details["settings"], field="details.settings", artifact=art.name) \
        if art.details.get("settings") else path.with_name(ENGINE_SETTINGS_NAME)
    try:
        built = json.loads(settings_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        built = {}
    status = probe("tensorrt")
    gpus = {g.get("name") for g in status.details.values() if isinstance(g, dict)}
    if built.get("gpu") in gpus and built.get("tensorrt") == status.version:
        return path
    if onnx.exists():
        log.info("%s: the engine was built for %s with TensorRT %s; this machine has %s with TensorRT %s, so the "
                 "engine is built from %s (once, then cached)", art.name, built.get("gpu"), built.get("tensorrt"),
                 ", ".join(sorted(str(g) for g in gpus)) or "no GPU", status.version, onnx.name)
        return onnx
    return path


def _model_path(root: Path, art: Artifact, backend: str) -> Path:
    if art.format == "tensorrt" and backend == "tensorrt":
        return _tensorrt_model(root, art)
    return _artifact_path(root, art)


def order_artifacts(artifacts: Iterable[Artifact], formats: Sequence[str], int8_fast: bool) -> list[Artifact]:
    """Artifacts in ``formats``: INT8 first when the device runs it fast (float first otherwise), then by format."""
    usable = [a for a in artifacts if a.format in formats]
    return sorted(usable, key=lambda a: ((a.precision == "int8") != int8_fast, formats.index(a.format)))


def _why_artifact(art: Artifact, cand: Candidate | None, forced: bool) -> str:
    if forced:
        return f"artifact {art.name} as requested"
    if art.precision == "int8":
        return f"artifact {art.name} (int8: this device runs INT8 fast)"
    if cand is not None and cand.int8_fast:
        return f"artifact {art.name} ({art.precision}; no int8 artifact this backend runs)"
    return f"artifact {art.name} ({art.precision}; INT8 would not be faster on this device)"


def plan(
    manifest: Manifest,
    root: Path,
    *,
    backend: str = "auto",
    device: str | None = None,
    artifact: str | None = None,
) -> list[Choice]:
    """Ways to run this bundle here, best first (auto may fall back to the next when one fails to load).

    Nothing is loaded; :func:`edgecls.runtime.doctor_report` shows the first choice.
    """
    if not manifest.artifacts:
        raise ConfigError(f"bundle {root}: the manifest lists no artifacts; re-export it")
    if backend != "auto" and backend not in BACKEND_NAMES:
        backend_module(backend)  # raises with the valid names
    forced = manifest.artifact(artifact) if artifact else None
    pool = (forced,) if forced else manifest.artifacts
    kind = device_kind(device)

    if backend != "auto":
        module = backend_module(backend)
        status = probe(backend)
        if not status.installed:
            from edgecls.runtime.backends import _missing

            raise _missing(backend, status)
        cands = backend_module(backend).candidates(status) if status.usable else []
        match = [c for c in cands if device is None or c.device.lower() == device.lower() or c.kind == kind]
        cand = match[0] if match else None
        arts = order_artifacts(pool, module.FORMATS, cand.int8_fast if cand else False)
        if not arts:
            have = ", ".join(f"{a.name} ({a.format})" for a in pool)
            runs = "/".join(module.FORMATS)
            if forced is not None:
                others = [n for n in BACKEND_NAMES if forced.format in backend_module(n).FORMATS]
                raise ConfigError(f"backend {backend!r} runs {runs} artifacts, and {forced.name!r} is {forced.format}; "
                                  f"backends for it: {', '.join(others)}")
            raise ConfigError(f"backend {backend!r} runs {runs} artifacts; this bundle has {have}")
        art = arts[0]
        reason = f"{backend} as requested; {_why_artifact(art, cand, forced is not None)}"
        return [Choice(art, _model_path(root, art, backend), backend, device, _precision_for(art, backend), reason,
                       cand)]

    if device is not None and kind is None:
        raise ConfigError(f"with backend 'auto', device must be cpu, gpu/cuda, npu or ane, got {device!r}")
    choices = []
    for cand in auto_candidates(kind=kind):
        arts = order_artifacts(pool, backend_module(cand.backend).FORMATS, cand.int8_fast)
        if not arts:
            continue
        art = arts[0]
        dev = device if device and any(c in device for c in ":.") else cand.device
        reason = f"{cand.why}; {_why_artifact(art, cand, forced is not None)}"
        choices.append(Choice(art, _model_path(root, art, cand.backend), cand.backend, dev,
                              _precision_for(art, cand.backend), reason, cand))
    if not choices:
        formats = sorted({a.format for a in pool})
        statuses = "; ".join(f"{s.name}: {s.reason or ', '.join(s.devices) or 'no device'}"
                             for s in map(probe, BACKEND_NAMES))
        where = f" with a {kind} device" if kind else ""
        raise ConfigError(
            f"no installed backend runs this bundle's {'/'.join(formats)} artifacts{where} here ({statuses}); "
            'install one, e.g. pip install "edgecls[runtime]"'
        )
    return choices


def _find_bundle(model: Path) -> tuple[Path, Manifest, Artifact] | None:
    """The bundle a model file belongs to (a manifest.json up to two folders above that lists it)."""
    target = model.resolve()
    for folder in list(target.parents)[:3]:
        if (folder / MANIFEST_NAME).is_file():
            manifest = Manifest.load(folder)
            for art in manifest.artifacts:
                if (folder / art.path).resolve() == target:  # contained or not: check_artifact_files decides
                    return folder, manifest, art
    return None


def openvino_metadata(path: str | Path) -> dict[str, str]:
    """The ``edgecls.*`` entries the exporter stores in an OpenVINO IR's ``rt_info/edgecls`` (dots as underscores)."""
    from edgecls.runtime.backends.openvino import core

    model = core().read_model(str(path))
    meta = {}
    for key in ("manifest", "class_names", "thresholds", "preprocess"):
        for name in (f"edgecls_{key}", key, f"edgecls.{key}"):
            if model.has_rt_info(["edgecls", name]):
                meta[META_PREFIX + key] = model.get_rt_info(["edgecls", name]).astype(str)
                break
    return meta


def _manifest_from_metadata(model: Path) -> tuple[Manifest, Artifact]:
    """A bare ONNX file or OpenVINO IR: its ``edgecls.*`` metadata stands in for the bundle."""
    import json

    from edgecls.runtime.backends import has_qdq

    suffix = model.suffix.lower()
    meta = onnx_metadata(model) if suffix == ".onnx" else openvino_metadata(model)
    if META_PREFIX + "manifest" not in meta and META_PREFIX + "class_names" not in meta:
        raise ConfigError(
            f"{model}: no edgecls metadata in this model file and no manifest.json around it; pass the bundle folder "
            "made by `edgecls export`"
        )
    try:
        if META_PREFIX + "manifest" in meta:
            manifest = Manifest.from_dict(json.loads(meta[META_PREFIX + "manifest"]), where=f"{model} metadata")
        else:
            names = json.loads(meta[META_PREFIX + "class_names"])
            manifest = Manifest(class_names=names, preprocess=PreprocessSpec.from_dict(
                json.loads(meta[META_PREFIX + "preprocess"])), backbone="unknown",
                thresholds=json.loads(meta.get(META_PREFIX + "thresholds", "null")) or [0.5] * len(names))
        thresholds = json.loads(meta[META_PREFIX + "thresholds"]) if META_PREFIX + "thresholds" in meta \
            else manifest.thresholds
    except (KeyError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{model}: broken edgecls metadata ({exc})") from None
    if suffix == ".onnx":
        fmt, precision = "onnx", ("int8" if has_qdq(model) else "fp32")
    else:
        from edgecls.runtime.backends.openvino import core

        ops = {op.get_type_name() for op in core().read_model(str(model)).get_ops()}
        fmt, precision = "openvino", ("int8" if "FakeQuantize" in ops else "fp32")
    art = Artifact(name=model.stem, path=model.resolve().name, format=fmt, precision=precision, sha256="",
                   thresholds=tuple(thresholds))
    return manifest, art


# ---------------------------------------------------------------------------------------------------------------------


class Classifier:
    """Multi-label classifier over a bundle folder or a single model file, on the best backend here.

    Args:
        bundle_or_model: an ``edgecls export`` bundle folder, or one of its model files, or a bare ONNX file that
            carries edgecls metadata.
        backend: ``auto`` (the fastest installed backend that works here) or onnxruntime, openvino, tensorrt, coreml.
        device: narrows ``auto`` (cpu, gpu/cuda, npu, ane) or names the backend's device (``GPU.1``, ``cuda:0``).
        artifact: force one artifact of the bundle by name, e.g. ``onnx-int8``.
        threads: CPU threads for inference (backend default when None; at most the CPUs this process can use).
        precision: override the precision asked of the backend (default: what the artifact's parity run used).
        verify: check the model files against the sha256 the bundle's manifest records (hashed while the engine
            loads them; a file that differs raises :class:`edgecls.errors.IntegrityError` before the classifier
            exists, so it never runs); paths that leave the bundle are always refused, before anything is read.
        max_pixels: images (paths, encoded bytes) whose header declares more pixels are refused before decoding
            (None or 0: no limit); ~100 MP by default.
    """

    def __init__(
        self,
        bundle_or_model: str | Path,
        backend: str = "auto",
        device: str | None = None,
        *,
        artifact: str | None = None,
        threads: int | None = None,
        precision: str | None = None,
        verify: bool = True,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        start = time.perf_counter()
        check_threads(threads)
        if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                       or max_pixels < 0):
            raise ConfigError(f"--max-pixels must be a whole number >= 0 (0: no limit), got {max_pixels!r}")
        self.max_pixels = max_pixels or None
        source = Path(bundle_or_model)
        if source.is_dir():
            root, manifest = source, Manifest.load(source)
            choices = plan(manifest, root, backend=backend, device=device, artifact=artifact)
        elif source.exists():
            found = _find_bundle(source)
            if found is not None:
                root, manifest, art = found
            elif source.suffix.lower() in (".onnx", ".xml"):
                if source.suffix.lower() == ".xml":
                    probe_status = probe("openvino")
                    if not probe_status.installed:
                        from edgecls.runtime.backends import _missing

                        raise _missing("openvino", probe_status)
                root = source.resolve().parent
                manifest, art = _manifest_from_metadata(source)
                verify = False  # a bare model file: no manifest records its sha256
            else:
                raise ConfigError(f"{source}: no manifest.json found around this model; pass the bundle folder")
            if artifact and artifact != art.name:
                raise ConfigError(f"artifact={artifact!r} does not apply to the single model file {source.name}")
            if source.suffix.lower() in _SUFFIX_FORMAT and art.format not in ("tensorrt",):
                art = _with_format(art, _SUFFIX_FORMAT[source.suffix.lower()])
            single = Manifest(**{**_manifest_fields(manifest), "artifacts": (art,)})
            choices = plan(single, root, backend=backend, device=device, artifact=None)
        else:
            raise ConfigError(f"{source}: no such bundle folder or model file")
        if precision is not None:
            choices = [Choice(c.artifact, c.path, c.backend, c.device, normalize_precision(precision), c.reason,
                              c.candidate) for c in choices]

        self.manifest = manifest
        self.root = root
        self.backend, self.choice = self._open(root, choices, threads=threads, auto=backend == "auto", verify=verify,
                                               img_size=manifest.preprocess.img_size)
        self.artifact = self.choice.artifact
        self.class_names = tuple(manifest.class_names)
        self.thresholds = np.asarray(self.artifact.thresholds or manifest.thresholds, dtype=np.float64)
        if len(self.thresholds) != len(self.class_names):
            raise ConfigError(f"artifact {self.artifact.name}: {len(self.thresholds)} thresholds for "
                              f"{len(self.class_names)} classes")
        if manifest.output_activation != "sigmoid":
            raise ConfigError(f"output_activation {manifest.output_activation!r} is not supported (only sigmoid)")
        self.spec: PreprocessSpec = manifest.preprocess
        self.reason = self.choice.reason
        self.load_seconds = time.perf_counter() - start
        log.info("%s: %s on %s (%s) - %s", Path(bundle_or_model).name, self.artifact.name, self.backend.name,
                 self.backend.device, self.reason)

    @staticmethod
    def _open(root: Path, choices: list[Choice], *, threads: int | None, auto: bool, verify: bool,
              img_size: int) -> tuple[Backend, Choice]:
        from concurrent.futures import ThreadPoolExecutor

        failures = []
        for choice in choices:
            check_artifact_files(root, choice.artifact, choice.path, verify=False)
            module = backend_module(choice.backend)
            # The sha256 check runs beside the engine's load (hashlib and the engines release the GIL), so it costs
            # little load time; its verdict comes before __init__ returns, so a file that differs never runs.
            hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgecls-verify") if verify else None
            verdict = hashing.submit(verify_artifact_files, root, choice.artifact, choice.path) if hashing else None
            try:
                backend = module.load(choice.path, device=choice.device, threads=threads, precision=choice.precision)
            except Exception as exc:
                _raise_verdict(verdict)  # a changed file explains a failed load best
                if isinstance(exc, ConfigError) or (not auto and isinstance(exc, EdgeclsError)):
                    raise
                if not auto:
                    from edgecls.errors import UnsupportedOption

                    raise UnsupportedOption(f"{choice.backend} cannot load {choice.path} (artifact "
                                            f"{choice.artifact.name!r}): {one_line(exc)}") from exc
                text = one_line(exc)
                failures.append(f"{choice.backend} with {choice.artifact.name}: {text}")
                log.warning("auto: %s cannot run %s here (%s); trying the next choice", choice.backend,
                            choice.artifact.name, text)
                continue
            finally:
                if hashing is not None:
                    hashing.shutdown(wait=True)
            try:
                _raise_verdict(verdict)
                check_input_size(backend, img_size, where=f"bundle {root}, artifact {choice.artifact.name!r}")
            except ConfigError:
                backend.close()
                raise
            if failures:
                choice = Choice(choice.artifact, choice.path, choice.backend, choice.device, choice.precision,
                                f"{choice.reason} (skipped: {' | '.join(failures)})", choice.candidate)
            backend.reason = choice.reason
            return backend, choice
        from edgecls.errors import UnsupportedOption

        raise UnsupportedOption("no backend could run this bundle here: " + " | ".join(failures))

    # ------------------------------------------------------------------------------------------------------------
    @overload
    def predict(self, image: ImageSource) -> Prediction: ...

    @overload
    def predict(self, image: list[ImageSource] | tuple[ImageSource, ...]) -> list[Prediction]: ...

    def predict(self, image: Any) -> Prediction | list[Prediction]:
        """Classify one image: a path, an HxWx3 BGR uint8 array or encoded bytes.

        A list (or tuple) of images gives a list of predictions, in order, as :meth:`predict_batch` does.
        """
        if isinstance(image, (list, tuple)):
            return self.predict_batch(image)
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[ImageSource], *, batch_size: int = 32) -> list[Prediction]:
        """Classify several images, in order; an unreadable one raises :class:`edgecls.errors.DataError`."""
        if isinstance(images, (str, Path, bytes, bytearray, np.ndarray)):
            raise ConfigError(f"predict_batch takes a list of images, got one {type(images).__name__}; use "
                              "predict(image) for a single image")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        results: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            tensors = np.stack([preprocess(img, self.spec, max_pixels=self.max_pixels) for img in chunk])
            names = [_source_name(img, start + i) for i, img in enumerate(chunk)]
            results.extend(self.predictions(self.probs(tensors), names))
        return results

    def probs(self, batch: np.ndarray) -> np.ndarray:
        """Sigmoid probabilities (N, K) for a preprocessed float32 (N, 3, H, W) batch."""
        logits = self.backend.infer(batch)
        if logits.ndim != 2 or logits.shape[1] != len(self.class_names):
            raise ConfigError(f"{self.artifact.name}: the model returns shape {logits.shape}, the manifest lists "
                              f"{len(self.class_names)} classes")
        return sigmoid(logits.astype(np.float32, copy=False))

    def predictions(self, probs: np.ndarray, sources: Sequence[str]) -> list[Prediction]:
        """Turn (N, K) probabilities into :class:`Prediction` rows using this artifact's thresholds."""
        on = probs >= self.thresholds
        names = self.class_names
        return [
            Prediction(src, p, tuple(n for n, flag in zip(names, row) if flag), names)
            for src, p, row in zip(sources, probs, on)
        ]

    def error_row(self, source: str, message: str) -> Prediction:
        return Prediction(source, None, (), self.class_names, error=message)

    def info(self) -> dict[str, Any]:
        """What runs and why: artifact, backend details (device, precision, providers), thresholds, timings."""
        return {
            "bundle": str(self.root),
            "artifact": {"name": self.artifact.name, "path": str(self.choice.path), "format": self.artifact.format,
                         "precision": self.artifact.precision},
            "precision": self.precision_name,
            "backend": self.backend.info(),
            "reason": self.reason,
            "class_names": list(self.class_names),
            "thresholds": [float(t) for t in self.thresholds],
            "preprocess": self.spec.to_dict(),
            "load_seconds": round(self.load_seconds, 4),
        }

    @property
    def precision_name(self) -> str:
        """The artifact's precision as every command names it (:func:`edgecls.manifest.precision_name`)."""
        return precision_name(self.artifact, self.backend.precision)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        b = self.backend
        return f"<Classifier {self.artifact.name} on {b.name}/{b.device} ({self.precision_name})>"


def _raise_verdict(verdict: Any) -> None:
    """Wait for a background :func:`verify_artifact_files` and raise what it raised (an IntegrityError)."""
    if verdict is None:
        return
    error = verdict.exception()
    if error is not None:
        raise error


def _source_name(image: Any, index: int) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    kind = "bytes" if isinstance(image, (bytes, bytearray)) else "array"
    return f"<{kind} {index}>"


def _with_format(art: Artifact, fmt: str) -> Artifact:
    from dataclasses import replace

    return art if art.format == fmt else replace(art, format=fmt)


def _manifest_fields(manifest: Manifest) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(manifest, f.name) for f in fields(manifest)}

"""`Classifier`: a bundle (or one model file) on the best backend here, images in, labels out.

Preprocessing is :func:`edgecls.preprocess.preprocess` driven by the bundle's :class:`PreprocessSpec`; the model
returns logits, the runtime applies the sigmoid and each label is on when its probability reaches the threshold tuned
for the artifact that runs (every artifact of a bundle carries its own thresholds). Which artifact, backend, device and
precision run is :func:`edgecls.runtime.plan.plan`'s choice; loading goes through the one fallback loop,
:func:`edgecls.runtime.backends.open_first`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, overload

import numpy as np

from edgecls.errors import ConfigError
from edgecls.manifest import Artifact, Manifest, precision_name
from edgecls.metrics import sigmoid
from edgecls.preprocess import (
    DEFAULT_MAX_PIXELS,
    ImageSource,
    Preprocessor,
    PreprocessSpec,
    is_pixels,
    new_input,
    tensor_to_pixels,
)
from edgecls.runtime.backends import (
    LATENCY,
    Attempt,
    Backend,
    check_input_size,
    check_mode,
    check_threads,
    missing_backend,
    normalize_precision,
    open_first,
    probe,
)
from edgecls.runtime.metadata import find_bundle, manifest_from_model
from edgecls.runtime.plan import Choice, artifact_already_verified, check_artifact_files, plan, verify_artifact_files

log = logging.getLogger("edgecls.runtime")

_SUFFIX_FORMAT = {".onnx": "onnx", ".xml": "openvino", ".mlpackage": "coreml", ".mlmodel": "coreml",
                  ".engine": "tensorrt", ".plan": "tensorrt", ".tflite": "litert"}


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


# ---------------------------------------------------------------------------------------------------------------------


class PendingProbs:
    """A batch :meth:`Classifier.submit` started: :meth:`result` waits for it and gives its probabilities."""

    __slots__ = ("_clf", "_handle", "_probs")

    def __init__(self, clf: "Classifier", handle: Any, probs: np.ndarray | None = None) -> None:
        self._clf, self._handle, self._probs = clf, handle, probs

    def result(self) -> np.ndarray:
        if self._probs is None:
            self._probs = self._clf._to_probs(self._handle.result())
            self._handle = None
        return self._probs


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
        mode: ``latency`` (default: one image at a time, cameras, single requests) or ``throughput`` (batches where
            only the total counts: folder predict, video files, a server's or a Ray actor's batches): OpenVINO's
            THROUGHPUT hint with a batch split over async infer requests, ONNX Runtime sub-batches side by side on
            single-threaded, non-spinning sessions (see :data:`edgecls.runtime.backends.MODES`).
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
        mode: str = LATENCY,
    ) -> None:
        start = time.perf_counter()
        check_threads(threads)
        self.mode = check_mode(mode)
        if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                       or max_pixels < 0):
            raise ConfigError(f"--max-pixels must be a whole number >= 0 (0: no limit), got {max_pixels!r}")
        self.max_pixels = max_pixels or None
        source = Path(bundle_or_model)
        if source.is_dir():
            root, manifest = source, Manifest.load(source)
            choices = plan(manifest, root, backend=backend, device=device, artifact=artifact)
        elif source.exists():
            found = find_bundle(source)
            if found is not None:
                root, manifest, art = found
            elif source.suffix.lower() in (".onnx", ".xml"):
                if source.suffix.lower() == ".xml":
                    probe_status = probe("openvino")
                    if not probe_status.installed:
                        raise missing_backend("openvino", probe_status)
                root = source.resolve().parent
                manifest, art = manifest_from_model(source)
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
                                               img_size=manifest.preprocess.img_size, mode=self.mode)
        self.artifact = self.choice.artifact
        self.class_names = tuple(manifest.class_names)
        self.thresholds = np.asarray(self.artifact.thresholds or manifest.thresholds, dtype=np.float64)
        if len(self.thresholds) != len(self.class_names):
            raise ConfigError(f"artifact {self.artifact.name}: {len(self.thresholds)} thresholds for "
                              f"{len(self.class_names)} classes")
        if manifest.output_activation != "sigmoid":
            raise ConfigError(f"output_activation {manifest.output_activation!r} is not supported (only sigmoid)")
        self.spec: PreprocessSpec = manifest.preprocess
        self.input_kind: str = self.artifact.input  # what the engine takes: edgecls.preprocess.INPUT_KINDS
        self.reason = self.choice.reason
        self.load_seconds = time.perf_counter() - start
        log.info("%s: %s on %s (%s) - %s", Path(bundle_or_model).name, self.artifact.name, self.backend.name,
                 self.backend.device, self.reason)

    @staticmethod
    def _open(root: Path, choices: list[Choice], *, threads: int | None, auto: bool, verify: bool,
              img_size: int, mode: str = LATENCY) -> tuple[Backend, Choice]:
        attempts = [Attempt(c.backend, c.path, c.device, c.precision, c.reason, f"{c.backend} with {c.artifact.name}",
                            c.artifact.name) for c in choices]
        by_attempt = dict(zip(map(id, attempts), choices))

        @contextlib.contextmanager
        def guard(att: Attempt) -> Iterator[Any]:
            choice = by_attempt[id(att)]
            check_artifact_files(root, choice.artifact, choice.path, verify=False)
            if not verify or artifact_already_verified(root, choice.artifact, choice.path):
                yield _no_verdict  # nothing to hash: no thread (starting one costs the engine's load the GIL)
                return
            # The sha256 check runs beside the engine's load (hashlib and the engines release the GIL), so it costs
            # little load time; its verdict comes before __init__ returns, so a file that differs never runs.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgecls-verify") as hashing:
                verdict = hashing.submit(verify_artifact_files, root, choice.artifact, choice.path)
                yield lambda: _raise_verdict(verdict)

        def accept(backend: Backend, att: Attempt) -> None:
            where = f"bundle {root}, artifact {att.artifact!r}"
            check_input_size(backend, img_size, where=where)
            kind = by_attempt[id(att)].artifact.input
            if is_pixels(kind) != bool(getattr(backend, "pixels", False)):
                takes = "uint8 NHWC pixels" if backend.pixels else "a float32 NCHW tensor"
                raise ConfigError(f"{where}: the manifest says its input is {kind}, but the model "
                                  f"{Path(str(backend.model_path)).name} takes {takes}; the manifest and the model "
                                  "disagree, re-export the bundle")

        backend, index, failures = open_first(attempts, threads=threads, explicit=not auto, guard=guard,
                                              accept=accept, subject="run this bundle", mode=mode)
        choice = choices[index]
        if failures:
            choice = Choice(choice.artifact, choice.path, choice.backend, choice.device, choice.precision,
                            f"{choice.reason} (skipped: {' | '.join(failures)})", choice.candidate)
        backend.reason = choice.reason
        return backend, choice

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
        pre = self.preprocessor()
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            tensors = self.new_input(len(chunk))
            for i, img in enumerate(chunk):
                pre(img, tensors[i], max_pixels=self.max_pixels)
            names = [_source_name(img, start + i) for i, img in enumerate(chunk)]
            results.extend(self.predictions(self.probs(tensors), names))
        return results

    def preprocessor(self) -> Preprocessor:
        """A :class:`~edgecls.preprocess.Preprocessor` that makes what this artifact takes (:attr:`input_kind`): the
        float32 (3, H, W) tensor, or for a ``-u8`` artifact the resized uint8 (H, W, 3) pixels that its graph
        normalises. One per thread; its rows go into :meth:`new_input` batches and then to :meth:`probs`."""
        return Preprocessor(self.spec, output=self.input_kind)

    def new_input(self, n: int) -> np.ndarray:
        """An uninitialised batch of ``n`` inputs of :attr:`input_kind` (rows for :meth:`preprocessor`)."""
        return new_input(self.spec, self.input_kind, n)

    def to_input(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` as this artifact takes it: a float32 (N, 3, H, W) tensor becomes uint8 pixels for a ``-u8``
        artifact (rounded back: exact for a tensor edgecls's preprocessing made); anything else is returned as is
        (the engine checks it)."""
        if self.pixels:
            arr = np.asarray(batch)
            if arr.ndim == 4 and arr.shape[1] == 3 and arr.dtype != np.uint8:
                return tensor_to_pixels(arr, self.spec, self.input_kind)
        return batch

    @property
    def pixels(self) -> bool:
        """Whether this artifact takes uint8 pixels (normalising inside the engine) instead of the float tensor."""
        return is_pixels(self.input_kind)

    def probs(self, batch: np.ndarray) -> np.ndarray:
        """Sigmoid probabilities (N, K) for a preprocessed batch: the float32 (N, 3, H, W) tensor, which every
        artifact takes (a ``-u8`` artifact gets it back as pixels, exact for a tensor edgecls made), or what
        :meth:`preprocessor` makes for this artifact (uint8 (N, H, W, 3) pixels for a ``-u8`` one)."""
        return self._to_probs(self.backend.infer(self.to_input(batch)))

    @property
    def lanes(self) -> int:
        """Batches the engine runs side by side (its throughput-mode streams; 1 in the latency mode): what a pipeline
        keeps in flight with :meth:`submit`."""
        return max(1, int(getattr(self.backend, "lanes", 1) or 1))

    def submit(self, batch: np.ndarray) -> "PendingProbs":
        """:meth:`probs` started on the engine's next lane without waiting: ``result()`` of the handle gives them.
        Keep ``batch`` unchanged until then (the engine may read it in place); up to :attr:`lanes` run at once."""
        if self.lanes == 1:  # nothing runs side by side: now, through probs
            return PendingProbs(self, None, self.probs(batch))
        return PendingProbs(self, self.backend.submit(self.to_input(batch)))

    def _to_probs(self, logits: np.ndarray) -> np.ndarray:
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
            "input": self.input_kind,
            "mode": self.mode,
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


def _no_verdict() -> None:
    return None


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


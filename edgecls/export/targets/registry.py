"""The export target registry: one :class:`Target` per output format, looked up by name (re-exported by
:mod:`edgecls.export.targets`).

Each family module (``onnx``, ``openvino``, ``coreml``, ``tensorrt``) registers its targets with :func:`register`
when it is imported; importing a family module imports nothing heavy (torch, onnx, openvino ... are imported inside
the build functions), so :func:`list_targets` works with no extras installed.

Adding a target means adding one file here that calls :func:`register`, plus its name in ``_FAMILIES``.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgecls._deps import EXTRA_OF  # the pip extra of each module a target may need
from edgecls.errors import ConfigError
from edgecls.preprocess import FLOAT_INPUT

if TYPE_CHECKING:  # pragma: no cover
    from edgecls.export.context import ExportContext

log = logging.getLogger("edgecls.export")

ALL = "all"
_FAMILIES = ("onnx", "openvino", "coreml", "tensorrt", "litert", "executorch")
_REGISTRY: dict[str, "Target"] = {}


# ExportConfig fields every target takes; a target lists the others it uses in ``Target.options``.
COMMON_OPTIONS = frozenset(
    {"targets", "data", "out", "force", "allow_parity_failure", "parity_split", "seed", "resize_numerics"}
)


@dataclass(frozen=True)
class Runner:
    """How the parity check runs an artifact: which runtime backend, on which device, with which precision hint.

    ``emulate_qdq`` (onnxruntime only) runs a Q/DQ file by its ONNX definition instead of this CPU's fused int8
    kernels: for a file meant for another engine (TensorRT), whose int8 arithmetic the host CPU's kernels do not
    reproduce (see :mod:`edgecls.runtime.backends.onnxruntime`).
    """

    backend: str
    device: str | None = None
    precision_hint: str | None = None
    path: str = ""  # the file to load, relative to the bundle (defaults to the artifact's path)
    emulate_qdq: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "device": self.device, "precision_hint": self.precision_hint,
                "path": self.path, "emulate_qdq": self.emulate_qdq}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Runner":
        return cls(backend=data["backend"], device=data.get("device"), precision_hint=data.get("precision_hint"),
                   path=data.get("path", ""), emulate_qdq=bool(data.get("emulate_qdq", False)))


@dataclass
class Built:
    """What a target's ``build`` wrote into its folder of the bundle.

    Attributes:
        path: The model file (or package folder), relative to the bundle root.
        precision: The artifact's precision (fp32, fp16, int8, int8-weights).
        parent: The artifact (target name) it was derived from, for quantized artifacts.
        calibration: Calibration summary (images, split, method ...) for quantized artifacts.
        details: Target specifics recorded in the manifest (exporter, node counts, resolved settings ...).
        notes: Lines the export prints at the end (e.g. how to build a TensorRT engine on the device).
        finalize: ``finalize(model_path, metadata)`` embeds string metadata into the model file once the
            thresholds are tuned (ONNX metadata_props, OpenVINO rt_info, CoreML user metadata); None when the
            format has no metadata of its own.
        input: What the model takes (:data:`edgecls.preprocess.INPUT_KINDS`): the float32 NCHW tensor, or uint8
            NHWC pixels that the graph normalises itself (the ``-u8`` targets).
    """

    path: str
    precision: str
    parent: str | None = None
    calibration: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    finalize: Callable[[Path, dict[str, str]], None] | None = None
    input: str = FLOAT_INPUT


@dataclass(frozen=True)
class Target:
    """One export format.

    Attributes:
        name: What ``--target`` takes (``onnx``, ``openvino-int8`` ...); also the artifact's folder in the bundle.
        format: The artifact format (onnx, openvino, coreml, tensorrt); the runtime picks a backend by it.
        suffix: Suffix of the model file the target writes (``.onnx``, ``.xml``, ``.mlpackage``, ``.engine``).
        extra: The pip extra that installs what it needs (``pip install "edgecls[<extra>]"``).
        precision: Nominal precision of the artifact (fp32, fp16, int8, int8-weights).
        options: ExportConfig fields this target uses beyond the common ones; setting another field away from its
            default when no chosen target uses it is an :class:`~edgecls.errors.UnsupportedOption`.
        doc: One paragraph: what the artifact is and how it is made.
        requires: Python modules it imports (checked by :meth:`available`).
        build: ``build(ctx, folder) -> Built``; writes the artifact into ``folder``.
        runner: ``runner(artifact, bundle) -> (Runner | None, reason)``: how the parity check runs an artifact of
            this target on this machine, or why it cannot (used at export and by ``edgecls parity``).
        check: Optional ``check() -> (ok, reason)`` beyond installed modules; ``reason`` also explains a limited
            output when ``ok`` (e.g. no GPU: the portable ONNX instead of an engine).
        preflight: Optional ``preflight(config)`` that raises before anything is written when the configuration
            asks for something this machine cannot give (e.g. ``require_engine`` without a GPU).
        execute: Optional ``execute(model_path, images, runner) -> (logits, info)`` for an artifact no runtime
            backend runs (an ExecuTorch program): the parity check calls it instead of
            :func:`edgecls.export.parity.run_backend`, in the exporter's environment.
        accuracy_aware: Optional ``accuracy_aware(ctx, folder) -> Built`` for INT8 targets: the same artifact made
            by NNCF's accuracy-aware quantization (layers back to float until the budget holds), the first fix
            the export tries when post-training quantization breaks a budget (:mod:`edgecls.export.fixes`).
    """

    name: str
    format: str
    suffix: str
    extra: str
    precision: str
    options: frozenset[str]
    doc: str
    requires: tuple[str, ...]
    build: Callable[["ExportContext", Path], Built] = field(repr=False, compare=False)
    runner: Callable[[Any, Path], tuple[Runner | None, str]] = field(repr=False, compare=False)
    check: Callable[[], tuple[bool, str]] | None = field(default=None, repr=False, compare=False)
    preflight: Callable[[Any], None] | None = field(default=None, repr=False, compare=False)
    execute: Callable[..., tuple[Any, dict[str, Any]]] | None = field(default=None, repr=False, compare=False)
    accuracy_aware: Callable[["ExportContext", Path], Built] | None = field(default=None, repr=False, compare=False)

    def run(self, model_path: Path, images: Any, runner: Runner) -> tuple[Any, dict[str, Any]]:
        """The artifact's logits on ``images`` and what ran them: through :attr:`execute` when the target has one,
        else through the runtime backend ``runner`` names."""
        if self.execute is not None:
            return self.execute(model_path, images, runner)
        from edgecls.export.parity import run_backend

        return run_backend(model_path, images, backend=runner.backend, device=runner.device,
                           precision_hint=runner.precision_hint, emulate_qdq=runner.emulate_qdq)

    def available(self) -> tuple[bool, str]:
        """Whether this machine can produce the target, and why not (or what it will be limited to)."""
        from edgecls._deps import has

        missing = [m for m in self.requires if not has(m)]
        if missing:
            extras = ",".join(dict.fromkeys(EXTRA_OF.get(m, self.extra) for m in missing))
            return False, f"{', '.join(missing)} not installed; install with: pip install \"edgecls[{extras}]\""
        if self.check is not None:
            return self.check()
        return True, ""

    def require(self) -> None:
        """Import every module the target needs or raise MissingDependency naming the extra.

        Import-time chatter of these libraries (coremltools warning about untested torch versions and its missing
        macOS-only native module, torch probing for CUDA) is muted while importing; nothing is changed after.
        """
        import logging

        from edgecls._deps import require

        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            for module in self.requires:
                require(module, extra=EXTRA_OF.get(module, self.extra))
        finally:
            logging.disable(previous)

    def export(self, ctx: "ExportContext", folder: Path, *, accuracy_aware: bool = False) -> Built:
        """Write this target's artifact into ``folder`` (created) and describe it; with ``accuracy_aware``, through
        :attr:`accuracy_aware` instead of :attr:`build`."""
        self.require()
        folder.mkdir(parents=True, exist_ok=True)
        build = self.accuracy_aware if accuracy_aware else self.build
        if build is None:
            raise ValueError(f"export target {self.name!r} has no accuracy-aware build")
        with quiet(f"target {self.name}"):
            return build(ctx, folder)

    def accepts(self, option: str) -> bool:
        return option in COMMON_OPTIONS or option in self.options


@contextlib.contextmanager
def quiet(what: str) -> Any:
    """Hold back the progress bars and warnings converters print (coremltools' tqdm bars, NNCF's rich bars, torch
    exporter progress) so the command prints our report; on failure the held-back text goes to the debug log."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        log.debug("%s printed before failing:\n%s", what, buffer.getvalue()[-4000:])
        raise


def register(target: Target) -> Target:
    """Add ``target`` to the registry (a second target with the same name is a programming error)."""
    if target.name in _REGISTRY and _REGISTRY[target.name] is not target:
        raise ValueError(f"export target {target.name!r} is registered twice")
    if not target.doc or not target.suffix.startswith(".") or not target.extra:
        raise ValueError(f"export target {target.name!r} needs a docstring, a suffix and an extra")
    _REGISTRY[target.name] = target
    return target


def _load() -> dict[str, Target]:
    """The registry in family order (``_FAMILIES``), each family's targets in the order it registers them, whichever
    family module happened to be imported first."""
    for family in _FAMILIES:
        importlib.import_module(f"edgecls.export.targets.{family}")

    def family_of(target: Target) -> int:
        module = getattr(target.build, "__module__", "").rsplit(".", 1)[-1]
        return _FAMILIES.index(module) if module in _FAMILIES else len(_FAMILIES)

    return {t.name: t for t in sorted(_REGISTRY.values(), key=family_of)}


def list_targets() -> list[Target]:
    """Every registered target, in a stable order (float before quantized, family by family)."""
    return list(_load().values())


def get_target(name: str) -> Target:
    """The target called ``name``; an unknown name is a ConfigError naming the closest valid one."""
    registry = _load()
    key = str(name).strip().lower()
    if key in registry:
        return registry[key]
    valid = [*registry, ALL]
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown export target {name!r}{hint}; valid: {', '.join(valid)}")


def expand_targets(names: tuple[str, ...] | list[str]) -> list[Target]:
    """Resolve names (``all`` = every target this machine can produce) to targets, in registry order, no repeats."""
    if not names:
        raise ConfigError(f"no export target given; valid: {', '.join([*_load(), ALL])}")
    chosen: dict[str, Target] = {}
    for name in names:
        if str(name).strip().lower() == ALL:
            for target in list_targets():
                if target.available()[0]:
                    chosen[target.name] = target
        else:
            target = get_target(name)
            chosen[target.name] = target
    order = list(_load())
    return sorted(chosen.values(), key=lambda t: order.index(t.name))

"""Writing a bundle: into a temporary folder beside the destination, renamed into place only when complete, so a
crash, Ctrl-C or failed check never leaves a half-written bundle where a deployment would find it; and its model card.

The layout and the data files are :mod:`edgecls.bundle`'s.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from edgecls.errors import ConfigError
from edgecls.manifest import MANIFEST_NAME, Manifest
from edgecls.preprocess import is_pixels

log = logging.getLogger("edgecls.export")


class BundleWriter:
    """A bundle being written: ``tmp`` until :meth:`commit` renames it onto ``out``."""

    def __init__(self, out: Path, *, force: bool) -> None:
        self.out = out
        self.force = force
        self.tmp: Path | None = None

    def check(self) -> None:
        """Refuse an existing destination (unless ``force`` and it is a bundle) or an unwritable parent, before any
        work is done; remove what a killed export over the same destination left beside it (see
        :meth:`remove_leftovers`)."""
        out = self.out
        if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
            pass  # an empty folder is replaced like a missing one
        elif out.exists() or out.is_symlink():
            if not out.is_dir():
                raise ConfigError(f"{out}: exists and is not a folder; choose another --out")
            if not self.force:
                raise ConfigError(f"{out}: already exists; pass --force to replace it, or choose another --out")
            if any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
                raise ConfigError(f"{out}: exists and is not an edgecls bundle (no {MANIFEST_NAME}); refusing to "
                                  "replace it even with --force")
        parent = out.parent
        probe = parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise ConfigError(f"{out}: cannot write there ({probe} is not a writable folder); choose another --out")
        self.remove_leftovers()

    def remove_leftovers(self) -> list[Path]:
        """Remove the temporary folders of an export over ``out`` whose process is gone (killed): the half-written
        bundle (``.{name}.*.partial``), the work folder (``*.work``) and a replaced bundle (``*.old``); only names of
        exactly that pattern, and never those of an export still running."""
        from edgecls._io import remove_stale_temps

        removed = remove_stale_temps(self.out.parent, [self.out.name], (".partial", ".work", ".old"))
        for path in removed:
            log.info("export: removed %s, left by an earlier export that did not finish", path)
        return removed

    def _mkdtemp(self, suffix: str) -> Path:
        from edgecls._io import temp_prefix

        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=temp_prefix(self.out.name), suffix=suffix, dir=self.out.parent))
        except OSError as exc:
            raise ConfigError(f"{self.out}: cannot write there ({exc.strerror or exc}); choose another --out") from None

    def open(self) -> Path:
        self.tmp = self._mkdtemp(".partial")
        return self.tmp

    @contextlib.contextmanager
    def workdir(self) -> Iterator[Path]:
        """A scratch folder beside ``out`` (``.{name}.{pid}-XXXXXXXX.work``), removed afterwards; a killed export's
        is removed by the next export over ``out``."""
        work = self._mkdtemp(".work")
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _permissions(self) -> None:
        """Temporary files are private (0600/0700); a finished bundle gets the usual umask permissions."""
        assert self.tmp is not None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)
        for path in self.tmp.rglob("*"):
            if not path.is_symlink():
                os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)

    def commit(self) -> Path:
        """Move the finished bundle onto ``out`` (replacing an old bundle when forced)."""
        assert self.tmp is not None
        self._permissions()
        old = None
        if self.out.exists():
            old = self._mkdtemp(".old")
            os.rmdir(old)
            self.out.rename(old)
        try:
            self.tmp.rename(self.out)
        except OSError:
            if old is not None:
                old.rename(self.out)
            raise
        self.tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    def park(self, suffix: str) -> Path:
        """Keep a bundle that failed a check beside ``out`` (as ``<out><suffix>``), never at ``out`` itself.

        Nothing that exists is replaced: when ``<out><suffix>`` is taken (an earlier failed export the user may be
        inspecting, or anything else), the first free ``<out><suffix>-2``, ``-3`` ... is used."""
        assert self.tmp is not None
        self._permissions()
        for n in itertools.count(1):
            dest = self.out.with_name(self.out.name + suffix + ("" if n == 1 else f"-{n}"))
            if dest.exists() or dest.is_symlink():
                continue
            try:
                os.mkdir(dest)  # claim the name (another export may race for it), then rename onto the empty folder
            except FileExistsError:
                continue
            try:
                os.rename(self.tmp, dest)
            except OSError:
                os.rmdir(dest)
                raise
            break
        self.tmp = None
        return dest

    def discard(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


# ---------------------------------------------------------------------------------------------------------------------
# README.md


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def _num(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec)


def model_card(manifest: Manifest, parity: dict[str, Any], *, sizes: dict[str, float], notes: list[str]) -> str:
    """The bundle's README.md: what the model is, how every artifact did, and how to run it."""
    pre = manifest.preprocess
    size = pre.img_size
    ref = parity.get("reference", {})
    pixel_arts = [a for a in manifest.artifacts if is_pixels(a.input)]
    pixel_lines = [f"- pixel-input artifacts ({', '.join(a.name for a in pixel_arts)}): input `{manifest.input_name}` "
                   f"is uint8 NHWC (batch, {size}, {size}, 3), the pixels after the resize/crop in the order their "
                   f"manifest `input` says ({', '.join(sorted({a.input for a in pixel_arts}))}); the scaling, "
                   "mean/std, channel order and layout change run inside the model"] if pixel_arts else []
    lines = [
        f"# {manifest.backbone} multi-label classifier ({manifest.num_classes} classes)",
        "",
        f"Exported by edgecls {manifest.versions.get('edgecls', '')} on {manifest.created}. "
        f"Source checkpoint sha256 `{manifest.source_checkpoint_sha256[:16]}...`.",
        "",
        "## Classes",
        "",
        "| # | class | threshold (PyTorch) |",
        "| --- | --- | --- |",
        *[f"| {i} | {name} | {t:.4f} |" for i, (name, t) in enumerate(zip(manifest.class_names, manifest.thresholds))],
        "",
        "## Input and output",
        "",
        f"- input `{manifest.input_name}`: float32 NCHW (batch, 3, {size}, {size}), RGB",
        f"- preprocessing: resize `{pre.resize}` (crop_pct {pre.crop_pct}, {pre.interpolation}, "
        f"{pre.resize_numerics} numerics) to {size}x{size}, "
        f"pixels x {pre.scale:.6g}, minus mean {list(pre.mean)}, divided by std {list(pre.std)}",
        *pixel_lines,
        f"- output `{manifest.output_name}`: (batch, {manifest.num_classes}) logits; probability = sigmoid(logit); a "
        "label is present when its probability >= the artifact's threshold for it",
        "",
        "## Artifacts and parity",
        "",
        f"Measured on the `{parity.get('split', '')}` split ({parity.get('num_samples', 0)} images) against PyTorch "
        f"FP32 (mAP {_num(ref.get('map'), '.4f')}). Budgets: {parity.get('budgets', {})}.",
        "",
        "| artifact | file | precision | MB | ran on | max abs dp | mAP | mAP drop | agreement | ms (batch 1) "
        "| parity |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for art in manifest.artifacts:
        rep = art.parity or {}
        ms = art.details.get("latency_ms")
        if "not_run" in rep or not rep:
            lines.append(f"| {art.name} | `{art.path}` | {art.precision} | {sizes.get(art.name, 0):.1f} | - | - | - | "
                         f"- | - | - | not run here: {_cell(rep.get('not_run', ''))} |")
            continue
        verdict = "ok" if rep.get("passed") else "**FAILED**"
        lines.append(
            f"| {art.name} | `{art.path}` | {art.precision} | {sizes.get(art.name, 0):.1f} | {rep.get('backend')}/"
            f"{rep.get('device')} ({rep.get('backend_precision')}) | {_num(rep.get('max_abs_diff'), '.2e')} | "
            f"{_num(rep.get('map_artifact'), '.4f')} | {_num(rep.get('map_drop'), '+.4f')} | "
            f"{_num(rep.get('agreement'), '.4f')} | {_num(ms, '.2f')} | {verdict} "
            f"({_cell(rep.get('broken') or rep.get('budget'))}) |"
        )
    lines += [
        "",
        "Each artifact has its own per-class thresholds (re-tuned for maximum F1 on the parity split) in "
        "`manifest.json`; INT8 is not assumed to be faster: the latency column is what this machine measured.",
        "",
        "## How to run",
        "",
        "- With the edgecls runtime (numpy, OpenCV and one engine; no torch): `from edgecls.runtime import "
        "Classifier; Classifier('BUNDLE').predict('photo.jpg').labels`. It reads `manifest.json`, picks the "
        "fastest backend and artifact this machine runs, and applies the preprocessing and that artifact's "
        "thresholds. A bare `.onnx` or OpenVINO `.xml` from here works too (its metadata stands in for the manifest).",
        "- Re-check parity anywhere (a Mac for CoreML, the Jetson after building a TensorRT engine): "
        "`edgecls parity BUNDLE DATA` (updates `parity.json`).",
        "- Plain ONNX Runtime: every `.onnx` here carries class names, thresholds and preprocessing in its "
        "`metadata_props`:",
        "",
        "```python",
        "import json, numpy as np, onnxruntime as ort",
        "sess = ort.InferenceSession('onnx/model.onnx')",
        "meta = sess.get_modelmeta().custom_metadata_map",
        "names = json.loads(meta['edgecls.class_names'])",
        "thresholds = np.array(json.loads(meta['edgecls.thresholds']))",
        "x = ...  # (N, 3, H, W) float32 made as described under 'Input and output'",
        f"probs = 1 / (1 + np.exp(-sess.run(None, {{'{manifest.input_name}': x}})[0]))",
        "labels = [[n for n, p, t in zip(names, row, thresholds) if p >= t] for row in probs]",
        "```",
        "",
    ]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)

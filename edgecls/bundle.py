"""The bundle on disk: its file names, reading and writing its data files, the parity budgets' defaults, sha256 of
its files and the checks that a bundle (untrusted input) only names files inside itself, unchanged since export.

Core module: stdlib, numpy and other core modules only (never torch, the runtime, export or train), so the exporter,
the runtime and bench all read a bundle the same way.

Layout (one folder per target, named after it)::

    BUNDLE/
      manifest.json      the Manifest: classes, preprocessing, I/O, versions, per-artifact thresholds and parity
      parity.json        the parity report (budgets, reference, one entry per artifact); `edgecls parity` updates it
      reference.npz      the PyTorch reference logits on the parity split and the image names (parity without torch)
      export.json        the resolved ExportConfig
      README.md          model card
      onnx/model.onnx  onnx-int8/model.onnx  openvino/model.xml+.bin  openvino-int8/...
      coreml/model.mlpackage  coreml-int8/model.mlpackage
      tensorrt/model.onnx + engine.json [+ model.engine | BUILD.md]   tensorrt-int8/...

Integrity, checked by :func:`edgecls.runtime.classifier.check_artifact_files`, the one gate that ``predict``, ``run``,
``doctor``, ``parity`` and ``bench`` pass before a model file is opened (``Classifier`` hashes in a thread while the
engine loads the file, which hides most of the hashing time, and raises before it returns):

* **containment** (:func:`bundle_file`): a path from the manifest (an artifact's ``path``, a TensorRT artifact's
  ``details.onnx`` and ``details.settings``, the keys of ``details.files``) and every file an engine reads next to it
  (an OpenVINO IR's ``.bin``, a TensorRT ``engine.json``) must be relative, and must resolve, symlinks followed, to a
  file inside the bundle folder;
* **sha256** (:func:`verify_files`): the files the backend opens are hashed once per load, in 1 MiB chunks, and
  compared with what the export recorded: ``details.files`` (every file of the artifact's folder, as
  :func:`folder_files` writes it) and the artifact's ``sha256`` (its model file, or for a folder artifact such as an
  ``.mlpackage`` the hash :func:`sha256_path` makes of its files). A file this user already verified is not read
  again while it is unchanged: its device, inode, size, mtime and ctime (ns) are recorded with its digest in
  ``verified-sha256.json`` in the user's cache folder, and any write to the file changes its ctime, so it is hashed
  again (what git's index does; files changed less than 3 s before they were hashed are not recorded, for coarse
  clocks). ``EDGECLS_VERIFY_CACHE=0`` hashes on every load.

Pass ``verify=False`` (``--no-verify``) to skip the sha256 check, e.g. for a bundle edited by hand on purpose;
containment is always checked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable

import numpy as np

from edgecls._io import sha256_file as sha256_of  # the one file hash; called by this name, once per file
from edgecls._io import write_json
from edgecls.errors import ConfigError, IntegrityError
from edgecls.manifest import MANIFEST_NAME, Artifact, Manifest

__all__ = [
    "CONFIG_NAME", "DEFAULT_FP16_MAX_MAP_DROP", "DEFAULT_FP16_MIN_AGREEMENT", "DEFAULT_FP16_TOLERANCE",
    "DEFAULT_FP32_TOLERANCE", "DEFAULT_INT8_MIN_AGREEMENT", "DEFAULT_MAX_MAP_DROP",
    "ENGINE_SETTINGS_NAME", "MANIFEST_NAME", "META_PREFIX",
    "PARITY_NAME", "PARITY_SCHEMA", "README_NAME", "REFERENCE_NAME", "already_verified", "artifact_paths",
    "bundle_file", "check_inside", "companions", "folder_files", "read_manifest", "read_parity", "read_reference",
    "sha256_of", "sha256_path", "size_mb", "verify_files", "write_parity", "write_reference",
]

# file names inside a bundle (MANIFEST_NAME lives with the Manifest, which reads it)
PARITY_NAME = "parity.json"
REFERENCE_NAME = "reference.npz"
CONFIG_NAME = "export.json"
README_NAME = "README.md"
ENGINE_SETTINGS_NAME = "engine.json"  # TensorRT build settings beside tensorrt*/model.onnx (and the built engine)
PARITY_SCHEMA = 1

# Keys of the metadata embedded in model files (ONNX metadata_props, CoreML user metadata; OpenVINO rt_info/edgecls
# with the dot written as an underscore). "edgecls.manifest" is this artifact's own manifest as JSON.
META_PREFIX = "edgecls."

# parity budgets (see edgecls.export.parity.Budgets), the defaults of `edgecls export` and of what bench judges
DEFAULT_FP32_TOLERANCE = 1e-4
DEFAULT_FP16_TOLERANCE = None  # max |delta p| is reported for FP16/BF16, and a budget only when asked for
DEFAULT_FP16_MIN_AGREEMENT = 0.99
DEFAULT_FP16_MAX_MAP_DROP = 0.01
DEFAULT_MAX_MAP_DROP = 0.01
DEFAULT_INT8_MIN_AGREEMENT = 0.95  # INT8 keeps >= 95% of the decisions at the tuned thresholds


def read_manifest(bundle: str | Path) -> Manifest:
    """The bundle's ``manifest.json`` (``bundle`` may also be the manifest file itself)."""
    return Manifest.load(bundle)


# ---------------------------------------------------------------------------------------------------------------------
# parity.json and reference.npz


def write_reference(bundle: Path, names: list[str], logits: np.ndarray, targets: np.ndarray, known: np.ndarray) -> None:
    np.savez(bundle / REFERENCE_NAME, names=np.asarray(names, dtype=str), logits=logits.astype(np.float32),
             targets=targets.astype(np.float32), known=known.astype(bool))


def read_reference(bundle: Path) -> dict[str, np.ndarray]:
    path = bundle / REFERENCE_NAME
    if not path.is_file():
        raise ConfigError(f"{bundle}: no {REFERENCE_NAME}; was it written by `edgecls export`?")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in ("names", "logits", "targets", "known")}


def read_parity(bundle: Path) -> dict[str, Any]:
    path = bundle / PARITY_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{bundle}: no {PARITY_NAME}; was it written by `edgecls export`?") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if int(data.get("schema_version", 0)) > PARITY_SCHEMA:
        raise ConfigError(f"{path}: schema version {data['schema_version']} is newer than this edgecls reads")
    return data


def write_parity(bundle: Path, data: dict[str, Any]) -> None:
    write_json(bundle / PARITY_NAME, {"schema_version": PARITY_SCHEMA, **data})


# ---------------------------------------------------------------------------------------------------------------------
# sha256 and sizes


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder (an .mlpackage) as the hash of its sorted (relative path, file hash) list."""
    if path.is_file():
        return sha256_of(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{file.relative_to(path).as_posix()}\0{sha256_of(file)}\n".encode())
    return h.hexdigest()


def folder_files(bundle: Path, folder: str) -> dict[str, str]:
    """Every file of an artifact folder with its sha256 (model, weights, engine.json, BUILD.md ...)."""
    root = bundle / folder
    return {p.relative_to(bundle).as_posix(): sha256_of(p) for p in sorted(root.rglob("*")) if p.is_file()}


def size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


# ---------------------------------------------------------------------------------------------------------------------
# integrity: a bundle is untrusted input


def bundle_file(root: Path, relative: str, *, field: str, artifact: str | None = None) -> Path:
    """``root / relative`` resolved; an :class:`IntegrityError` naming ``field`` when it may not be used.

    Refused: an absolute path (POSIX or Windows), a path whose ``..`` leaves the bundle, and a path that resolves
    through a symlink to somewhere outside the bundle folder.
    """
    text = str(relative)
    what = f"bundle {root}: manifest field {field}" + (f" of artifact {artifact!r}" if artifact else "")
    if not text:
        raise IntegrityError(f"{what} is empty; re-export the bundle")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive:
        raise IntegrityError(f"{what} is the absolute path {text!r}; a bundle may only name files inside itself "
                             "(relative paths); re-export the bundle")
    base = root.resolve()
    resolved = (base / text).resolve()
    if not resolved.is_relative_to(base):
        why = ("leaves the bundle folder through '..'" if not _lexically_inside(text)
               else "goes through a symlink to a file outside the bundle folder")
        raise IntegrityError(f"{what} ({text!r}) {why} (it resolves to {resolved}, not inside {base}); refusing to "
                             "load it; re-export the bundle")
    return resolved


def _lexically_inside(text: str) -> bool:
    parts: list[str] = []
    for part in PurePosixPath(text.replace("\\", "/")).parts:
        if part == "..":
            if not parts:
                return False
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return True


def check_inside(root: Path, path: Path, *, field: str, artifact: str | None = None) -> Path:
    """An already joined ``path`` (a file an engine reads next to a manifest path) must resolve inside ``root``."""
    base = root.resolve()
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(base):
        raise IntegrityError(f"bundle {root}: {Path(path).name} ({field}"
                             + (f" of artifact {artifact!r}" if artifact else "")
                             + f") is a symlink to a file outside the bundle folder (it resolves to {resolved}); "
                             "refusing to load it")
    return resolved


def artifact_paths(root: Path, art: Artifact) -> dict[str, Path]:
    """Every path an artifact's manifest entry names, checked for containment, by manifest field."""
    found = {f"artifacts[{art.name}].path": bundle_file(root, art.path, field="path", artifact=art.name)}
    details = art.details or {}
    for key in ("onnx", "settings"):
        if details.get(key):
            found[f"artifacts[{art.name}].details.{key}"] = bundle_file(root, details[key], field=f"details.{key}",
                                                                        artifact=art.name)
    files = details.get("files") or {}
    if not isinstance(files, dict):
        raise IntegrityError(f"bundle {root}: manifest field details.files of artifact {art.name!r} must map file "
                             f"paths to sha256, got {type(files).__name__}; re-export the bundle")
    for rel in files:
        found[f"artifacts[{art.name}].details.files[{rel}]"] = bundle_file(root, rel, field=f"details.files[{rel!r}]",
                                                                           artifact=art.name)
    return found


def companions(path: Path, fmt: str) -> list[Path]:
    """Files an engine reads next to ``path`` without the manifest naming them."""
    out = []
    if path.suffix.lower() == ".xml":
        out.append(path.with_suffix(".bin"))
    if fmt == "tensorrt":
        out.append(path.with_name(ENGINE_SETTINGS_NAME))
    return out


def _expected_digests(root: Path, art: Artifact, opened: Iterable[Path]) -> list[tuple[Path, list[tuple[str, str]]]]:
    """Each file of ``opened`` (once) that the manifest records, with the (field, sha256) pairs it must match."""
    base = root.resolve()
    main = (base / art.path).resolve()
    files = {(base / rel).resolve(): str(digest) for rel, digest in ((art.details or {}).get("files") or {}).items()}
    out = []
    for path in dict.fromkeys(Path(p).resolve() for p in opened):
        expected = []
        if path == main:
            if not art.sha256:
                raise IntegrityError(f"bundle {root}: artifact {art.name!r} records no sha256 for {art.path}, so it "
                                     "cannot be verified; re-export the bundle, or pass --no-verify to run it anyway")
            expected.append(("sha256", art.sha256.lower()))
        if path in files:
            expected.append((f"details.files[{path.relative_to(base).as_posix()!r}]", files[path].lower()))
        if expected:
            out.append((path, expected))
    return out


def verify_files(root: Path, art: Artifact, opened: Iterable[Path]) -> None:
    """Hash each file in ``opened`` (each once) and compare with the manifest's record of it.

    The artifact's own ``path`` must have a ``sha256``; another file is checked against ``details.files`` when that
    records it (bundles from before ``details.files`` only verify the model file). A file this user verified before
    and that is unchanged since is not read again (see :func:`already_verified`).
    """
    base = root.resolve()
    record = _Record.load()
    try:
        for path, expected in _expected_digests(root, art, opened):
            digests = {digest for _, digest in expected}
            try:
                actual = record.vouched(path, digests) or record.hash(path, digests)
            except OSError as exc:
                raise IntegrityError(f"bundle {root}: cannot read {path} to verify it ({exc.strerror or exc})") \
                    from None
            for field, digest in expected:
                if actual != digest:
                    raise IntegrityError(
                        f"bundle {root}: {path.relative_to(base).as_posix()} of artifact {art.name!r} does not match "
                        f"the manifest (sha256 {actual[:16]}..., manifest {field} {digest[:16]}...): the file was "
                        "changed or replaced after export; re-export the bundle, or pass --no-verify if you changed it "
                        "on purpose"
                    )
    finally:
        record.save()  # the files that did verify, even when a later one did not


def already_verified(root: Path, art: Artifact, opened: Iterable[Path]) -> bool:
    """Whether every file of ``opened`` that the manifest records is, unchanged, one this user verified to the digest
    the manifest names (a stat and a small JSON read: no file is hashed). :func:`verify_files` would then pass without
    reading them; when this is False, it must run."""
    try:
        record = _Record.load()
        return all(record.vouched(path, {d for _, d in expected}) is not None and len({d for _, d in expected}) == 1
                   for path, expected in _expected_digests(root, art, opened))
    except (OSError, IntegrityError):
        return False


# ---------------------------------------------------------------------------------------------------------------------
# files already verified: the record that spares a second load the hashing


VERIFIED_NAME = "verified-sha256.json"  # in the user's cache folder ($EDGECLS_CACHE_DIR); EDGECLS_VERIFY_CACHE=0: off
_SETTLED_SECONDS = 3.0  # a file changed this recently is not recorded: a coarse clock (FAT: 2 s) could hide a rewrite
_MAX_VERIFIED = 512


def _stat_key(path: Path) -> str | None:
    """What identifies this version of a regular file: device, inode, size, mtime and ctime in ns. Writing to a file
    (or renaming another onto it, or restoring its mtime afterwards) changes its ctime, which no user can set."""
    import stat

    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


class _Record:
    """What this user verified: ``"<resolved path>|<stat key>" -> sha256`` in :data:`VERIFIED_NAME`, read once and
    written once per check. Advisory: an unreadable or foreign record is ignored (the files are hashed), an unwritable
    one is not written (the next load hashes again); ``EDGECLS_VERIFY_CACHE=0`` neither reads nor writes it."""

    def __init__(self, path: Path | None, entries: dict[str, str]) -> None:
        self.path, self.entries, self.changed = path, entries, False

    @classmethod
    def load(cls) -> "_Record":
        import os

        from edgecls._io import user_cache_dir

        if os.environ.get("EDGECLS_VERIFY_CACHE", "1") == "0":
            return cls(None, {})
        path = user_cache_dir(VERIFIED_NAME)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        entries = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} \
            if isinstance(data, dict) else {}
        return cls(path, entries)

    def vouched(self, path: Path, digests: set[str]) -> str | None:
        """The digest of ``path`` when this exact version of it (same :func:`_stat_key`) was verified to one of
        ``digests``, without reading it; else None."""
        key = _stat_key(path) if self.path is not None else None
        digest = self.entries.get(f"{path}|{key}") if key is not None else None
        return digest if digest in digests else None

    def hash(self, path: Path, digests: set[str]) -> str:
        """sha256 of ``path``, remembered when it is one of ``digests`` and the file did not change while it was
        read nor within :data:`_SETTLED_SECONDS` before (a coarse clock could hide a rewrite)."""
        import time

        key = _stat_key(path) if self.path is not None and path.is_file() else None
        before = time.time()
        actual = sha256_path(path)
        if key is None or actual not in digests:
            return actual
        st = path.stat()
        if max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 < before - _SETTLED_SECONDS and _stat_key(path) == key:
            self.entries.pop(f"{path}|{key}", None)
            self.entries[f"{path}|{key}"] = actual  # newest last: the oldest go first past _MAX_VERIFIED
            self.changed = True
        return actual

    def save(self) -> None:
        from edgecls._io import atomic_write_text

        if self.path is None or not self.changed:
            return
        try:
            atomic_write_text(self.path, json.dumps(dict(list(self.entries.items())[-_MAX_VERIFIED:])))
        except OSError:  # a read-only home or cache: verification still works, it just hashes every time
            pass
        self.changed = False

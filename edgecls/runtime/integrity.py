"""A bundle is untrusted input: each file an artifact names stays inside the bundle, and what runs is what was exported.

Two checks, both made by :func:`edgecls.runtime.classifier.check_artifact_files`, the one gate that ``predict``,
``run``, ``doctor``, ``parity`` and ``bench`` pass before a model file is opened (``Classifier`` hashes in a thread
while the engine loads the file, which hides most of the hashing time, and raises before it returns):

* **containment** (:func:`bundle_file`): a path from the manifest (an artifact's ``path``, a TensorRT artifact's
  ``details.onnx`` and ``details.settings``, the keys of ``details.files``) and every file an engine reads next to it
  (an OpenVINO IR's ``.bin``, a TensorRT ``engine.json``) must be relative, and must resolve, symlinks followed, to a
  file inside the bundle folder;
* **sha256** (:func:`verify_files`): the files the backend opens are hashed once per load, in 1 MiB chunks, and
  compared with what the export recorded: ``details.files`` (every file of the artifact's folder, as
  :func:`edgecls.export.bundle.folder_files` writes it) and the artifact's ``sha256`` (its model file, or for a folder
  artifact such as an ``.mlpackage`` the hash :func:`edgecls.export.bundle.sha256_path` makes of its files).

Pass ``verify=False`` (``--no-verify``) to skip the sha256 check, e.g. for a bundle edited by hand on purpose;
containment is always checked.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Iterable

from edgecls.errors import IntegrityError

if TYPE_CHECKING:
    from edgecls.manifest import Artifact

_CHUNK = 1 << 20


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


def artifact_paths(root: Path, art: "Artifact") -> dict[str, Path]:
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
        out.append(path.with_name("engine.json"))
    return out


def sha256_of(path: Path) -> str:
    """sha256 of a file read in 1 MiB chunks into one reused buffer."""
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _sha256_folder(path: Path) -> str:
    # the same digest as edgecls.export.bundle.sha256_path for a folder
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{file.relative_to(path).as_posix()}\0{sha256_of(file)}\n".encode())
    return h.hexdigest()


def verify_files(root: Path, art: "Artifact", opened: Iterable[Path]) -> None:
    """Hash each file in ``opened`` (each once) and compare with the manifest's record of it.

    The artifact's own ``path`` must have a ``sha256``; another file is checked against ``details.files`` when that
    records it (bundles from before ``details.files`` only verify the model file).
    """
    base = root.resolve()
    main = (base / art.path).resolve()
    files = {(base / rel).resolve(): str(digest) for rel, digest in ((art.details or {}).get("files") or {}).items()}
    for path in dict.fromkeys(Path(p).resolve() for p in opened):
        expected = []
        if path == main:
            if not art.sha256:
                raise IntegrityError(f"bundle {root}: artifact {art.name!r} records no sha256 for {art.path}, so it "
                                     "cannot be verified; re-export the bundle, or pass --no-verify to run it anyway")
            expected.append(("sha256", art.sha256))
        if path in files:
            expected.append((f"details.files[{path.relative_to(base).as_posix()!r}]", files[path]))
        if not expected:
            continue
        try:
            actual = _sha256_folder(path) if path.is_dir() else sha256_of(path)
        except OSError as exc:
            raise IntegrityError(f"bundle {root}: cannot read {path} to verify it ({exc.strerror or exc})") from None
        for field, digest in expected:
            if actual != digest.lower():
                raise IntegrityError(
                    f"bundle {root}: {path.relative_to(base).as_posix()} of artifact {art.name!r} does not match the "
                    f"manifest (sha256 {actual[:16]}..., manifest {field} {digest[:16]}...): the file was changed or "
                    "replaced after export; re-export the bundle, or pass --no-verify if you changed it on purpose"
                )

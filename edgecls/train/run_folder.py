"""A training run's folder: the files a run writes there, how to recognise one, and what ``--out`` may be (a new or
empty folder; an earlier run only with ``--resume`` or ``--force``; never someone else's files without ``--force``)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from edgecls.errors import ConfigError

log = logging.getLogger("edgecls.train")


# What a run writes into its folder (files are written atomically, as `.{name}.{pid}-XXXXXXXX.tmp` first).
RUN_FILES = ("config.yaml", "last.pt", "best.pt", "history.jsonl", "report.md", "report.json", "loss.png",
             "val_map.png", "pr_curves.png")
RUN_FOLDERS = ("tensorboard", "head")  # head: the cached-feature head run of --strategy auto


def remove_leftovers(run_dir: Path) -> None:
    """The temporary files a killed run left in its folder (only our names; a running process's are kept)."""
    from edgecls._io import remove_stale_temps

    for path in remove_stale_temps(run_dir, RUN_FILES, (".tmp",)):
        log.info("removed %s, left by an earlier run that did not finish", path)


def is_run_folder(path: str | Path) -> bool:
    """``path`` holds an `edgecls train` run: its config.yaml with a checkpoint or history, or nothing but the
    files a run writes (a run stopped before its first epoch)."""
    path = Path(path)
    if not path.is_dir() or not (path / "config.yaml").is_file():
        return False
    if any((path / name).is_file() for name in ("last.pt", "best.pt", "history.jsonl")):
        return True
    return all(p.name in RUN_FILES or p.name in RUN_FOLDERS for p in path.iterdir())


def prepare_out(out: Path, *, force: bool) -> None:
    """Refuse an ``--out`` that holds anything but an empty folder, unless ``force``; with ``force`` over an
    earlier run, remove that run's files (only those) so that none of it mixes with the new one."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder; choose a new folder for the run")
    if not out.is_dir():
        return
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun, one process does the cleaning
    if rank0:
        remove_leftovers(out)
    if not any(out.iterdir()):
        return
    if is_run_folder(out):
        if not force:
            if not (out / "last.pt").is_file():
                raise ConfigError(f"--out {out}: already holds a training run that stopped before its first epoch "
                                  "(no last.pt to resume from); replace it with --force, or pick another --out")
            raise ConfigError(f"--out {out}: already holds a training run; continue it with --resume {out}, "
                              "replace it with --force, or pick another --out")
        if rank0:
            for name in RUN_FILES:
                if (out / name).is_file() or (out / name).is_symlink():
                    (out / name).unlink()
            for name in RUN_FOLDERS:
                if (out / name).is_dir() and not (out / name).is_symlink():
                    shutil.rmtree(out / name)
            log.info("--force: removed the earlier run in %s", out)
        return
    if not force:
        raise ConfigError(f"--out {out}: folder exists, is not empty and is not an edgecls run folder (no config.yaml "
                          "with last.pt, best.pt or history.jsonl); choose a new or empty folder, or pass --force to "
                          f"write the run into it (files named {', '.join(RUN_FILES[:3])}, ... there are replaced)")

"""The run directory's lifecycle: checked, locked, accepted, released.

`finetune` writes nothing into `output_dir` until the run is accepted:

1. `check_paths` (no writes): `output_dir` and `tokenized_cache_dir` can be
   written (not a file, not below a file, not read-only).
2. `RunDir.open`: takes the lock (`.lock`, held with `flock`, so the kernel
   releases it when the process dies, even by SIGKILL; the file records the
   holder's pid, host and start time for the message a second run gets), then
   refuses a keras-hub preset directory and a non-empty directory keras_ft
   did not write (no `.keras_ft_run.json` marker) unless `overwrite`, and a
   resume whose checkpoint was written under other settings.
3. `accept` (called by `resume_or_start` once the checkpoint took the
   settings, or on a fresh start): deletes only the outputs the marker
   lists (a fresh start), then writes the marker and `config.json`, each
   atomically. A refused rerun therefore leaves the run's `config.json`
   (its identity: seed, data, split) as it was.
4. `RunDir.close`: removes the lock file (and the directory, if this run
   created it and left it empty).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

from keras_ft.config import Config, save_config
from keras_ft.distribution import mesh
from keras_ft.files import write_json
from keras_ft.train.checkpoint import (
    Checkpoints,
    TrainState,
    check_resumable,
    check_same_data,
    read_state,
    restore,
    truncate_jsonl,
)

log = logging.getLogger(__name__)


MARKER = ".keras_ft_run.json"


LOCK = ".lock"


CONFIG_FILE = "config.json"


# Everything keras_ft writes at the top of a run directory. A fresh start
# deletes these (those the marker lists), never any other file.
OUTPUTS = (
    "config.json",
    "checkpoints",
    "metrics.jsonl",
    "samples.jsonl",
    "loss_curve.png",
    "tensorboard",
    "best",
    "adapter.lora.h5",
    "adapter_config.json",
    "samples.json",
    "summary.json",
    "eval",
)


INTERNAL = (MARKER, LOCK)


PRESET_FILES = ("metadata.json", "model.weights.h5", "tokenizer.json")


class RunDirError(ValueError):
    """The run directory cannot be used; the message says why and what to do."""


class RunDirLockedError(RunDirError):
    """Another live run holds the run directory's lock."""


def check_writable_dir(path: str | Path, setting: str) -> Path:
    """Checks that directory `path` exists or can be created, and can be written.

    Writes nothing but a probe file, created and removed at once, in the
    nearest directory that exists (`path` itself when it exists).

    Raises:
        RunDirError: naming `setting`, when `path` is a file, lies below a
            file, or its nearest existing directory refuses writes.
    """
    path = Path(path).expanduser().absolute()
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    where = f"`{setting}` {path}"
    flag = setting if setting.startswith("-") else "--" + setting.replace("_", "-")
    if not existing.is_dir():
        if existing == path:
            raise RunDirError(f"{where} is a file, not a directory. Choose a directory for {flag}.")
        raise RunDirError(
            f"{where} cannot be created: {existing} is a file, not a "
            f"directory. Choose another {flag}."
        )
    problem = None
    if not os.access(existing, os.W_OK | os.X_OK):
        problem = "permission denied"
    else:
        try:  # root passes os.access; a read-only mount or `chattr +i` does not
            fd, probe = tempfile.mkstemp(prefix=".keras_ft-write-test-", dir=existing)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            problem = e.strerror or str(e)
    if problem:
        inside = "" if existing == path else f" (its nearest existing parent {existing})"
        raise RunDirError(
            f"{where}{inside} is not writable: {problem}. Make it writable "
            f"or choose another {flag}."
        )
    return path


def check_writable_file(path: str | Path, setting: str) -> Path:
    """Checks that file `path` can be written (its directory, and the file itself
    when it exists); raises RunDirError naming `setting`."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise RunDirError(f"`{setting}` {path} is a directory, not a file.")
    check_writable_dir(path.parent, setting)
    if path.exists() and not os.access(path, os.W_OK):
        raise RunDirError(f"`{setting}` {path} is not writable: permission denied.")
    return path


def check_paths(cfg) -> None:
    """The filesystem checks of a run, before any data is read or model loaded."""
    check_writable_dir(cfg.output_dir, "output_dir")
    if cfg.tokenized_cache_dir:
        check_writable_dir(cfg.tokenized_cache_dir, "tokenized_cache_dir")


def read_marker(run_dir: Path) -> dict | None:
    """The marker keras_ft keeps in its run directories, or None if absent."""
    path = Path(run_dir) / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(
            f"The run marker {path} is unreadable ({e}). Delete it only "
            "if the directory is a keras_ft run, or choose another "
            "--output-dir."
        ) from None
    if not isinstance(marker, dict) or not isinstance(marker.get("outputs"), list):
        raise RunDirError(
            f"The run marker {path} has no `outputs` list. Delete it "
            "only if the directory is a keras_ft run, or choose another "
            "--output-dir."
        )
    return marker


def is_legacy_run(run_dir: Path) -> bool:
    """A run directory written before the marker existed: keras_ft checkpoints."""
    return any(Path(run_dir).glob("checkpoints/step-*/state.json"))


def is_preset_dir(run_dir: Path) -> bool:
    run_dir = Path(run_dir)
    return (run_dir / "config.json").is_file() and any(
        (run_dir / name).exists() for name in PRESET_FILES
    )


def owned_outputs(run_dir: Path, overwrite: bool) -> list[str]:
    """The names at the top of `run_dir` that a fresh start may delete.

    Raises:
        RunDirError: `run_dir` is a keras-hub preset, or holds files and is
            not a keras_ft run (no marker) while `overwrite` is off.
    """
    run_dir = Path(run_dir)
    marker = read_marker(run_dir)
    if marker is None and is_preset_dir(run_dir):
        found = ", ".join(n for n in ("config.json", *PRESET_FILES) if (run_dir / n).exists())
        raise RunDirError(
            f"`output_dir` {run_dir} is a keras-hub preset directory ({found}); a run "
            "there would replace its config.json. Pass it as --preset, and choose "
            "another --output-dir for the run."
        )
    if marker is not None:
        return [n for n in marker["outputs"] if _plain_name(n)]
    if is_legacy_run(run_dir):
        return list(OUTPUTS)
    others = (
        sorted(p.name for p in run_dir.iterdir() if p.name not in INTERNAL)
        if run_dir.is_dir()
        else []
    )
    if others and not overwrite:
        shown = ", ".join(others[:8]) + (", ..." if len(others) > 8 else "")
        raise RunDirError(
            f"`output_dir` {run_dir} is not empty ({shown}) and is not a keras_ft run "
            f"directory (no {MARKER}). Choose another --output-dir, or pass --overwrite "
            f"to use it anyway: keras_ft then adds its own outputs "
            f"({', '.join(OUTPUTS)}) and keeps every other file."
        )
    # --overwrite in a folder keras_ft did not write: never delete a user's
    # file, even one at an output name; refuse instead, naming them.
    taken = [n for n in others if n in OUTPUTS]
    if taken:
        raise RunDirError(
            f"`output_dir` {run_dir} already holds {', '.join(taken)}, which keras_ft "
            "did not write (no " + MARKER + "), and keras_ft never deletes files it "
            "did not write, even with --overwrite. Move them, or choose another "
            "--output-dir."
        )
    return []


def _plain_name(name) -> bool:
    """A marker entry that names a child of the run directory (nothing above)."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and name not in INTERNAL
    )


def accept(run_dir: str | Path, cfg, fresh: bool) -> None:
    """Makes `run_dir` the run of `cfg`: the settings were accepted.

    On a fresh start, first deletes the outputs keras_ft wrote there before
    (those the marker lists), never other files: with `cfg.overwrite`, a
    directory it did not write is used only when none of its output names
    are taken. Then writes the
    marker and config.json atomically. Only the writer process writes
    (`mesh.is_writer()`); the others of a multi-host run return at once.
    """
    if not mesh.is_writer():
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    owned = owned_outputs(run_dir, getattr(cfg, "overwrite", False))
    if fresh:
        for name in owned:
            path = run_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif os.path.lexists(path):
                path.unlink()
    marker = read_marker(run_dir) or {}
    write_json(
        run_dir / MARKER,
        {
            "keras_ft_run": 1,
            "created": marker.get("created") if not fresh and marker.get("created") else _now(),
            "outputs": sorted(
                set(OUTPUTS)
                | ({n for n in marker.get("outputs", []) if _plain_name(n)} if not fresh else set())
            ),
        },
    )
    save_config(cfg, run_dir / CONFIG_FILE)


def resume_or_start(
    cfg: Config, trainer, checkpoints: Checkpoints, run_dir: Path, data: dict
) -> TrainState:
    """Restores the newest checkpoint (if `cfg.resume`), else clears old outputs.

    Resuming drops the log lines written after the checkpoint (by the run that
    was cut off), so metrics.jsonl and samples.jsonl hold each step once.
    Only once the checkpoint took the settings (or on a fresh start) is the
    run accepted (`accept`): config.json and the run marker are written
    then, so a refused resume leaves them as they were. A fresh start
    deletes only what keras_ft wrote (`owned_outputs`).

    Returns:
        The state to continue from (a fresh one when starting over).

    Raises:
        CheckpointError: the checkpoint was written under other settings/data.
        RunDirError: starting over in a directory keras_ft did not write.
    """
    latest = checkpoints.latest() if cfg.resume else None
    # Every process resumes from the writer's checkpoint, or none does.
    mesh.check_same_on_every_process(
        read_state(latest)["state"]["batches_done"] if latest is not None else -1,
        "the checkpointed data position to resume from",
    )
    if latest is not None:
        state = restore(latest, trainer, cfg, data)
        accept(run_dir, cfg, fresh=False)
        for name in ("metrics.jsonl", "samples.jsonl"):
            truncate_jsonl(run_dir / name, state.step)
        epoch, batch = divmod(state.batches_done, data["batches_per_epoch"])
        log.info(
            "Resuming from %s: step %d (epoch %d, %d of %d batches done).",
            latest,
            state.step,
            epoch + 1,
            batch,
            data["batches_per_epoch"],
        )
        return state
    if checkpoints.all():
        log.warning(
            "Starting over in %s: removing its checkpoints (resume=%s).", run_dir, cfg.resume
        )
    accept(run_dir, cfg, fresh=True)  # deletes keras_ft's outputs, checkpoints included
    checkpoints.clear()  # a `checkpoints` directory outside the run directory
    return TrainState(accumulation=cfg.gradient_accumulation_steps)


def claim(run_dir: str | Path) -> None:
    """Marks a new, empty `run_dir` as a keras_ft run before a caller writes its
    own files there (e.g. `compare`'s worker.log), so the run then accepts it.
    A directory that is not empty and has no marker is left alone (the run
    refuses it)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if read_marker(run_dir) is None and not any(p.name not in INTERNAL for p in run_dir.iterdir()):
        write_json(
            run_dir / MARKER, {"keras_ft_run": 1, "created": _now(), "outputs": sorted(OUTPUTS)}
        )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class RunLock:
    """An exclusive `flock` on `run_dir/.lock`, which records its holder.

    The kernel drops a flock when its process dies (SIGKILL included), so a
    lock file left by a killed run is free and is taken over (logged). The
    file is removed on release; a run that opened the old file just before
    re-checks that the file it locked is still the one at the path.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def acquire(self) -> None:
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(_read_fd(fd))
                os.close(fd)
                raise RunDirLockedError(
                    f"`output_dir` {self.path.parent} is in use by another run ({holder}; "
                    f"lock file {self.path}). Wait for it to finish, stop it, or choose "
                    "another --output-dir."
                ) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # released and removed between our open and our flock
                os.close(fd)
                continue
            previous = _read_fd(fd)
            if previous.strip():
                log.warning(
                    "Taking over the stale lock %s: its holder (%s) is gone.",
                    self.path,
                    _holder(previous),
                )
            record = (
                json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": _now()})
                + "\n"
            )
            os.ftruncate(fd, 0)
            os.pwrite(fd, record.encode(), 0)
            os.fsync(fd)
            self.fd = fd
            return
        raise RunDirLockedError(
            f"Could not lock {self.path}: it keeps being replaced "
            "by other runs. Choose another --output-dir."
        )

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(self.fd), os.stat(self.path)):
                os.unlink(self.path)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _read_fd(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        return ""


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (json.JSONDecodeError, KeyError, TypeError):
        return (
            f"holder unknown: {text.strip()[:200]!r}" if text.strip() else "holder not recorded yet"
        )


@dataclasses.dataclass
class RunDir:
    """The run directory of one `finetune` call; use `with RunDir.open(cfg):`."""

    path: Path
    lock: RunLock | None  # None: a process that is not the writer
    created: bool

    @classmethod
    @contextlib.contextmanager
    def open(cls, cfg):
        """Checks `cfg`'s paths, locks its run directory and checks its contents.

        Nothing is written there but the lock (removed on exit, with the
        directory when this call created it and it is still empty). A
        process of a multi-host run that is not the writer only reads: it
        takes no lock (the writer holds it) and creates nothing.
        """
        check_paths(cfg)
        path = Path(cfg.output_dir).expanduser()
        if not mesh.is_writer():
            run = cls(path, None, False)
            run.check_resume_settings(cfg)
            yield run
            return
        created = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(
                f"`output_dir` {path} cannot be created: {e.strerror or e}."
            ) from None
        run = cls(path, RunLock(path), created)
        try:
            run.lock.acquire()
        except OSError as e:
            run._remove_if_created()
            raise RunDirError(
                f"`output_dir` {path} cannot be locked ({run.lock.path}): {e.strerror or e}."
            ) from None
        except BaseException:
            run._remove_if_created()
            raise
        try:
            owned_outputs(path, getattr(cfg, "overwrite", False))
            run.check_resume_settings(cfg)
            yield run
        finally:
            run.lock.release()
            run._remove_if_created()

    def latest_checkpoint(self, cfg) -> Path | None:
        if not cfg.resume:
            return None
        return Checkpoints(self.path / "checkpoints", cfg.keep_checkpoints).latest()

    def check_resume_settings(self, cfg) -> None:
        """Refuses, before any data is read, a resume under other settings."""
        latest = self.latest_checkpoint(cfg)
        if latest is not None:
            check_resumable(read_state(latest)["config"], cfg, latest)

    def check_resume_data(self, cfg, data: dict) -> None:
        """Refuses, before the model is loaded, a resume on other data."""
        latest = self.latest_checkpoint(cfg)
        if latest is not None:
            check_same_data(read_state(latest)["data"], data, latest)

    def _remove_if_created(self) -> None:
        if self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only when empty: a refused run leaves no trace

"""The one atomic writer: a file or a folder appears whole, or not at all.

    write_atomically(path, lambda tmp: tmp.write_text(text))            # a file
    write_atomically(path, lambda tmp: model.save_pretrained(tmp), folder=True)

    with staged(path, durable=True) as stage:     # write now, decide later (a commit protocol)
        pq.write_table(table, stage.tmp)
        with lock:
            stage.commit()

What is written goes to a temporary sibling of `path`, `.NAME.tmp-*` (in the same
directory, so the rename cannot cross file systems; a writer that infers a format from
the file name must be told it), which is then renamed over `path`: a reader sees the old
content or the whole new one, and a failed or killed write leaves `path` as it was (and
at most the temporary file, which nothing reads). `durable=True` also fsyncs the file and
the directory, for what must survive a power cut (the replay store's shards and manifest).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Stage:
    """A temporary sibling of `path` being written (`tmp`); `commit` puts it in place."""

    def __init__(self, path: Path, *, folder: bool, durable: bool, mode: int | None):
        self.path, self.folder, self.durable = path, folder, durable
        self.mode = mode if mode is not None else (0o755 if folder else 0o644)
        path.parent.mkdir(parents=True, exist_ok=True)
        if folder:
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        else:
            self.tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")

    def commit(self) -> Path:
        """Rename what was written over `path`. An existing folder is moved aside first and
        deleted after (readers see the old folder, briefly none, then the new one)."""
        os.chmod(self.tmp, self.mode)  # not the private permissions temporary files get
        if self.durable and not self.folder:
            with open(self.tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        if self.folder and self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old-{uuid.uuid4().hex}")
            os.rename(self.path, old)
            try:
                os.rename(self.tmp, self.path)
            except BaseException:
                os.rename(old, self.path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)
        if self.durable:
            fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        if self.folder:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            self.tmp.unlink(missing_ok=True)


@contextmanager
def staged(path: str | os.PathLike, *, folder: bool = False, durable: bool = False,
           mode: int | None = None) -> Iterator[Stage]:
    """A `Stage` for `path`: write `stage.tmp` (a file, or with `folder` an empty
    directory), then `stage.commit()`; whatever was not committed when the block ends is
    deleted. `mode` sets the permissions of what appears (default 0o644 for a file, 0o755
    for a folder)."""
    stage = Stage(Path(path), folder=folder, durable=durable, mode=mode)
    try:
        yield stage
    finally:
        stage.discard()  # after a commit there is nothing left to delete


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None], *, folder: bool = False,
                     durable: bool = False, mode: int | None = None) -> Path:
    """Run `write(tmp)` on a fresh temporary sibling of `path`, then rename it to `path`
    (see `staged`). Returns `path`."""
    with staged(path, folder=folder, durable=durable, mode=mode) as stage:
        write(stage.tmp)
        return stage.commit()

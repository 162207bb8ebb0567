"""The replay store: a directory of Parquet shards listed in a manifest.

    DIR/manifest.json                     the shards that exist, with rows and checksums
    DIR/shards/PRODUCER-SEQUENCE.parquet  one shard per append
    DIR/.lock                             serialises manifest updates across processes

How a shard appears, so that a writer killed at any moment leaves a store that opens,
with no partial shard visible and nothing committed lost:

1. the rows are written to a temporary file in `shards/` (`lmrl_ray.io.staged`), many
   writers at once;
2. under the store's lock, unless another writer committed the key meanwhile, the file
   is fsynced and renamed to its final name;
3. the manifest is rewritten the same way (`lmrl_ray.io.write_atomically`), naming it.

Readers see only the shards the manifest lists. A crash before step 3 leaves an orphan
file that no reader sees (`orphans()` lists them, `remove_orphans()` deletes them).
Appends are keyed by (producer, sequence): a retried append of a committed key returns
the committed shard and writes nothing, so retries never duplicate episodes.

Every listed shard carries its byte size and SHA-256; reading checks them, so a
truncated or corrupt shard is reported with its path rather than read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lmrl_ray.data.schema import RETURN, SCHEMA, SCHEMA_VERSION, schema_difference
from lmrl_ray.io import staged, write_atomically

MANIFEST = "manifest.json"
SHARDS = "shards"
LOCK = ".lock"
FORMAT = "lmrl-ray-replay-store"
_PRODUCER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class StoreError(Exception):
    """A store that cannot be opened or read as asked; the message names the path."""


class CorruptShardError(StoreError):
    """A listed shard whose bytes are missing, truncated or changed."""


@dataclass(frozen=True)
class Shard:
    """One manifest entry."""

    file: str
    """Path relative to the store directory."""
    rows: int
    bytes: int
    sha256: str
    producer: str
    sequence: int
    created_unix: float


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ReplayStore:
    """Episodes in the trajectory schema (`lmrl_ray.data.schema`), as Parquet shards."""

    def __init__(self, path: str | os.PathLike, *, create: bool = False):
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path} is a file, not a replay store directory")
        if not manifest.exists():
            if not create:
                what = "does not exist" if not self.path.exists() else f"is not a replay store (no {MANIFEST})"
                raise StoreError(f"{self.path} {what}")
            # Another process may be creating the same store right now: its `shards/`
            # and lock file are no reason to refuse.
            if self.path.exists() and any(p.name not in (SHARDS, LOCK) for p in self.path.iterdir()):
                raise StoreError(f"{self.path} is not empty and not a replay store (no {MANIFEST}); refusing to create one there")
            (self.path / SHARDS).mkdir(parents=True, exist_ok=True)
            with self._lock():
                if not manifest.exists():
                    self._write_manifest([])
        self._read_manifest()  # fail now on a malformed manifest

    @classmethod
    def create(cls, path: str | os.PathLike) -> "ReplayStore":
        """Open the store at `path`, creating it (empty) if there is none."""
        return cls(path, create=True)

    # -- Manifest -------------------------------------------------------------------

    def _read_manifest(self) -> list[Shard]:
        path = self.path / MANIFEST
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise StoreError(f"{self.path} is not a replay store (no {MANIFEST})") from None
        except (OSError, json.JSONDecodeError) as err:
            raise StoreError(f"{path}: unreadable manifest: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StoreError(f"{path}: not a replay store manifest (format is not {FORMAT!r})")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"{path}: schema version {data.get('schema_version')!r}; this lmrl-ray reads version {SCHEMA_VERSION}"
            )
        try:
            return [Shard(**entry) for entry in data["shards"]]
        except (KeyError, TypeError) as err:
            raise StoreError(f"{path}: malformed shard entry: {err}") from None

    def _write_manifest(self, shards: Sequence[Shard]) -> None:
        data = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "shards": [asdict(s) for s in shards]}
        write_atomically(self.path / MANIFEST, lambda tmp: tmp.write_text(json.dumps(data, indent=1)), durable=True)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.path / LOCK, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def shards(self) -> list[Shard]:
        """The committed shards, in commit order (read afresh from the manifest)."""
        return self._read_manifest()

    def find(self, producer: str, sequence: int) -> Shard | None:
        """The committed shard of (producer, sequence), if any."""
        return next((s for s in self.shards() if (s.producer, s.sequence) == (producer, sequence)), None)

    @property
    def num_rows(self) -> int:
        return sum(s.rows for s in self.shards())

    # -- Writing --------------------------------------------------------------------

    def append(self, table: pa.Table, *, producer: str, sequence: int) -> Shard:
        """Commit `table` as one shard keyed by (producer, sequence); idempotent.

        A key already committed returns its shard and writes nothing. A table of
        another schema is refused with the difference named.
        """
        if not _PRODUCER.match(producer):
            raise ValueError(f"producer {producer!r}: use letters, digits, '_', '.', '-' (at most 128)")
        if sequence < 0:
            raise ValueError(f"sequence must be non-negative, got {sequence}")
        difference = schema_difference(table.schema)
        if difference:
            raise StoreError(f"{self.path}: refusing a shard of another schema: {difference}")
        if table.num_rows == 0:
            raise ValueError(f"{self.path}: refusing an empty shard ({producer}, {sequence})")
        committed = self.find(producer, sequence)
        if committed is not None:
            return committed
        final = Path(SHARDS) / f"{producer}-{sequence:09d}.parquet"
        with staged(self.path / final, durable=True) as stage:
            # Written outside the lock: many writers write their shards at once.
            pq.write_table(table.replace_schema_metadata(SCHEMA.metadata), stage.tmp)
            entry = Shard(
                file=str(final),
                rows=table.num_rows,
                bytes=stage.tmp.stat().st_size,
                sha256=_sha256(stage.tmp),
                producer=producer,
                sequence=sequence,
                created_unix=time.time(),
            )
            with self._lock():
                shards = self._read_manifest()
                committed = next((s for s in shards if (s.producer, s.sequence) == (producer, sequence)), None)
                if committed is not None:  # another writer won the race
                    return committed
                stage.commit()
                self._write_manifest([*shards, entry])
        return entry

    def orphans(self) -> list[Path]:
        """What killed writers left: files under `shards/` that the manifest does not list,
        and unfinished manifest rewrites."""
        listed = {self.path / s.file for s in self.shards()}
        unlisted = [p for p in (self.path / SHARDS).iterdir() if p not in listed]
        return sorted(unlisted + list(self.path.glob(f".{MANIFEST}.tmp-*")))

    def remove_orphans(self) -> list[Path]:
        """Delete the orphans; run it while no writer is active (a live writer's
        temporary file is an orphan until it commits)."""
        with self._lock():
            gone = self.orphans()
            for p in gone:
                p.unlink(missing_ok=True)
        return gone

    # -- Reading --------------------------------------------------------------------

    def shard_path(self, shard: Shard) -> Path:
        return self.path / shard.file

    def verify(self, shards: Sequence[Shard] | None = None) -> None:
        """Check every (given) shard's size, checksum and schema; raise naming the first bad one."""
        for shard in self.shards() if shards is None else shards:
            self._check(shard)

    def _check(self, shard: Shard) -> None:
        path = self.shard_path(shard)
        if not path.exists():
            raise CorruptShardError(f"{path}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != shard.bytes:
            raise CorruptShardError(f"{path}: {size} bytes, the manifest says {shard.bytes} (truncated or overwritten)")
        if _sha256(path) != shard.sha256:
            raise CorruptShardError(f"{path}: checksum differs from the manifest (corrupt)")
        difference = schema_difference(pq.read_schema(path))
        if difference:
            raise StoreError(f"{path}: shard of another schema: {difference}")

    def read_shard(self, shard: Shard, columns: Sequence[str] | None = None, *, verify: bool = True) -> pa.Table:
        if verify:
            self._check(shard)
        return pq.read_table(self.shard_path(shard), columns=list(columns) if columns else None, schema=SCHEMA)

    def read(self, columns: Sequence[str] | None = None, *, verify: bool = True) -> pa.Table:
        """Every committed episode, in commit order."""
        tables = [self.read_shard(s, columns, verify=verify) for s in self.shards()]
        if not tables:
            schema = pa.schema([SCHEMA.field(c) for c in columns]) if columns else SCHEMA
            return schema.empty_table()
        return pa.concat_tables(tables)

    def dataset(self, *, verify: bool = True) -> pads.Dataset:
        """The committed shards as a pyarrow dataset."""
        shards = self.shards()
        if verify:
            self.verify(shards)
        return pads.dataset([str(self.shard_path(s)) for s in shards], schema=SCHEMA, format="parquet")

    def ray_dataset(self, *, verify: bool = True):
        """The committed shards as a Ray Data dataset (`ray.data.read_parquet`)."""
        import ray.data

        shards = self.shards()
        if not shards:
            raise StoreError(f"{self.path}: the store has no shards to read")
        if verify:
            self.verify(shards)
        # The store lives on a (local or mounted shared) file system; naming it keeps Ray
        # Data from probing fsspec's optional back ends.
        return ray.data.read_parquet(
            [str(self.shard_path(s)) for s in shards], schema=SCHEMA, filesystem=pafs.LocalFileSystem()
        )

    # -- Sampling -------------------------------------------------------------------

    def sample_uniform(self, n: int, *, seed: int = 0, replace: bool = False) -> pa.Table:
        """`n` episodes drawn uniformly (without replacement unless `replace`),
        reading only the shards that hold them."""
        shards = self.shards()
        total = sum(s.rows for s in shards)
        if total == 0:
            raise StoreError(f"{self.path}: the store is empty")
        if n == 0:
            return SCHEMA.empty_table()
        if not replace and n > total:
            raise ValueError(f"{self.path}: cannot draw {n} of {total} episodes without replacement")
        picks = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=replace))
        starts = np.cumsum([0] + [s.rows for s in shards])
        parts = []
        for i, shard in enumerate(shards):
            local = picks[(picks >= starts[i]) & (picks < starts[i + 1])] - starts[i]
            if len(local):
                parts.append(self.read_shard(shard).take(pa.array(local)))
        return pa.concat_tables(parts)

    def most_recent(self, n: int) -> pa.Table:
        """The last `n` committed episodes (by commit order), oldest first."""
        parts, need = [], n
        for shard in reversed(self.shards()):
            if need <= 0:
                break
            table = self.read_shard(shard)
            parts.append(table.slice(max(0, table.num_rows - need)))
            need -= table.num_rows
        return pa.concat_tables(parts[::-1]) if parts else SCHEMA.empty_table()

    def top_fraction(self, fraction: float) -> pa.Table:
        """The best `fraction` of episodes by return (filtered BC): the ceil(fraction * N)
        highest returns, ties broken by commit order."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
        returns = self.read([RETURN])[RETURN].to_numpy()
        # fraction * N in floating point can land just above an integer (0.07 * 100).
        k = math.ceil(round(fraction * len(returns), 9))
        keep = np.sort(np.argsort(-returns, kind="stable")[:k])
        return self.read().take(pa.array(keep))

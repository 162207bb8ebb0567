"""The replay store on disk: round trips, idempotent appends, writers killed for real
(SIGKILL in a child process), concurrent writers, corruption, refusals and sampling.

Ray appears in one test only (Ray Data reading), in local mode."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmrl_ray import envs
from lmrl_ray.data.datagen import generate_episodes
from lmrl_ray.data.schema import (
    EPISODE_ID,
    LENGTH,
    RETURN,
    SCHEMA,
    episode_row,
    to_table,
)
from lmrl_ray.data.store import (
    FORMAT,
    MANIFEST,
    SHARDS,
    CorruptShardError,
    ReplayStore,
    StoreError,
)
from lmrl_ray.envs.base import AGENT, ENV, Turn

# A child process that appends one or more tables to a store, then exits 0. Before
# appending it waits for GO (when given) so that concurrent children really overlap.
# With KILL_AT = k > 0 it SIGKILLs itself at its k-th call of os.replace, before that
# rename happens: in `append` the 1st call renames the shard into place and the 2nd
# renames the new manifest over the old one.
CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from dataclasses import asdict
    import pyarrow.parquet as pq
    from lmrl_ray.data.store import ReplayStore

    store_path, producer, kill_at, go, *jobs = sys.argv[1:]
    real_replace, calls = os.replace, 0

    def replace(src, dst):
        global calls
        calls += 1
        if calls == int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    os.replace = replace
    tables = [(int(seq), pq.read_table(path)) for seq, path in (job.split(":", 1) for job in jobs)]
    deadline = time.monotonic() + 60
    while go and not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.001)
    store = ReplayStore(store_path)
    for seq, table in tables:
        print(json.dumps(asdict(store.append(table, producer=producer, sequence=seq))), flush=True)
    """
)
CHILD_TIMEOUT_S = 120


def rows(prefix: str, n: int, returns=None) -> pa.Table:
    """`n` one-turn episodes with ids PREFIX-0.. and the given returns (default 0)."""
    returns = [0.0] * n if returns is None else returns
    return to_table(
        episode_row(
            task="maze",
            episode_id=f"{prefix}-{i}",
            seed=i,
            transcript=[Turn(ENV, f"{prefix} start {i}"), Turn(AGENT, "move up"), Turn(ENV, "done")],
            rewards=[float(r)],
            success=r > 0,
        )
        for i, r in enumerate(returns)
    )


def ids(table: pa.Table) -> list[str]:
    return table[EPISODE_ID].to_pylist()


def start_child(store: ReplayStore, producer: str, jobs: list[tuple[int, Path]], *, kill_at=0, go: Path | None = None):
    args = [str(store.path), producer, str(kill_at), str(go or ""), *(f"{seq}:{path}" for seq, path in jobs)]
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(child: subprocess.Popen) -> tuple[int, str, str]:
    out, err = child.communicate(timeout=CHILD_TIMEOUT_S)
    return child.returncode, out, err


def saved(tmp_path: Path, name: str, table: pa.Table) -> Path:
    """`table` as a Parquet file outside the store, for a child to append."""
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    return path


def files_of(path: Path) -> dict[str, bytes]:
    """Every file under `path` with its content (the lock file is empty either way)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def store(tmp_path) -> ReplayStore:
    return ReplayStore.create(tmp_path / "store")


@pytest.fixture(scope="module")
def task_tables() -> dict[str, pa.Table]:
    """Two behaviour episodes of every task; built once because chess and endgames
    start Stockfish."""
    return {task: generate_episodes(task, "behaviour", "train", 5, 0, 2) for task in envs.names()}


# -- Round trips ----------------------------------------------------------------------


@pytest.fixture
def every_task_store(store, task_tables) -> ReplayStore:
    for task, table in task_tables.items():
        store.append(table, producer=task, sequence=0)
    return store


def test_every_tasks_episodes_round_trip(every_task_store, task_tables):
    store = every_task_store
    expected = pa.concat_tables(task_tables.values())
    assert store.num_rows == expected.num_rows == 2 * len(envs.names())
    assert [s.producer for s in store.shards()] == list(task_tables)
    assert store.read().to_pylist() == expected.to_pylist()
    assert store.read().schema.equals(SCHEMA, check_metadata=False)
    assert store.read([EPISODE_ID, RETURN]).to_pylist() == expected.select([EPISODE_ID, RETURN]).to_pylist()
    for task in task_tables:
        assert store.read_shard(store.find(task, 0)).to_pylist() == task_tables[task].to_pylist()


def test_shards_are_plain_parquet(every_task_store, task_tables):
    for shard in every_task_store.shards():
        table = pq.read_table(every_task_store.shard_path(shard))
        assert table.schema.equals(SCHEMA, check_metadata=False)
        assert table.num_rows == shard.rows
        assert table.to_pylist() == task_tables[shard.producer].to_pylist()


def test_dataset_counts_the_rows(every_task_store):
    dataset = every_task_store.dataset()
    assert dataset.count_rows() == every_task_store.num_rows
    assert sorted(ids(dataset.to_table(columns=[EPISODE_ID]))) == sorted(ids(every_task_store.read()))


def test_an_empty_store_reads_as_an_empty_table(store):
    assert store.num_rows == 0 and store.shards() == []
    assert store.read().num_rows == 0 and store.read().schema.equals(SCHEMA, check_metadata=False)
    assert store.dataset().count_rows() == 0


def test_ray_dataset_reads_the_same_episodes(ray_local, store):
    for seq in range(3):
        store.append(rows(f"ray{seq}", 4), producer="ray", sequence=seq)
    dataset = store.ray_dataset()
    assert dataset.count() == 12
    assert sorted(r[EPISODE_ID] for r in dataset.take_all()) == sorted(ids(store.read()))


# -- Idempotent appends ----------------------------------------------------------------


def test_a_retried_append_does_not_duplicate(store):
    first = store.append(rows("a", 3), producer="worker", sequence=0)
    before = files_of(store.path)
    # The retry may even carry other rows (a regenerated batch): the key decides.
    for table in (rows("a", 3), rows("b", 5)):
        assert store.append(table, producer="worker", sequence=0) == first
    assert files_of(store.path) == before
    assert store.num_rows == 3 and store.shards() == [first] and ids(store.read()) == ["a-0", "a-1", "a-2"]

    second = store.append(rows("c", 2), producer="worker", sequence=1)
    assert second != first and store.shards() == [first, second]
    assert ids(store.read()) == ["a-0", "a-1", "a-2", "c-0", "c-1"]
    # The same sequence under another producer is another key.
    store.append(rows("d", 1), producer="other", sequence=0)
    assert store.num_rows == 6 and len(store.shards()) == 3


# -- Writers killed for real ---------------------------------------------------------------


@pytest.mark.parametrize("kill_at", [1, 2], ids=["between-write-and-rename", "between-rename-and-manifest"])
def test_a_killed_writer_leaves_a_store_that_opens(tmp_path, store, kill_at):
    committed = store.append(rows("old", 3), producer="w", sequence=0)
    manifest_before = (store.path / MANIFEST).read_bytes()
    new = rows("new", 4)

    returncode, out, err = finish(start_child(store, "w", [(1, saved(tmp_path, "new", new))], kill_at=kill_at))
    assert returncode == -signal.SIGKILL, err
    assert out == ""  # killed inside append, before it returned

    reopened = ReplayStore(store.path)
    assert (reopened.path / MANIFEST).read_bytes() == manifest_before
    assert reopened.shards() == [committed] and reopened.num_rows == 3
    assert ids(reopened.read()) == ["old-0", "old-1", "old-2"]
    reopened.verify()
    orphans = reopened.orphans()
    if kill_at == 1:  # the written temporary file, never renamed
        (orphan,) = orphans
        assert orphan.parent.name == SHARDS and orphan.name.startswith(".w-000000001.parquet.tmp-")
    else:  # the shard under its final name, never listed, and the unfinished manifest
        shard, manifest_tmp = sorted(orphans, key=lambda p: p.parent != reopened.path / SHARDS)
        assert shard == reopened.path / SHARDS / "w-000000001.parquet"
        assert manifest_tmp.parent == reopened.path and manifest_tmp.name.startswith(f".{MANIFEST}.")
        assert pq.read_table(shard).to_pylist() == new.to_pylist()

    shard = reopened.append(new, producer="w", sequence=1)
    assert reopened.append(new, producer="w", sequence=1) == shard
    assert reopened.shards() == [committed, shard] and reopened.num_rows == 7
    assert ids(reopened.read()) == ids(rows("old", 3)) + ids(new)

    reopened.remove_orphans()
    assert reopened.orphans() == []
    assert sorted((reopened.path / SHARDS).iterdir()) == sorted(reopened.shard_path(s) for s in reopened.shards())
    reopened.verify()


def test_remove_orphans_leaves_nothing_of_a_killed_manifest_write(tmp_path, store):
    store.append(rows("old", 1), producer="w", sequence=0)
    returncode, _, err = finish(start_child(store, "w", [(1, saved(tmp_path, "new", rows("new", 1)))], kill_at=2))
    assert returncode == -signal.SIGKILL, err
    store.remove_orphans()
    assert sorted(p.name for p in store.path.iterdir()) == sorted([MANIFEST, SHARDS, ".lock"])


# -- Concurrent writers ----------------------------------------------------------------


def test_many_writers_at_once(tmp_path, store):
    go = tmp_path / "go"
    children, expected = [], []
    for w in range(4):
        jobs = []
        for seq in range(5):
            table = rows(f"w{w}s{seq}", 2)
            expected += ids(table)
            jobs.append((seq, saved(tmp_path, f"w{w}s{seq}", table)))
        children.append(start_child(store, f"writer{w}", jobs, go=go))
    go.touch()  # every child is started; let them append together
    for child in children:
        returncode, out, err = finish(child)
        assert returncode == 0, err
        assert len(out.splitlines()) == 5

    shards = store.shards()
    assert len(shards) == 20
    assert {(s.producer, s.sequence) for s in shards} == {(f"writer{w}", q) for w in range(4) for q in range(5)}
    counts = collections.Counter(ids(store.read()))
    assert set(counts) == set(expected) and set(counts.values()) == {1}
    store.verify()
    assert store.orphans() == []


def test_two_writers_racing_for_one_key_commit_once(tmp_path, store):
    go = tmp_path / "go"
    tables = {"a": rows("a", 3), "b": rows("b", 3)}
    children = [start_child(store, "racer", [(0, saved(tmp_path, k, t))], go=go) for k, t in tables.items()]
    go.touch()
    answers = []
    for child in children:
        returncode, out, err = finish(child)
        assert returncode == 0, err
        answers.append(json.loads(out))

    (shard,) = store.shards()
    # Both writers were told of the one committed shard, the loser included.
    assert answers[0] == answers[1] and answers[0]["sha256"] == shard.sha256
    assert ids(store.read()) in (ids(tables["a"]), ids(tables["b"]))
    assert store.orphans() == []
    store.verify()


# -- Corruption -------------------------------------------------------------------------


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_a_byte, Path.unlink], ids=["truncated", "flipped-byte", "deleted"])
def test_a_damaged_shard_is_reported_with_its_path(store, damage):
    good = store.append(rows("good", 2), producer="w", sequence=0)
    bad = store.append(rows("bad", 2), producer="w", sequence=1)
    path = store.shard_path(bad)
    damage(path)

    for read in (store.read, store.verify, store.dataset, lambda: store.read_shard(bad)):
        with pytest.raises(CorruptShardError) as caught:
            read()
        assert str(path) in str(caught.value)
    # The undamaged shard still reads.
    assert ids(store.read_shard(good)) == ["good-0", "good-1"]


# -- Refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda t: t.drop_columns([RETURN]), RETURN),
        (lambda t: t.append_column("advantage", pa.array([0.0] * t.num_rows, pa.float32())), "advantage"),
        (lambda t: t.set_column(t.schema.get_field_index(LENGTH), pa.field(LENGTH, pa.int64(), nullable=False),
                                t[LENGTH].cast(pa.int64())), LENGTH),
    ],
    ids=["missing-column", "extra-column", "changed-type"],
)
def test_a_table_of_another_schema_is_refused(store, change, named):
    with pytest.raises(StoreError, match=named):
        store.append(change(rows("x", 2)), producer="w", sequence=0)
    assert store.shards() == [] and list((store.path / SHARDS).iterdir()) == []


def test_an_empty_table_is_refused(store):
    with pytest.raises(ValueError, match="empty"):
        store.append(SCHEMA.empty_table(), producer="w", sequence=0)
    assert store.shards() == [] and list((store.path / SHARDS).iterdir()) == []


@pytest.mark.parametrize("producer, sequence", [("", 0), ("a/b", 0), ("../up", 0), ("w", -1)])
def test_a_bad_key_is_refused(store, producer, sequence):
    with pytest.raises(ValueError):
        store.append(rows("x", 1), producer=producer, sequence=sequence)
    assert store.shards() == []


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nowhere"


def _foreign_parquet(tmp_path: Path) -> Path:
    (tmp_path / "foreign").mkdir()
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "foreign" / "data.parquet")
    return tmp_path / "foreign"


def _a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("not a store")
    return tmp_path / "file"


def _manifest(content: str):
    def make(tmp_path: Path) -> Path:
        path = ReplayStore.create(tmp_path / "store").path
        (path / MANIFEST).write_text(content)
        return path

    return make


@pytest.mark.parametrize(
    "make",
    [
        _missing,
        _foreign_parquet,
        _a_file,
        _manifest("{not json"),
        _manifest("[]"),
        _manifest(json.dumps({"format": "another-store", "schema_version": 1, "shards": []})),
        _manifest(json.dumps({"format": FORMAT, "schema_version": 2, "shards": []})),
        _manifest(json.dumps({"format": FORMAT, "schema_version": 1, "shards": [{"file": "x"}]})),
    ],
    ids=["missing", "foreign-parquet", "a-file", "garbled-manifest", "manifest-not-an-object", "other-format",
         "other-schema-version", "malformed-shard-entry"],
)
def test_not_a_store_is_an_error_naming_the_path(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(StoreError) as caught:
        ReplayStore(path)
    assert str(path) in str(caught.value)
    assert path.exists() == (make is not _missing)  # opening never creates


def test_create_refuses_a_non_empty_directory_and_leaves_it_alone(tmp_path):
    path = _foreign_parquet(tmp_path)
    (path / "notes.txt").write_text("mine")
    before = files_of(path)
    with pytest.raises(StoreError, match=re.escape(str(path))):
        ReplayStore.create(path)
    assert files_of(path) == before and sorted(p.name for p in path.iterdir()) == ["data.parquet", "notes.txt"]


def test_create_refuses_a_file(tmp_path):
    path = _a_file(tmp_path)
    with pytest.raises(StoreError, match=re.escape(str(path))):
        ReplayStore.create(path)
    assert path.read_text() == "not a store"


def test_create_opens_an_existing_store_without_touching_it(store):
    store.append(rows("a", 2), producer="w", sequence=0)
    before = files_of(store.path)
    assert ReplayStore.create(store.path).shards() == store.shards()
    assert files_of(store.path) == before


# -- Sampling --------------------------------------------------------------------------

# Twelve episodes in three shards of 3, 4 and 5, committed by producers whose names sort
# in another order than their commits (so file names cannot stand in for commit order).
RETURNS = [3, -1, 5, 5, 0, 2, 5, -4, 1, 3, 0, 2]
ALL_IDS = [f"e-{i}" for i in range(12)]


@pytest.fixture
def sampled(store) -> ReplayStore:
    table = rows("e", 12, RETURNS)
    for producer, (start, stop) in zip(["zeta", "alpha", "mu"], [(0, 3), (3, 7), (7, 12)]):
        store.append(table.slice(start, stop - start), producer=producer, sequence=0)
    assert [s.rows for s in store.shards()] == [3, 4, 5]
    return store


def test_sample_uniform_without_replacement(sampled):
    picked = ids(sampled.sample_uniform(5, seed=1))
    assert len(picked) == len(set(picked)) == 5 and set(picked) <= set(ALL_IDS)
    assert ids(sampled.sample_uniform(5, seed=1)) == picked
    assert set(ids(sampled.sample_uniform(5, seed=2))) != set(picked)
    assert sorted(ids(sampled.sample_uniform(12, seed=3))) == sorted(ALL_IDS)
    with pytest.raises(ValueError):
        sampled.sample_uniform(13, seed=1)


def test_sample_uniform_with_replacement_may_draw_more_than_there_is(sampled):
    picked = ids(sampled.sample_uniform(30, seed=1, replace=True))
    assert len(picked) == 30 and set(picked) <= set(ALL_IDS) and len(set(picked)) < 30


def test_sample_uniform_draws_every_episode_about_equally(sampled):
    # 600 draws of 12 episodes: each expected 50 times; 25..75 is > 5 standard deviations.
    counts = collections.Counter(ids(sampled.sample_uniform(600, seed=0, replace=True)))
    assert set(counts) == set(ALL_IDS) and all(25 <= c <= 75 for c in counts.values())


def test_sampling_an_empty_store_is_an_error(store):
    with pytest.raises(StoreError):
        store.sample_uniform(1)


@pytest.mark.parametrize("n", [1, 5, 6, 9, 12, 20])
def test_most_recent_follows_commit_order_across_shards(sampled, n):
    assert ids(sampled.most_recent(n)) == ALL_IDS[-n:]


def test_most_recent_of_nothing_is_empty(sampled):
    assert sampled.most_recent(0).num_rows == 0


@pytest.mark.parametrize(
    "fraction, expected",
    [
        (0.01, [2]),  # ceil(0.12) = 1: of the three 5s, the first committed
        (0.25, [2, 3, 6]),  # exactly 3
        (0.3, [0, 2, 3, 6]),  # ceil(3.6) = 4: of the two 3s, the first committed
        (0.5, [0, 2, 3, 5, 6, 9]),  # 6: both 3s, then the first of the two 2s
        (1.0, list(range(12))),
    ],
)
def test_top_fraction_keeps_the_highest_returns(sampled, fraction, expected):
    top = sampled.top_fraction(fraction)
    assert sorted(ids(top)) == sorted(ALL_IDS[i] for i in expected)
    assert len(set(ids(top))) == top.num_rows
    assert sorted(top[RETURN].to_pylist(), reverse=True) == sorted((RETURNS[i] for i in expected), reverse=True)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_top_fraction_outside_zero_one_raises(sampled, fraction):
    with pytest.raises(ValueError):
        sampled.top_fraction(fraction)


def test_top_fraction_of_an_exact_percentage(store):
    store.append(rows("p", 100, list(range(100))), producer="w", sequence=0)
    assert store.top_fraction(0.07).num_rows == 7

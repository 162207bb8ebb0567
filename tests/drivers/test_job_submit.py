"""Cluster use: the configurations in cluster/, and `ray job submit` end to end.

The configuration tests parse each file and check what `ray up`, KubeRay and
`ray job submit` need from it (the launcher's file against the installed Ray's own
schema). The slow test starts a Ray head of its own on 127.0.0.1, with its own ports,
temporary directory and token, so that it neither joins nor disturbs any other Ray on the
machine; submits the offline training command as a job with the runtime environment of
cluster/; checks that the job succeeded and wrote its checkpoint; and stops that head,
and only that head.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from lmrl_ray.cli import parse_args
from lmrl_ray.learners.config import load_config
from lmrl_ray.models.tiny import CACHE_ENV, cache_dir

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
BIN = Path(sys.executable).parent  # the environment's `ray` and `lmrl-ray`


def _load(name: str) -> dict:
    with open(CLUSTER / name) as f:
        return yaml.safe_load(f)


def _check_train_command(command: str) -> None:
    """`command` is an `lmrl-ray train` line that the command line and the config accept."""
    argv = shlex.split(command)
    assert argv[:2] == ["lmrl-ray", "train"], command
    args = parse_args(argv[1:])
    load_config(args.algo, overrides=args.overrides, arguments=args.arguments, task=args.task,
                model=args.init or args.model)


# ---------------------------------------------------------------- the configurations


def test_launcher_config_is_one_ray_up_accepts():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load("cluster.yaml")
    # What `ray up` does first: fill in the provider's defaults, check the schema.
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert any(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in workers.values()), "no GPU node type"
    for t in workers.values():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"]
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and "-e " in setup and "[vllm]" in setup and "torch==" in setup
    assert "." in config["file_mounts"].values(), "the working tree is not mounted"
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "RAY_AUTH_MODE=token" in head_start


def test_rayjob_manifest_trains_with_lmrl_ray():
    job = _load("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    train = [c.strip() for c in spec["entrypoint"].split("&&") if c.strip().startswith("lmrl-ray train")]
    assert len(train) == 2, spec["entrypoint"]  # BC, then PPO from its checkpoint
    for command in train:
        _check_train_command(command)
    # The job's environment variables are cluster/runtime_env.yaml's.
    assert yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"] == _load("runtime_env.yaml")["env_vars"]
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
    gpus = [
        g for g in cluster["workerGroupSpecs"]
        if any("nvidia.com/gpu" in c["resources"]["limits"] for c in g["template"]["spec"]["containers"])
    ]
    assert gpus and all(g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] for g in gpus)
    # Both clusters run the same Ray.
    assert f"rayproject/ray:{cluster['rayVersion']}-" in _load("cluster.yaml")["docker"]["image"]


def test_runtime_env_uploads_the_source_and_nothing_else():
    from ray._private.thirdparty.pathspec import (
        PathSpec,  # what `ray job submit` matches excludes with
    )

    env = _load("runtime_env.yaml")
    assert "working_dir" not in env and "pip" not in env
    assert env["env_vars"][CACHE_ENV].startswith("/mnt/shared/")
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    excluded = PathSpec.from_lines("gitwildmatch", env["excludes"]).match_file
    for path in (".venv/bin/python", ".git/HEAD", "runs/maze-bc/checkpoints/step-00000002/model.safetensors",
                 "data/maze/manifest.json", "lmrl_ray/__pycache__/cli.cpython-311.pyc"):
        assert excluded(path), path
    for path in ("lmrl_ray/cli.py", "lmrl_ray/data/store.py", "lmrl_ray/envs/data/cities.json", "pyproject.toml",
                 "cluster/runtime_env.yaml"):
        assert not excluded(path), path


# ---------------------------------------------------------------- `ray job submit`


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _wait_for_http(url: str, head: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"`ray start` exited with {head.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # answering (401 without the token): the dashboard is up
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no dashboard at {url} after {timeout_s:.0f} s")


def _stop_head(head: subprocess.Popen) -> None:
    """Stop the head started by `ray start --block` and everything it started, and nothing
    else: SIGTERM to `ray start` (which stops its processes), then SIGKILL to whatever of
    its session is left. `ray stop` would stop every Ray on the machine."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    for pid in (int(p) for p in (os.listdir("/proc") if os.path.isdir("/proc") else []) if p.isdigit()):
        try:
            if pid != os.getpid() and os.getsid(pid) == head.pid:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if head.poll() is None:
        head.kill()
        head.wait()


@pytest.fixture
def ray_head():
    """A Ray head of this test's own: (dashboard URL, environment for `ray job` commands)."""
    if shutil.which("ray", path=str(BIN)) is None:
        pytest.skip("the `ray` command is not in this Python's bin directory")
    missing = [m for m in ("aiohttp_cors", "opencensus", "prometheus_client") if importlib.util.find_spec(m) is None]
    assert not missing, f"Ray's job server needs ray[default] (pyproject.toml lists it; run `make setup`): no {missing}"
    # A short path: Ray puts Unix sockets under it, limited to 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="lmrl-rj-", dir="/tmp")
    gcs, dashboard, client, agent = _free_ports(4)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update(
        # `lmrl-ray` for the job's entrypoint: it runs with the head's environment.
        PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]),
        OMP_NUM_THREADS="1",
        # Token authentication with a token of this test's own, for the head and the
        # client alike (not ~/.ray/auth_token, which other Rays on the machine may use).
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        # On SIGTERM, stop at once instead of draining the node for 30 s.
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        RAY_USAGE_STATS_ENABLED="0",
    )
    env[CACHE_ENV] = str(cache_dir())
    log = open(Path(temp_dir, "ray-start.log"), "w")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}", "--num-cpus=2",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        try:
            _wait_for_http(f"{url}/api/version", head, timeout_s=90)
        except (RuntimeError, TimeoutError) as err:
            log.flush()
            pytest.fail(f"the Ray head did not start: {err}\n{Path(temp_dir, 'ray-start.log').read_text()[-3000:]}")
        yield url, env
    finally:
        _stop_head(head)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_trains_offline(ray_head, tmp_path):
    url, env = ray_head

    def run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)

    data, out = tmp_path / "data", tmp_path / "run"
    made = run(str(BIN / "lmrl-ray"), "datagen", "maze", "--out", str(data), "--episodes", "20", "--workers", "0")
    assert made.returncode == 0, made.stderr
    # cluster/runtime_env.yaml as it is, but with this machine's model cache for the
    # cluster's shared one.
    runtime_env = _load("runtime_env.yaml")
    runtime_env["env_vars"][CACHE_ENV] = env[CACHE_ENV]
    env_file = tmp_path / "runtime_env.yaml"
    env_file.write_text(yaml.safe_dump(runtime_env))

    job_id = f"lmrl-test-{secrets.token_hex(4)}"
    # One learner actor, not the in-process learner: the job's driver must join this
    # cluster (init_ray under the RAY_ADDRESS the job server sets) and place an actor on it.
    submit = run(
        str(BIN / "ray"), "job", "submit", "--address", url, "--submission-id", job_id, "--working-dir", str(REPO),
        "--runtime-env", str(env_file), "--",
        "lmrl-ray", "train", "maze", "--algo", "bc", "--data", str(data), "--out", str(out), "--num-learners", "1",
        "updates=2", "batch_episodes=4", "checkpoint_every_updates=2",
    )
    logs = submit.stdout[-4000:] + submit.stderr[-4000:]
    assert submit.returncode == 0, logs
    # The job server's record, not just the client's exit status.
    status = run(sys.executable, "-c", "import sys; from ray.job_submission import JobSubmissionClient; "
                 "print(JobSubmissionClient(sys.argv[1]).get_job_status(sys.argv[2]).value)", url, job_id, timeout=60)
    assert status.stdout.strip().splitlines()[-1:] == ["SUCCEEDED"], status.stdout + status.stderr
    assert "maze / bc: 2 updates" in submit.stdout, logs
    checkpoint = out / "checkpoints" / "step-00000002"
    assert (checkpoint / "config.json").is_file(), logs

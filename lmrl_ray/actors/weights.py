"""Moving a learner's weights to the engines: through Ray's object store, or over a collective.

Two transports behind one choice (`select_transport`):

- **Object store** (CPU, and the default everywhere): the learner side converts its state
  dict once to CPU numpy arrays (`pack`), puts it in the object store with one `ray.put`
  (`put_weights`), and hands the same `ObjectRef` to every engine. An engine on the same
  node reads the arrays straight from shared memory (Ray deserialises numpy buffers
  zero-copy) and `unpack` wraps them as tensors without copying; `Engine.set_weights`
  then copies them into the model once. One object per broadcast, whatever the number
  of engines.
- **Collective** (`"nccl"` on GPUs; `"gloo"` runs the same code on CPU, which is how it
  is tested here): a torch.distributed process group whose rank 0 is the learner's
  sending process and whose other ranks are the engines (`CollectiveSender`,
  `CollectiveReceiver`); every tensor is broadcast from rank 0, in the order of a
  `spec` the engines receive beforehand. The group is built from its own `TCPStore`
  rather than `init_process_group`, because a learner that trains data-parallel already
  owns the default process group, and one process can hold only one default group.

Nothing here keeps pool state (which engine holds which version): `pool.py` does.
"""

from __future__ import annotations

import datetime
import warnings
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
import ray
import torch
import torch.distributed as dist

Transport = Literal["object_store", "nccl", "gloo"]
TRANSPORTS: tuple[str, ...] = ("auto", "object_store", "nccl", "gloo")

# Integer dtypes of each width, to carry tensors whose dtype numpy lacks (bfloat16, float8)
# as their raw bits.
_BITS_OF_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def select_transport(
    requested: str,
    *,
    engines_on_gpu: bool,
    cuda_available: bool | None = None,
    nccl_available: bool | None = None,
) -> Transport:
    """The transport for a broadcast from this process to the engines.

    "auto" picks NCCL only when the engines hold their models on GPUs and this (sending)
    process has CUDA and a torch build with NCCL; otherwise the object store. An explicit
    "nccl" that cannot run is an error rather than a silent fallback: whoever asked for
    it is measuring or relying on it. `cuda_available` / `nccl_available` default to this
    process's torch (tests pass them to cover every case on a CPU machine).
    """
    if requested not in TRANSPORTS:
        raise ValueError(f"unknown weight transport {requested!r}; expected one of {TRANSPORTS}")
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if nccl_available is None:
        nccl_available = dist.is_available() and dist.is_nccl_available()
    nccl_ok = engines_on_gpu and cuda_available and nccl_available
    if requested == "auto":
        return "nccl" if nccl_ok else "object_store"
    if requested == "nccl" and not nccl_ok:
        missing = [
            what
            for what, ok in (("engines on GPUs", engines_on_gpu), ("CUDA", cuda_available), ("NCCL", nccl_available))
            if not ok
        ]
        raise ValueError(f"weight transport 'nccl' needs {', '.join(missing)} (missing here)")
    return requested  # type: ignore[return-value]


# -- Object store -------------------------------------------------------------------


@dataclass(frozen=True)
class PackedWeights:
    """A state dict as CPU numpy arrays: what goes into the object store."""

    arrays: dict[str, np.ndarray]
    """Each tensor's data, in the state dict's order."""
    bit_dtypes: dict[str, torch.dtype]
    """For tensors whose dtype numpy lacks (bfloat16, float8): their torch dtype; `arrays`
    then holds their bits as an integer array of the same width."""


def pack(state_dict: Mapping[str, torch.Tensor]) -> PackedWeights:
    """Detach, move to CPU and view as numpy, copying only what is not already a
    contiguous CPU tensor (the copy into the object store is the one that counts)."""
    arrays: dict[str, np.ndarray] = {}
    bit_dtypes: dict[str, torch.dtype] = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu").contiguous()
        try:
            arrays[name] = tensor.numpy()
        except TypeError:  # numpy has no such dtype: carry the raw bits
            arrays[name] = tensor.view(_BITS_OF_WIDTH[tensor.element_size()]).numpy()
            bit_dtypes[name] = tensor.dtype
    return PackedWeights(arrays, bit_dtypes)


def unpack(packed: PackedWeights) -> dict[str, torch.Tensor]:
    """Tensors over the packed arrays, without copying them.

    Arrays read from the object store are read-only views of shared memory; torch warns
    that it cannot mark a tensor read-only. The tensors only feed `load_state_dict`,
    which reads them, so the warning is silenced here rather than paid for with a copy.
    """
    state: dict[str, torch.Tensor] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for name, array in packed.arrays.items():
            tensor = torch.from_numpy(array)
            state[name] = tensor.view(packed.bit_dtypes[name]) if name in packed.bit_dtypes else tensor
    return state


def put_weights(state_dict: Mapping[str, torch.Tensor]):
    """One `ray.put` of the packed state dict; its `ObjectRef` goes to every engine.

    The ref is owned by the calling process: the object lives while that process holds
    the ref, so the caller keeps it for as long as engines may still need it.
    """
    return ray.put(pack(state_dict))


def get_weights(ref) -> dict[str, torch.Tensor]:
    """The engine side: read a `put_weights` object (zero-copy on the same node)."""
    return unpack(ray.get(ref))


# -- Collective ---------------------------------------------------------------------

TensorSpec = tuple[str, tuple[int, ...], torch.dtype]
"""(name, shape, dtype) of one tensor, in broadcast order."""


def spec_of(state_dict: Mapping[str, torch.Tensor]) -> list[TensorSpec]:
    """What receivers allocate before a broadcast: every tensor's name, shape and dtype."""
    return [(name, tuple(t.shape), t.dtype) for name, t in state_dict.items()]


def collective_device(backend: str) -> torch.device:
    """Where a backend's tensors must live: NCCL moves CUDA memory, gloo CPU memory.
    Under Ray each GPU actor sees only its own GPUs, so the current CUDA device is its own."""
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    if backend == "gloo":
        return torch.device("cpu")
    raise ValueError(f"no collective backend {backend!r}; expected 'nccl' or 'gloo'")


def _process_group(backend: str, store, rank: int, world_size: int, timeout_s: float):
    """A process group outside the default one (see the module docstring)."""
    timeout = datetime.timedelta(seconds=timeout_s)
    if backend == "gloo":
        return dist.ProcessGroupGloo(store, rank, world_size, timeout)
    if backend == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        return dist.ProcessGroupNCCL(store, rank, world_size, options)
    raise ValueError(f"no collective backend {backend!r}; expected 'nccl' or 'gloo'")


def _broadcast(group, tensor: torch.Tensor) -> None:
    options = dist.BroadcastOptions()
    options.rootRank = 0
    options.rootTensor = 0
    group.broadcast([tensor], options).wait()


class CollectiveSender:
    """Rank 0 of a weight group: the process that holds the learner's weights.

    Construction opens the group's rendezvous (a `TCPStore` on a free port of this node);
    `connect` then builds the process group and returns once every receiver has joined
    with `CollectiveReceiver(sender.address, rank, world_size, backend)`. With gloo,
    `connect` blocks until all ranks are there, so receivers must be started first
    (as Ray calls) and waited on after.
    """

    def __init__(self, backend: str, world_size: int, *, host: str | None = None, timeout_s: float = 300.0):
        if world_size < 2:
            raise ValueError(f"a weight group needs the sender and at least one engine, got world_size={world_size}")
        if host is None:
            host = ray.util.get_node_ip_address()
        self.backend = backend
        self.world_size = world_size
        self.timeout_s = timeout_s
        self.device = collective_device(backend)
        # Port 0: the OS picks a free port, so concurrent pools never collide.
        self._store = dist.TCPStore(
            host, 0, world_size, is_master=True, wait_for_workers=False,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        self.address = (host, self._store.port)
        self._group = None

    def connect(self) -> None:
        self._group = _process_group(self.backend, self._store, 0, self.world_size, self.timeout_s)

    def send(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Broadcast every tensor in `spec_of(state_dict)` order (receivers got that spec)."""
        if self._group is None:
            raise RuntimeError("CollectiveSender.send before connect()")
        with torch.no_grad():
            for tensor in state_dict.values():
                _broadcast(self._group, tensor.detach().to(self.device).contiguous())
        if self.device.type == "cuda":
            # The broadcasts run on NCCL's stream: keep the source tensors alive and
            # unchanged until they are done, since the learner updates them next.
            torch.cuda.synchronize(self.device)


class CollectiveReceiver:
    """Rank `rank` (1 .. world_size - 1) of a weight group: an engine's end."""

    def __init__(self, address: tuple[str, int], rank: int, world_size: int, backend: str, *, timeout_s: float = 300.0):
        host, port = address
        self.device = collective_device(backend)
        store = dist.TCPStore(
            host, port, world_size, is_master=False, timeout=datetime.timedelta(seconds=timeout_s)
        )
        self._group = _process_group(backend, store, rank, world_size, timeout_s)

    def receive(self, spec: Sequence[TensorSpec]) -> dict[str, torch.Tensor]:
        """Fresh tensors filled by the sender's broadcasts, one per `spec` entry, in order."""
        state: dict[str, torch.Tensor] = {}
        for name, shape, dtype in spec:
            state[name] = torch.empty(shape, dtype=dtype, device=self.device)
            _broadcast(self._group, state[name])
        return state


__all__ = [
    "CollectiveReceiver",
    "CollectiveSender",
    "PackedWeights",
    "TRANSPORTS",
    "TensorSpec",
    "Transport",
    "collective_device",
    "get_weights",
    "pack",
    "put_weights",
    "select_transport",
    "spec_of",
    "unpack",
]

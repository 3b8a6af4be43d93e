"""Data-parallel training on several processes: where this process stands (its rank among how many), its process
group, how each global batch is shared out, and a launcher for one machine.

``srcube train`` runs as one process, or as N processes of one process group, started by ``torchrun`` (any number of
nodes, elastic restarts; the Kubernetes training Job uses it) or by ``srcube train --nproc N`` (:func:`launch`: this
machine only, no agent). Both give every process the same environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` or torchrun's store), which :func:`world_from_env` reads. The
model is wrapped in DistributedDataParallel; the backend is NCCL on CUDA devices and gloo on CPUs unless asked
otherwise (:func:`choose_backend`).

Why the batches are shared out here rather than by torch's ``DistributedSampler``: that sampler shuffles its own way
(a permutation seeded by seed + epoch, padded to a multiple of the number of processes), so N processes would see
other batches than the same config on one. Here every rank draws the permutation that the one-process trainer draws
(``DataLoader(shuffle=True)``: the same sampler on the same generator), cuts it into the config's global batches and
keeps its contiguous share of each (:class:`RankBatches`). Every loss is a mean over samples, so weighting a rank's
loss by its share of the batch (:func:`loss_weight`) makes the gradient that DistributedDataParallel averages the
gradient of the whole global batch: N processes train the weights of one process, up to the order of float32 sums.

This module imports torch only inside the functions that use it: the launcher's side of ``srcube train --nproc``
runs without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from srcube.pipeline.errors import SrcubeError
from srcube.training.config import ConfigError

if TYPE_CHECKING:
    import torch

BACKENDS = ("auto", "nccl", "gloo")
#: what torchrun (and :func:`launch`) tell each process
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


class DistributedConfigError(SrcubeError, ConfigError):
    """A data-parallel run that cannot start as asked: a global batch that does not divide over the processes, a
    backend that does not fit the device, more processes on a node than it has GPUs, or a launcher's environment
    that is not one."""


@dataclass(frozen=True)
class World:
    """This process among the processes of one training run. ``launched``: started by torchrun or ``--nproc`` (a
    process group, DistributedDataParallel, even for one process); ``backend`` is set once the group exists."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    launched: bool = False
    backend: str = ""

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and weights."""
        return self.rank == 0


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """This process's place, from the variables torchrun and :func:`launch` set (none of them: one process)."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return World()
    try:
        values = {k: int(env[k]) for k in ENV_KEYS if k in env}
    except ValueError:
        raise DistributedConfigError(
            f"the launcher's environment is not numbers: {', '.join(f'{k}={env.get(k)!r}' for k in ENV_KEYS)}; "
            "start srcube train with torchrun or --nproc, not with these variables set by hand") from None
    size = values["WORLD_SIZE"]
    rank = values.get("RANK", 0)
    local_rank = values.get("LOCAL_RANK", rank)
    local_size = values.get("LOCAL_WORLD_SIZE", size)
    if not (size >= 1 and 0 <= rank < size and 0 <= local_rank < local_size <= size):
        raise DistributedConfigError(
            f"RANK={rank}, LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_size}, WORLD_SIZE={size} do not describe "
            "a process of a process group; start srcube train with torchrun or --nproc")
    return World(rank=rank, size=size, local_rank=local_rank, local_size=local_size, launched=True)


def check_batch(batch_size: int, processes: int) -> int:
    """The per-process batch of a global ``train.batch_size`` over ``processes`` (DistributedConfigError when it
    does not divide: the global batch is the recipe, and N processes must train it as one does)."""
    if processes < 1:
        raise DistributedConfigError(f"{processes} processes: a data-parallel run needs at least 1")
    if batch_size % processes:
        lower = batch_size - batch_size % processes
        raise DistributedConfigError(
            f"train.batch_size {batch_size} (the global batch) does not divide over {processes} processes: give a "
            f"batch size that is a multiple of {processes} (e.g. {lower or processes}; that changes the recipe) or "
            f"run on a number of processes that divides {batch_size}")
    return batch_size // processes


def train_device(name: str, world: World) -> torch.device:
    """The device a process trains on: ``auto`` is CUDA when present; with several processes on a node each takes
    the GPU of its local rank."""
    import torch

    device = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                          "cpu" if name == "auto" else name)
    if device.type != "cuda" or not world.launched:
        return device
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise DistributedConfigError(
            f"process of local rank {world.local_rank} of {world.local_size} on this node, which has {count} CUDA "
            f"device(s): start at most {count} process(es) per node (torchrun --nproc-per-node {count})")
    return torch.device("cuda", world.local_rank)


def choose_backend(requested: str, device: torch.device) -> str:
    """``auto``: NCCL for CUDA devices, gloo for CPUs. NCCL has no CPU tensors; gloo also runs on CUDA (slower)."""
    if requested not in BACKENDS:
        raise DistributedConfigError(f"backend {requested!r} is not one of {', '.join(BACKENDS)}")
    if requested == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if requested == "nccl" and device.type != "cuda":
        raise DistributedConfigError(
            f"the NCCL backend reduces CUDA tensors, and this run trains on {device}: use --backend gloo (or auto)")
    return requested


@contextlib.contextmanager
def process_group(world: World, backend: str = "auto", device: str = "auto") -> Iterator[World]:
    """The process group of a launched run, destroyed when the block ends, also on an error (so a failing rank
    leaves at once and the launcher stops the others); one process not launched gets no group."""
    if not world.launched:
        yield world
        return
    import torch
    import torch.distributed as dist

    dev = train_device(device, world)
    name = choose_backend(backend, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(name, rank=world.rank, world_size=world.size,
                            device_id=dev if name == "nccl" else None)
    try:
        yield dataclasses.replace(world, backend=name)
    finally:
        dist.destroy_process_group()


# --- the batches -------------------------------------------------------------------------------------------------


def share(n: int, world: World) -> range:
    """The contiguous part of ``n`` items this rank takes: in rank order the parts are ``range(n)``, and their sizes
    differ by at most one (the first ranks take one more)."""
    base, extra = divmod(n, world.size)
    start = world.rank * base + min(world.rank, extra)
    return range(start, start + base + (world.rank < extra))


def loss_weight(n: int, world: World) -> float:
    """What this rank's mean loss over its share of a global batch of ``n`` samples is multiplied by, so that the
    average DistributedDataParallel takes of the ranks' gradients is the gradient of the mean over all ``n``:
    ``size x share / n`` (1 when the batch divides evenly; 0 for a rank without a sample in a short last batch)."""
    return world.size * len(share(n, world)) / n


class RankBatches:
    """A batch sampler: this rank's share of each global batch of ``batches`` (a ``BatchSampler`` over the
    one-process trainer's shuffling sampler). A rank whose share of a short last batch is empty computes the batch's
    first sample, with :func:`loss_weight` 0: DistributedDataParallel needs every rank in every step."""

    def __init__(self, batches: Iterable[list[int]], world: World) -> None:
        self.batches = batches
        self.world = world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            part = share(len(batch), self.world)
            yield batch[part.start : part.stop] or batch[:1]

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]


# --- collectives ----------------------------------------------------------------------------------------------


def sum_over_ranks(value: float, world: World) -> float:
    """``value`` summed over the ranks (float64, so the order of the sum costs nothing worth seeing)."""
    if not world.launched:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64,
                     device=torch.device("cuda", torch.cuda.current_device()) if world.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t.item())


def gather_rows(rows: dict[str, list[float]], world: World) -> dict[str, list[float]]:
    """Per-sample values of each rank's share, joined in rank order: the lists one process would have made."""
    if not world.launched:
        return rows
    import torch.distributed as dist

    parts: list[Any] = [None] * world.size
    dist.all_gather_object(parts, rows)
    out: dict[str, list[float]] = {}
    for part in parts:
        for key, values in part.items():
            out.setdefault(key, []).extend(values)
    return out


def average_gradients(parameters: Iterable[torch.nn.Parameter], world: World) -> None:
    """Average gradients over the ranks by hand, for a module that is not DistributedDataParallel's (the GAN's
    discriminator: it runs four times in a step, which DistributedDataParallel does not allow before a backward)."""
    if not world.launched or world.size == 1:
        return
    import torch.distributed as dist

    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world.size


# --- the launcher -------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on loopback now (the rendezvous of a launch on this machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(nproc: int, command: Sequence[str], env: Mapping[str, str] | None = None, poll_s: float = 0.2) -> int:
    """Run ``command`` as ``nproc`` processes of one process group on this machine (rendezvous on loopback), with
    the environment torchrun gives its workers; return 0 when all end well, else the first failure's exit code
    (128 + signal when killed by one) after stopping the others. For several machines, or restarts of failed
    workers, use torchrun."""
    if nproc < 1:
        raise DistributedConfigError(f"--nproc {nproc}: give at least 1 process")
    base = dict(os.environ if env is None else env)
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for rank in range(nproc):
            procs.append(subprocess.Popen(list(command), env={
                **base, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(nproc),
                "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(nproc)}))
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c]
            if failed:
                return failed[0] if failed[0] > 0 else 128 - failed[0]
            if all(c == 0 for c in codes):
                return 0
            time.sleep(poll_s)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

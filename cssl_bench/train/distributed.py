"""Distributed training (torch.distributed): process-group set-up from torchrun's environment and the DDP
wrapper the loop uses. The rank queries and collectives (``cssl_bench.nn.distributed``: identities on a single
process, so methods call them unconditionally) and the BN conversions (``cssl_bench.nn.norm``) live below,
where methods use them too; the loop and the CLI reach the ones they need through this module.

Semantics (tests/test_distributed.py checks each against one process on the same global batch):

- ``train.batch_size`` is the *global* batch; each of the W ranks trains on ``batch_size / W`` images
  (a contiguous slice of the global batch, ``data.loader_base.EpochSampler``), so a recipe, its hash, its
  learning-rate scaling and its results do not depend on the number of processes.
- DDP averages the ranks' gradients. Losses that gather other ranks' tensors with gradients
  (``gather_with_grad``, ``all_reduce_with_grad``) sum the incoming gradients in backward, so the
  averaged gradient is the gradient of the global-batch loss.
- ``model.sync_bn``: BatchNorm statistics over the global batch (``torch.nn.SyncBatchNorm`` on GPUs,
  ``nn.norm.GlobalBatchNorm`` on CPU/gloo, where PyTorch's SyncBatchNorm refuses to run).
- Shuffling BN (MoCo, LooC): ``params.bn_splits`` counts BN groups over the *global* batch, so each
  rank keeps ``bn_splits / W`` of them (``nn.norm.divide_split_batchnorm``: the groups keep their size); the
  key batch is permuted across ranks by ``methods.base.shuffled_forward``.
"""

from __future__ import annotations

import datetime
import inspect
import os

import torch
import torch.distributed as dist
import torch.nn as nn

from cssl_bench import UserError
from cssl_bench.nn.distributed import all_reduce_mean, barrier, is_dist, is_main, rank, world_size
from cssl_bench.nn.norm import convert_sync_batchnorm, divide_split_batchnorm


def threads_per_process(processes: int) -> int:
    """CPU threads for each of ``processes`` processes that share this machine: the cores this process may run
    on (its affinity where the OS reports one), divided among them, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (not Linux)
        cores = os.cpu_count() or 1
    return max(1, cores // processes)


def launched_by_torchrun() -> bool:
    """True in a process started by torchrun (``torch.distributed.run``) with more than one process in all."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def backend_for(device_type: str) -> str:
    """NCCL between GPUs, gloo on CPUs."""
    return "nccl" if device_type == "cuda" else "gloo"


def init_from_env(timeout_minutes: float = 30.0) -> bool:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Returns True when this call initialised it.

    The backend is NCCL when CUDA is available (each process takes GPU ``LOCAL_RANK``), gloo otherwise.
    """
    if is_dist() or not launched_by_torchrun():
        return False
    if not dist.is_available():
        raise UserError("this PyTorch build has no torch.distributed; run a single process (no torchrun / --nproc)")
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        if local >= torch.cuda.device_count():
            raise UserError(
                f"local rank {local} has no GPU ({torch.cuda.device_count()} visible); use --nproc <= the number of GPUs"
            )
        torch.cuda.set_device(local)
    kw = {"device_id": torch.device("cuda", torch.cuda.current_device())} if device_type == "cuda" else {}
    dist.init_process_group(backend_for(device_type), timeout=datetime.timedelta(minutes=timeout_minutes), **kw)
    return True


def cleanup(barrier: bool = True) -> None:
    """Leave the process group; with ``barrier`` first wait for every rank, so that no rank exits while
    another still communicates (skip it after an error: the other ranks may never arrive)."""
    if is_dist():
        try:
            if barrier:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def distribute(method: nn.Module, sync_bn: bool, device: torch.device) -> nn.Module:
    """Prepare ``method`` for this process group and return the module to call: on one process the
    method itself; otherwise its BN layers adapted (``divide_split_batchnorm``, ``sync_bn``) and the
    method wrapped in DistributedDataParallel.

    Buffers are not broadcast each step (``broadcast_buffers=False``): queues are kept equal by their
    own all-gathers, and BN running statistics only matter on rank 0, which writes the checkpoints.
    Call before building the optimiser (SyncBN keeps the parameter objects, so either order works).
    """
    if not is_dist() or world_size() == 1:
        return method
    divide_split_batchnorm(method, world_size())
    if sync_bn:
        convert_sync_batchnorm(method, device.type)
    ddp = nn.parallel.DistributedDataParallel
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:  # torch >= 2.14: syncs at init only
        kw = {"forward_sync_buffers": False}
    else:
        for b in method.buffers():  # older torch: broadcast_buffers=False also skips the initial sync
            dist.broadcast(b.data, 0)
        kw = {"broadcast_buffers": False}
    return ddp(method, device_ids=[device.index] if device.type == "cuda" else None, **kw)


__all__ = [  # defined here, then the rank queries and BN conversions the loop and the CLI use through this module
    "launched_by_torchrun",
    "backend_for",
    "init_from_env",
    "cleanup",
    "distribute",
    "is_dist",
    "world_size",
    "rank",
    "is_main",
    "barrier",
    "all_reduce_mean",
    "convert_sync_batchnorm",
    "divide_split_batchnorm",
]

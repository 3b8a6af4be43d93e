"""Data-parallel training: the batches shared out, the environment of a launched process, the launcher, and the
weights themselves: two CPU processes with gloo train the weights of one process (same config, same global batch,
same seed), fresh and resumed.

The two-process runs here are real processes in a real gloo process group on loopback, running the ``srcube train``
command's function in processes spawned from the test process (clean ones: nothing earlier tests left in the test
process comes with them). The same runs started as separate commands, by ``srcube train --nproc 2`` and by
``torchrun``, are the slow tests at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch.utils.data import BatchSampler, DataLoader, RandomSampler
from typer.testing import CliRunner

from srcube.cli.commands import app
from srcube.cli.training import train
from srcube.pipeline.errors import SrcubeError
from srcube.training.config import ConfigError, load_config
from srcube.training.distributed import (
    DistributedConfigError,
    RankBatches,
    World,
    check_batch,
    choose_backend,
    free_port,
    launch,
    loss_weight,
    share,
    train_device,
    world_from_env,
)
from srcube.training.trainer import Trainer

runner = CliRunner()
#: the largest difference of any weight between 2 processes and 1 after 10 steps (measured: 7.5e-9, a float32 ulp
#: of these weights: the gradient of a global batch is summed in another order). A wrong share of the gradient
#: (an unweighted short last batch, a gradient not averaged) moves weights by 1e-5 and more.
TOLERANCE = 1e-6


# --- the batches --------------------------------------------------------------------------------------------------


def test_the_shares_of_a_batch_are_the_batch_in_order():
    for n in range(1, 10):
        for size in range(1, 5):
            parts = [share(n, World(rank=r, size=size)) for r in range(size)]
            assert [i for p in parts for i in p] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
            # a rank's weighted mean over its share, averaged over the ranks as DistributedDataParallel averages
            # gradients: each sample counts 1 / n, as in the mean over the whole batch
            for r, part in enumerate(parts):
                weight = loss_weight(n, World(rank=r, size=size))
                assert weight / size / len(part) == pytest.approx(1 / n) if part else weight == 0


@pytest.mark.parametrize("size", [1, 2, 4])
def test_each_rank_takes_its_share_of_the_one_process_batches(size: int):
    """Every rank draws the one-process trainer's permutation from the same generator: joined in rank order, the
    ranks' batches are the one-process batches (a short last batch too; a rank without a sample in it computes one
    with weight 0), and the generator ends where the one-process trainer's does (what checkpoints save)."""
    data = list(range(10))  # batches of 4: 4, 4, 2

    def one_process() -> tuple[list[list[int]], torch.Tensor]:
        g = torch.Generator().manual_seed(3)
        batches = [b.tolist() for _ in range(2) for b in DataLoader(data, batch_size=4, shuffle=True, generator=g)]
        return batches, g.get_state()

    def rank(r: int) -> tuple[list[list[int]], torch.Tensor]:
        g = torch.Generator().manual_seed(3)
        sampler = RankBatches(BatchSampler(RandomSampler(data, generator=g), 4, drop_last=False), World(r, size))
        batches = [b.tolist() for _ in range(2) for b in DataLoader(data, batch_sampler=sampler, generator=g)]
        return batches, g.get_state()

    want, state = one_process()
    ranks = [rank(r) for r in range(size)]
    for i, batch in enumerate(want):
        got = [x for r, (batches, _) in enumerate(ranks) for x in batches[i]
               if loss_weight(len(batch), World(r, size)) > 0]
        assert got == batch, i
    assert want[2] != want[5]  # the second epoch is shuffled anew
    for _, end in ranks:
        assert torch.equal(end, state)
    if size == 4:  # batch 2 of 2 samples: ranks 2 and 3 compute the batch's first sample, weighted 0
        assert ranks[2][0][2] == ranks[3][0][2] == want[2][:1]
        assert loss_weight(2, World(2, 4)) == loss_weight(2, World(3, 4)) == 0


# --- the environment of a launched process ----------------------------------------------------------------------


def test_world_from_the_launcher_environment():
    assert world_from_env({}) == World() and not World().launched and World().main
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "h"}
    assert world_from_env(env) == World(rank=3, size=4, local_rank=1, local_size=2, launched=True)
    assert not world_from_env(env).main
    assert world_from_env({"WORLD_SIZE": "1", "RANK": "0"}).launched  # torchrun of one process: a group of one
    for bad in ({"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "3"}):
        with pytest.raises(DistributedConfigError, match="torchrun or --nproc"):
            world_from_env(bad)


def test_data_parallel_errors_say_what_to_change():
    assert check_batch(16, 4) == 4
    with pytest.raises(DistributedConfigError, match=r"train\.batch_size 6 \(the global batch\) does not divide over "
                                                     r"4 processes.*multiple of 4 \(e\.g\. 4;.*divides 6"):
        check_batch(6, 4)
    with pytest.raises(DistributedConfigError, match="needs at least 1"):
        check_batch(4, 0)
    assert issubclass(DistributedConfigError, SrcubeError) and issubclass(DistributedConfigError, ConfigError)
    cpu = torch.device("cpu")
    assert choose_backend("auto", cpu) == "gloo" and choose_backend("auto", torch.device("cuda", 1)) == "nccl"
    assert choose_backend("gloo", torch.device("cuda", 0)) == "gloo"
    with pytest.raises(DistributedConfigError, match=r"NCCL backend reduces CUDA tensors.*--backend gloo"):
        choose_backend("nccl", cpu)
    with pytest.raises(DistributedConfigError, match="'mpi' is not one of auto, nccl, gloo"):
        choose_backend("mpi", cpu)
    assert train_device("cpu", World(1, 2, 1, 2, launched=True)) == cpu
    if torch.cuda.device_count() < 8:
        with pytest.raises(DistributedConfigError, match=r"local rank 7 of 8.*at most"):
            train_device("cuda", World(7, 8, 7, 8, launched=True))


# --- the launcher -----------------------------------------------------------------------------------------------


def test_launch_gives_each_process_its_place(tmp_path: Path):
    code = ("import os, pathlib, sys; e = os.environ; pathlib.Path(sys.argv[1], e['RANK']).write_text("
            "' '.join(e[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', "
            "'MASTER_PORT')))")
    assert launch(3, [sys.executable, "-c", code, str(tmp_path)]) == 0
    places = [(tmp_path / str(r)).read_text().split() for r in range(3)]
    assert [p[:5] for p in places] == [[str(r), "3", str(r), "3", "127.0.0.1"] for r in range(3)]
    assert len({p[5] for p in places}) == 1  # one rendezvous


def test_launch_stops_the_others_when_one_fails(tmp_path: Path):
    """A failing rank ends the run with its exit code; the others, which would wait for it, are stopped."""
    code = ("import os, sys, time, pathlib; r = int(os.environ['RANK'])\n"
            "if r == 1: sys.exit(3)\n"
            "pathlib.Path(sys.argv[1], str(os.getpid())).touch(); time.sleep(120)")
    t0 = time.monotonic()
    assert launch(2, [sys.executable, "-c", code, str(tmp_path)], poll_s=0.05) == 3
    assert time.monotonic() - t0 < 60  # not the survivor's two minutes
    for pid_file in tmp_path.iterdir():  # the survivor is gone
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.name), 0)


# --- two processes train the weights of one ---------------------------------------------------------------------


def _config(path: Path, output: Path, src: str, **train_over: Any) -> Path:
    """srcnn x2 on 16 px crops: 19 samples in global batches of 4 (4, 4, 4, 4, 3: the last one short, shared out
    2 + 1), an EMA, one thread per process (the processes stay out of each other's OpenMP thread teams)."""
    path.write_text(yaml.safe_dump({
        "name": "ddp", "output": str(output), "seed": 7,
        "model": {"architecture": "srcnn", "scale": 2, "config": {"features": [8, 4]}},
        "data": {"kind": "wald", "sources": [src], "patch": 16, "train_samples": 19, "val_samples": 6},
        "train": {"epochs": 2, "batch_size": 4, "loss": {"l1": 1.0, "ssim": 0.1}, "scheduler": "constant",
                  "ema": 0.9, "threads": 1, **train_over}}))
    return path


def _rank(rank: int, size: int, port: int, config: Path, options: dict[str, Any]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(size), RANK=str(rank),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size))
    train(config, **options)


def train_on_processes(size: int, config: Path, **options: Any) -> None:
    """``srcube train CONFIG`` as ``size`` spawned processes of one gloo process group on loopback, with the
    environment torchrun gives its workers; a failing rank's traceback is raised here. Spawned, not forked: a fork
    of a test process would inherit what earlier tests left in it (object-store sessions, event loops, a Dask
    client), and a rank once died of that at exit (exit code 1) after a run of the object-store tests."""
    import torch.multiprocessing as mp

    mp.start_processes(_rank, args=(size, free_port(), config, options), nprocs=size, start_method="spawn")


def _checkpoint(out: Path) -> dict[str, Any]:
    return torch.load(out / "checkpoints" / "last.pt", weights_only=True)


def assert_same_weights(got: dict[str, Any], want: dict[str, Any], tolerance: float = TOLERANCE) -> float:
    """The two checkpoints hold the same run: steps, weights and EMA within ``tolerance``, the same shuffling state
    and validation history. Returns the largest weight difference."""
    assert (got["epoch"], got["step"]) == (want["epoch"], want["step"])
    diff = 0.0
    for key in ("model", "ema"):
        for name, value in want[key].items():
            if value.is_floating_point():
                diff = max(diff, float((got[key][name] - value).abs().max()))
            else:
                assert torch.equal(got[key][name], value), name
    assert diff <= tolerance, f"weights differ by {diff:.3g} > {tolerance}"
    assert torch.equal(got["rng"]["shuffle"], want["rng"]["shuffle"])  # a resumed run shuffles on alike
    for a, b in zip(got["history"], want["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-4)
    return diff


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> dict[str, Any]:
    """The reference: the config trained by one process, 2 epochs (10 steps)."""
    root = tmp_path_factory.mktemp("one-process")
    src = str(sample_dir / "cogs" / "T31UFS-A_20240612" / "B04.tif")
    Trainer(load_config(_config(root / "c.yaml", root / "run", src))).fit()
    return {"src": src, "checkpoint": _checkpoint(root / "run")}


def test_two_gloo_processes_train_the_weights_of_one(tmp_path: Path, one_process: dict[str, Any]):
    out = tmp_path / "run"
    train_on_processes(2, _config(tmp_path / "c.yaml", out, one_process["src"]))
    ddp = _checkpoint(out)
    assert_same_weights(ddp, one_process["checkpoint"])
    # rank 0 alone wrote: one log row per epoch, the weights once
    assert len((out / "metrics.csv").read_text().splitlines()) == 3
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.yaml", "ddp.json", "ddp.safetensors",
                                                     "metrics.csv", "tb"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # no temporary left
    import json

    assert json.loads((out / "ddp.json").read_text())["training"]["processes"] == 2


@pytest.mark.slow  # ~30 s; the default run covers one-process resume (test_training: resumes as if never stopped)
# and 2-process training (test_two_gloo_processes_train_the_weights_of_one)
def test_a_data_parallel_run_resumes_from_its_checkpoint(tmp_path: Path, one_process: dict[str, Any]):
    """Stopped after one epoch, resumed on two processes (every rank reads rank 0's checkpoint), or on one: the
    weights of the uninterrupted one-process run."""
    import shutil

    out = tmp_path / "run"
    config = _config(tmp_path / "c.yaml", out, one_process["src"])
    train_on_processes(2, config, epochs=1)
    assert _checkpoint(out)["epoch"] == 1
    shutil.copytree(out, tmp_path / "alone")
    train_on_processes(2, config, auto_resume=True)  # as a restarted Job does: resume since there is a checkpoint
    assert_same_weights(_checkpoint(out), one_process["checkpoint"])
    assert len((out / "metrics.csv").read_text().splitlines()) == 3  # the resumed run appends to the log
    alone = _config(tmp_path / "alone.yaml", tmp_path / "alone", one_process["src"])
    Trainer(load_config(alone), resume=True).fit()
    assert_same_weights(_checkpoint(tmp_path / "alone"), one_process["checkpoint"])


@pytest.mark.slow  # ~30 s of gloo processes on real frames; test_two_gloo_processes_train_the_weights_of_one covers the
# data-parallel weighting and tests/training/test_selfsup.py the self-supervised batch in the default run
def test_self_supervised_probav_training_is_shared_out_alike(tmp_path: Path):
    """HighRes-net with the self-supervised term (a Wald batch and a batch of real views predicting a held-out real
    frame, fused in one forward pass): two gloo processes, each its share of both batches, train the weights of
    one process (6 Wald and 7 self-supervised samples in global batches of 4: the last ones short, 2 and 3, each
    shared out by its own size, 1 + 1 and 2 + 1, and weighed by its share). Tolerance: a tenth
    of the learning rate (2e-4). Adam's first steps move a weight by about the learning rate whatever the size of
    its gradient, so the float rounding of sums taken in another order moves the weights of a near-zero gradient by
    a part of it: HighRes-net differs by 4.0e-6 so without the self-supervised term and 1.6e-6 with it."""
    from tests.support.helpers import shared_path

    shared_path("probav_kelvins_imgsets")

    def config(name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "name": "ss", "output": str(tmp_path / name), "seed": 3,
            "model": {"architecture": "highresnet", "scale": 3,
                      "config": {"features": 8, "encoder_blocks": 1, "n_views": 4}},
            "data": {"kind": "scenes-multiframe", "task": "probav", "patch": 36, "n_views": 4, "train_samples": 6,
                     "val_samples": 2, "selfsup_samples": 7},
            "train": {"epochs": 1, "batch_size": 4, "loss": {"cmse": 1.0, "selfsup": 1.0}, "scheduler": "constant",
                      "ema": 0.9, "threads": 1}}))
        return path

    Trainer(load_config(config("one"))).fit()
    train_on_processes(2, config("two"))
    assert_same_weights(_checkpoint(tmp_path / "two"), _checkpoint(tmp_path / "one"), tolerance=2e-5)


# --- AMP ------------------------------------------------------------------------------------------------------


def test_bf16_autocast_trains_on_a_cpu(tmp_path: Path, sample_dir: Path):
    """--amp bf16 runs the forward pass under CPU autocast (the code path of CUDA's, which scripts/gpu-check.sh
    runs); fp16, which needs CUDA's loss scaling, is refused on a CPU before anything runs."""
    src = str(sample_dir / "cogs" / "T31UFS-A_20240612" / "B04.tif")
    config = _config(tmp_path / "c.yaml", tmp_path / "run", src, epochs=1, max_steps_per_epoch=2, amp="bf16")
    trainer = Trainer(load_config(config))
    assert trainer.amp == torch.bfloat16
    lr, _ = next(iter(trainer.loader))
    made: set[torch.dtype] = set()
    for conv in (m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)):
        conv.register_forward_hook(lambda _m, _i, out: made.add(out.dtype))
    with trainer._autocast():
        trainer.model(lr)
    assert made == {torch.bfloat16}  # the convolutions ran in bf16
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    history = trainer.fit()["history"]
    assert trainer.step == 2 and torch.isfinite(torch.tensor(history[0]["train_loss"]))
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    res = runner.invoke(app, ["train", str(config), "--amp", "fp16", "--output", str(tmp_path / "fp16")])
    assert res.exit_code == 2 and "fp16 autocast (with loss scaling) is for CUDA" in " ".join(res.output.split())


@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_steps_on_cuda(tmp_path: Path, sample_dir: Path, amp: str):
    """A few training steps under CUDA autocast (fp16 with loss scaling): finite losses, weights that move."""
    src = str(sample_dir / "cogs" / "T31UFS-A_20240612" / "B04.tif")
    config = _config(tmp_path / "c.yaml", tmp_path / "run", src, epochs=1, amp=amp, threads=None)
    trainer = Trainer(load_config(config))
    assert trainer.device.type == "cuda" and trainer.amp == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert trainer.scaler.is_enabled() is (amp == "fp16")
    history = trainer.fit()["history"]
    assert trainer.step == 5 and torch.isfinite(torch.tensor(history[0]["train_loss"]))


@pytest.mark.gpu
def test_torchrun_trains_on_every_gpu_with_nccl(tmp_path: Path, sample_dir: Path):
    """`torchrun --nproc-per-node <GPUs> -m srcube.cli train --amp fp16`: one process per GPU, NCCL (chosen by
    --backend auto), DistributedDataParallel on CUDA, validation joined over NCCL, rank 0's checkpoint."""
    gpus = torch.cuda.device_count()
    src = str(sample_dir / "cogs" / "T31UFS-A_20240612" / "B04.tif")
    out = tmp_path / "run"
    config = _config(tmp_path / "c.yaml", out, src, batch_size=2 * gpus, threads=None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(gpus), "-m", "srcube.cli", "train", str(config), "--amp", "fp16"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"x {gpus} processes (nccl)" in " ".join(proc.stdout.split())
    state = _checkpoint(out)
    assert state["epoch"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())


# --- the launchers, as commands ---------------------------------------------------------------------------------


def test_the_launcher_refuses_what_cannot_run(tmp_path: Path, sample_dir: Path, monkeypatch: pytest.MonkeyPatch):
    src = str(sample_dir / "cogs" / "T31UFS-A_20240612" / "B04.tif")
    config = _config(tmp_path / "c.yaml", tmp_path / "run", src)
    res = runner.invoke(app, ["train", str(config), "--nproc", "3"])  # batch 4 over 3: before any process starts
    assert res.exit_code == 2 and "does not divide over 3 processes" in " ".join(res.output.split())
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = runner.invoke(app, ["train", str(config), "--nproc", "2"])
    assert res.exit_code == 2 and "leave --nproc out under torchrun" in " ".join(res.output.split())
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["--nproc", "torchrun"])
def test_launched_commands_train_the_weights_of_one(tmp_path: Path, one_process: dict[str, Any], launcher: str):
    """The default run's two-process tests, started as commands: `srcube train --nproc 2` and `torchrun
    --standalone --nproc-per-node 2 -m srcube.cli train` (each process imports torch anew: slow here)."""
    out = tmp_path / "run"
    config = _config(tmp_path / "c.yaml", out, one_process["src"])
    if launcher == "--nproc":
        command = [sys.executable, "-m", "srcube.cli", "train", str(config), "--nproc", "2"]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                   "srcube.cli", "train", str(config)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "x 2 processes (gloo)" in " ".join(proc.stdout.split())
    assert_same_weights(_checkpoint(out), one_process["checkpoint"])


"""Streaming metrics synchronise across processes under torch.distributed (gloo, two CPU processes)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kdlens import measures as M


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g, dtype=torch.float64) + 2
    y = x[:, :4] @ torch.randn(4, 4, generator=g, dtype=torch.float64) + torch.randn(300, 4, generator=g,
                                                                                     dtype=torch.float64)
    probs = torch.softmax(3 * torch.randn(300, 5, generator=g, dtype=torch.float64), -1)
    labels = torch.randint(0, 5, (300,), generator=g)
    return x, y, probs, labels


def worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x, y, probs, labels = data()
    shard = slice(rank * 170, 170 + rank * 130)  # uneven shards: 170 and 130 examples
    metrics = {"linear": M.LinearCKA(), "debiased": M.LinearCKA(debiased=True), "ece": M.CalibrationError(),
               "agreement": M.Agreement(), "matrix": M.CKAMatrix(["x", "x2"], ["y"])}
    for start in range(shard.start, shard.stop, 40):
        rows = slice(start, min(start + 40, shard.stop))
        metrics["linear"].update(x[rows], y[rows])
        metrics["debiased"].update(x[rows], y[rows])
        metrics["ece"].update(probs[rows], labels[rows])
        metrics["agreement"].update(probs[rows], probs[rows].flip(-1))
        metrics["matrix"].update({"x": x[rows], "x2": x[rows].tanh()}, {"y": y[rows]})
    queue.put((rank, {name: m.compute().tolist() for name, m in metrics.items()}))
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_streaming_metrics_sync_across_two_processes():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(rank, 2, free_port_once, queue))
             for free_port_once in [free_port()] for rank in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    x, y, probs, labels = data()
    expected = {
        "linear": M.linear_cka(x, y), "debiased": M.linear_cka(x, y, debiased=True),
        "ece": M.expected_calibration_error(probs, labels), "agreement": M.agreement(probs, probs.flip(-1)),
    }
    matrix = M.cka_matrix({"x": x, "x2": x.tanh()}, {"y": y}).tolist()
    for rank in (0, 1):  # every rank sees the global value, not its shard's
        for name, value in expected.items():
            assert results[rank][name] == pytest.approx(value, rel=1e-9), (rank, name)
        assert results[rank]["matrix"] == [pytest.approx(row, rel=1e-9) for row in matrix]

"""How fast the vision lab is made: shapes images per second, and the whole lab (teacher + 7 students) from nothing.

    .venv/bin/python benchmarks/bench_lab.py                 # both (about 4 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_lab.py --only shapes   # the task generator alone (seconds)
    .venv/bin/python benchmarks/bench_lab.py --only cache    # students with and without the teacher cache

Targets (issue 3): 100,000 shapes images in seconds (< 10 s here); the default lab built in under 240 s on a 2-core
CPU, with the teacher at >= 97% accuracy on both ``test`` and ``test_shifted``. The lab is built in a fresh temporary
folder, so nothing is loaded from a cache. There is no peer library that draws this task or builds this lab, so the
script prints absolute figures against the targets rather than a ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from kdlens.config import validate
from kdlens.distill import StrategyConfig, train
from kdlens.lab import vision
from kdlens.lab.cnn import SmallCNN
from kdlens.tasks.shapes import ShapesConfig, make_split

SHAPES_TARGET_S, LAB_TARGET_S, TEACHER_TARGET = 10.0, 240.0, 0.97


def bench_shapes(n: int = 100_000) -> None:
    make_split(ShapesConfig(), "train", 2_048)  # warm-up: first-call allocations
    started = time.perf_counter()
    data = make_split(ShapesConfig(), "train", n)
    seconds = time.perf_counter() - started
    print(f"shapes: {n:,} images {tuple(data.images.shape[1:])} in {seconds:.2f} s = {n / seconds:,.0f} images/s "
          f"(target < {SHAPES_TARGET_S:.0f} s: {'met' if seconds < SHAPES_TARGET_S else 'MISSED'})")


def bench_lab() -> None:
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        lab = vision.build(root, progress=False)
        seconds = time.perf_counter() - started
    print(f"\n{'model':<16}{'test acc':>10}{'shifted acc':>13}{'test agree':>12}{'shifted agree':>15}{'seconds':>9}")
    for name, m in lab.metrics.items():
        cells = [f"{m[k]:.3f}" if k in m else "-" for k in (
            "test/accuracy", "test_shifted/accuracy", "test/agreement", "test_shifted/agreement")]
        print(f"{name:<16}{cells[0]:>10}{cells[1]:>13}{cells[2]:>12}{cells[3]:>15}{m['seconds']:>9.1f}")
    teacher = lab.metrics["teacher"]
    worst = min(teacher["test/accuracy"], teacher["test_shifted/accuracy"])
    print(f"\nlab: {seconds:.1f} s from nothing (target < {LAB_TARGET_S:.0f} s: "
          f"{'met' if seconds < LAB_TARGET_S else 'MISSED'}); teacher's worse split {worst:.3f} "
          f"(target >= {TEACHER_TARGET}: {'met' if worst >= TEACHER_TARGET else 'MISSED'})")


def bench_teacher_cache(students: tuple[str, ...] = ("output_kd", "attribution_kd")) -> None:
    """A lab student trained with the teacher's outputs looked up (the default) against the teacher run every step."""
    recipe = vision.VisionLabConfig(students=[])
    with tempfile.TemporaryDirectory() as root:
        teacher = vision.build(root, recipe, progress=False).teacher()  # not timed
        transfer = make_split(recipe.shapes, "transfer", recipe.n_transfer)
        kwargs = {"n_classes": recipe.shapes.n_classes, **recipe.student_model.model_dump()}
        strategies = vision.student_strategies()
        for name in students:
            seconds = {}
            for cache_mb in (1024, 0):
                torch.manual_seed(0)
                config = recipe.student_train.model_copy(update={"teacher_cache_mb": cache_mb, "progress": False})
                started = time.perf_counter()
                train(SmallCNN(**kwargs), transfer, f"{root}/{name}-{cache_mb}",
                      validate({"name": name, **strategies[name]}, StrategyConfig), config, teacher=teacher)
                seconds[cache_mb] = time.perf_counter() - started
            print(f"teacher cache, {name}: {seconds[1024]:.1f} s cached, {seconds[0]:.1f} s uncached, "
                  f"{seconds[0] / seconds[1024]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=["shapes", "lab", "cache"],
                        default=["shapes", "lab"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if "shapes" in args.only:
        bench_shapes()
    if "lab" in args.only:
        bench_lab()
    if "cache" in args.only:
        bench_teacher_cache()


if __name__ == "__main__":
    main()

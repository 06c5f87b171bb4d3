"""kdlens attribution probes against captum on the same models and inputs, in one process: time, ratio, difference.

    .venv/bin/python benchmarks/bench_attribution.py               # everything (about a minute on 2 cores)
    .venv/bin/python benchmarks/bench_attribution.py --only ig

Times are medians of ``--repeats`` calls after one warm-up call, torch's default thread count, float32, CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import OrderedDict

import torch
from torch import nn

from kdlens.probes import GradCAM, IntegratedGradients


def median_time(fn, repeats: int) -> tuple[float, object]:
    """(median wall seconds over ``repeats`` calls after a warm-up call, the last result)."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def row(name: str, seconds: float, extra: str = "") -> None:
    print(f"  {name:<44} {seconds:8.3f} s  {extra}")


def four_conv_cnn(widths: tuple[int, int, int, int], n_classes: int = 10) -> nn.Module:
    """conv-BN-ReLU x 4 (32x32, then 16x16, 8x8, 8x8), global average pooling, linear head; layer "block4"."""
    w1, w2, w3, w4 = widths

    def unit(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
        layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))

    return nn.Sequential(OrderedDict(
        block1=unit(3, w1, False), block2=unit(w1, w2, True), block3=unit(w2, w3, True), block4=unit(w3, w4, False),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), head=nn.Linear(w4, n_classes)))


def bench_gradcam(repeats: int, n: int = 256) -> None:
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    teacher = four_conv_cnn((32, 64, 128, 128)).eval()
    student = four_conv_cnn((16, 32, 64, 64)).eval()
    x = torch.rand(n, 3, 32, 32)
    target = torch.randint(0, 10, (n,))
    print(f"\nGrad-CAM, {n} images 3x32x32, 4-conv CNNs (teacher widths 32-64-128-128, student 16-32-64-64), "
          "layer block4 (8x8)")
    ours_teacher, ours_student = GradCAM(teacher, "block4"), GradCAM(student, "block4")
    captum = LayerGradCam(teacher, teacher.block4)
    captum_s, theirs = median_time(lambda: captum.attribute(x, target, relu_attributions=True), repeats)
    row("captum LayerGradCam, teacher", captum_s)
    teacher_s, mine = median_time(lambda: ours_teacher.attribute(x, target), repeats)
    row("kdlens GradCAM, teacher", teacher_s, f"{captum_s / teacher_s:5.2f}x captum; "
        f"max |diff| vs captum {float((mine - theirs[:, 0].detach()).abs().max()):.1e} "
        f"(map max {float(mine.max()):.1e})")
    both_s, _ = median_time(lambda: (ours_teacher.attribute(x, target), ours_student.attribute(x, target)), repeats)
    row("kdlens GradCAM, teacher + student", both_s, f"{captum_s / both_s:5.2f}x captum on the teacher alone "
        f"(target: >= 1.00x)")


def bench_ig(repeats: int, n: int = 256, n_steps: int = 50) -> None:
    """Two MLPs: 784-128-10, where captum takes the 0.14-0.2 s the issue quotes and its own overhead dominates, and
    3072-512-256-10, where the arithmetic of 12,800 forward/backward rows dominates every implementation."""
    for dims in ((784, 128, 10), (3072, 512, 256, 10)):
        _bench_ig_mlp(dims, repeats, n, n_steps)


def _bench_ig_mlp(dims: tuple[int, ...], repeats: int, n: int, n_steps: int) -> None:
    from captum.attr import IntegratedGradients as CaptumIG

    torch.manual_seed(1)
    layers: list[nn.Module] = []
    for width_in, width_out in zip(dims[:-1], dims[1:], strict=False):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    mlp = nn.Sequential(*layers[:-1]).eval()
    x = torch.rand(n, dims[0])
    target = torch.randint(0, dims[-1], (n,))
    print(f"\nintegrated gradients, MLP {'-'.join(map(str, dims))} on {n} inputs, {n_steps} steps gausslegendre "
          f"({n * n_steps:,} forward/backward rows)")
    captum = CaptumIG(mlp)
    captum_s, theirs = median_time(lambda: captum.attribute(x, target=target, n_steps=n_steps), repeats)
    row("captum IntegratedGradients (one batch)", captum_s)
    ours = IntegratedGradients(mlp, n_steps=n_steps)
    ours_s, mine = median_time(lambda: ours.attribute(x, target), repeats)
    row("kdlens IntegratedGradients", ours_s, f"{captum_s / ours_s:5.2f}x captum (target: >= 2x); "
        f"max |diff| {float((mine - theirs.detach()).abs().max()):.1e} (max |attr| {float(mine.abs().max()):.1e})")

    # The floor for any implementation: one forward and one input-gradient pass over every row, nothing else.
    rows = x.repeat(n_steps, 1).requires_grad_(True)
    rows_target = target.repeat(n_steps)

    def floor():
        score = mlp(rows).gather(1, rows_target[:, None]).sum()
        return torch.autograd.grad(score, rows)

    floor_s, _ = median_time(floor, repeats)
    row("bare forward + input gradient of all rows", floor_s, f"{captum_s / floor_s:5.2f}x captum (bound)")


BENCHES = {"gradcam": bench_gradcam, "ig": bench_ig}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats} after a warm-up")
    for name in args.only:
        BENCHES[name](args.repeats)


if __name__ == "__main__":
    main()

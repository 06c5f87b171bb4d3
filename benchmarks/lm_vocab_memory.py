"""Memory and time of the language-model operations the audit runs, on a real vocabulary: a model shaped like
Gemma-3-270M (hidden 640, 18 layers, 262,144 tokens), random weights, built from its config (nothing downloaded).

    python benchmarks/lm_vocab_memory.py [--batch-size 8] [--texts 16] [--words 120] [--operations score ...]

Each operation runs in a fresh process, so its peak resident memory is its own: the weights alone (the baseline),
a plain forward pass over the texts (the floor: what any use of the model costs), ``LanguageModel.score`` (the
calibration stage's call: log-probabilities of each text's last half), ``LanguageModel.hidden_states`` (the
representations stage's) and ``LanguageModel.token_logits`` (token-level KD's: it returns (T, V) float32 per text
by design, so its row also gives what it returned and what it held beyond that). Prints one row each: seconds,
peak resident memory, both against the floor, and whether issue 15's target holds: peak <= weights + 1.5 GB and
time <= 2x the floor (for token_logits, beyond what it returns).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

OPERATIONS = ("score", "hidden_states", "token_logits")
TARGET_MB = 1.5 * 1024  # issue 15: peak resident memory at most the weights + 1.5 GB (beyond what is returned)

CHILD = r"""
import json, resource, sys, time, torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig
from kdlens.subjects import LanguageModel, build_word_tokenizer

operation, batch_size, n_texts, words = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
vocabulary = [f"w{i}" for i in range(4000)]
texts = [" ".join(vocabulary[(7 * t + 13 * j) % 4000] for j in range(words)) for t in range(n_texts)]
tokenizer = build_word_tokenizer(texts)
config = Gemma3TextConfig(vocab_size=262_144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                          num_attention_heads=4, num_key_value_heads=1, head_dim=256, max_position_embeddings=2048,
                          pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id)
model = LanguageModel(Gemma3ForCausalLM(config).eval(), tokenizer, "gemma-shaped")
torch.set_grad_enabled(False)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if operation == "forward":
    for lo in range(0, n_texts, batch_size):
        batch = tokenizer(texts[lo:lo + batch_size], return_tensors="pt", padding=True)
        model.model(**batch)
elif operation == "score":
    halves = [t.split() for t in texts]
    model.score([" ".join(h[: words // 2]) for h in halves], [" " + " ".join(h[words // 2:]) for h in halves],
                batch_size=batch_size)
elif operation == "hidden_states":
    model.hidden_states(texts, batch_size=batch_size)
elif operation == "token_logits":
    returned = sum(r.logits.numel() * r.logits.element_size() for r in model.token_logits(texts, batch_size))
seconds = time.perf_counter() - started
print(json.dumps({"operation": operation, "seconds": seconds, "weights_mb": base / 1024,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "returned_mb": returned / 2**20 if operation == "token_logits" else 0.0}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--words", type=int, default=120)
    parser.add_argument("--operations", nargs="+", default=list(OPERATIONS), choices=OPERATIONS,
                        help="which LanguageModel calls to measure (the weights and the floor always run)")
    args = parser.parse_args()
    rows = []
    for operation in ("weights", "forward", *args.operations):
        done = subprocess.run([sys.executable, "-c", CHILD, operation, str(args.batch_size), str(args.texts),
                               str(args.words)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    weights, floor = rows[0]["peak_mb"], rows[1]
    print(f"Gemma-3-270M-shaped, {args.texts} texts of {args.words} words, batch {args.batch_size}; "
          f"weights alone: {weights:,.0f} MB resident")
    print(f"{'operation':<14} {'seconds':>8} {'x floor':>8} {'peak MB':>9} {'above weights':>14} {'returned MB':>12} "
          f"{'target':>7}")
    for row in rows[1:]:
        held = row["peak_mb"] - weights - row["returned_mb"]
        met = held <= TARGET_MB and row["seconds"] <= 2 * floor["seconds"]
        print(f"{row['operation']:<14} {row['seconds']:8.2f} {row['seconds'] / floor['seconds']:8.2f} "
              f"{row['peak_mb']:9,.0f} {row['peak_mb'] - weights:14,.0f} {row['returned_mb']:12,.0f} "
              f"{'-' if row is floor else 'met' if met else 'missed':>7}")


if __name__ == "__main__":
    main()

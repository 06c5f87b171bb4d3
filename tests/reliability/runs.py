"""Small audits of each kind, from model folders saved on disk, for the fault matrices: a config another process
can run from a YAML file, and the stages it writes."""

from __future__ import annotations

from pathlib import Path

CLASSIFIER_STAGES = ("outputs", "representations", "attribution", "robustness", "gallery")
LM_STAGES = ("generate-teacher", "generate-student", "traces", "calibration", "representations")


def classifier_audit(root: Path, n: int = 16) -> dict:
    """A classifier audit of two tiny CNN folders on ``n`` images, batch size 1: with 16, the sharded stages
    (``outputs``, ``representations``, ``attribution``, ``robustness``) have two shards of 8 batches each."""
    import torch
    from safetensors.torch import save_file

    from kdlens.subjects import save_classifier
    from tests.audit.test_bad_input import tiny_cnn

    g = torch.Generator().manual_seed(0)
    save_file({"inputs": torch.rand(n, 3, 16, 16, generator=g), "labels": torch.randint(0, 3, (n,), generator=g)},
              str(root / "test.safetensors"))
    kwargs = {"n_classes": 3, "widths": [2, 4, 4]}
    return {"run_dir": str(root / "run"), "batch_size": 1,
            "data": {"task": "tensors", "splits": {"test": str(root / "test.safetensors")}},
            "teacher": {"checkpoint": str(save_classifier(tiny_cnn(), root / "teacher", kwargs))},
            "students": {"student": {"checkpoint": str(save_classifier(tiny_cnn(seed=1), root / "student",
                                                                       kwargs))}},
            "probes": {"robustness": {"steps": 1, "epsilons": [0.01]}, "attribution": {"agreement_threshold": 0.3}}}


def lm_audit(root: Path, n: int = 10) -> dict:
    """A language-model audit of two character-level Qwen2 folders on ``n`` chain questions, one trace (and one
    scored answer) a batch: with 10, each ``generate-*`` stage and ``calibration`` have three chunks (4, 4 and 2)."""
    from kdlens.tasks import chains
    from tests.probes.test_lm_representations import char_lm

    settings = chains.ChainsConfig(max_steps=2)
    questions = chains.make_split(settings, "test", n)
    texts = [q.prompt + chains.write_trace(q, "teacher") for q in questions] + ["0123456789 ?.,;="]
    for name, seed in (("teacher", 0), ("student", 1)):
        model = char_lm(seed, texts, name)
        model.model.save_pretrained(root / name)
        model.tokenizer.save_pretrained(root / name)
    return {"run_dir": str(root / "run"),
            "data": {"task": "reasoning", "chains": settings.model_dump(), "babi": None, "n": n},
            "teacher": {"checkpoint": str(root / "teacher")}, "students": {"student": {"checkpoint": str(
                root / "student")}},
            "probes": {"traces": {"max_new_tokens": 8, "batch_size": 1}, "calibration": {"batch_size": 1},
                       "representations": {"n": 4}}}


KINDS = {"classifier": (classifier_audit, CLASSIFIER_STAGES), "lm": (lm_audit, LM_STAGES)}

"""``kdlens crosscoder CONFIG``: the audit's crosscoder stages (:mod:`kdlens.audit.lm.crosscoder`) on two models
and a file of texts, in a run directory of their own: ``crosscoder-activations-<second>``,
``crosscoder-train-<second>`` and ``crosscoder-<second>``, each cached, so a killed run resumes (the activations
after their last saved chunk, the training from its last checkpoint). Steering needs questions whose answers and
steps can be checked: it runs in a language-model audit (``probes: {crosscoder: ...}``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlens import io
from kdlens.audit.lm import crosscoder
from kdlens.audit.lm.crosscoder_analysis import run_pair
from kdlens.config import dump_yaml, read_config_file, validate
from kdlens.diffing.config import CrosscoderConfig, TextsSource
from kdlens.rundir import RunDir
from kdlens.stages import StageRunner
from kdlens.subjects.sources import load_models
from kdlens.validation import fail


def as_crosscoder_config(config: Any) -> CrosscoderConfig:
    """``config`` as a :class:`CrosscoderConfig` (itself, a dict of its fields, or a YAML file's path)."""
    if isinstance(config, CrosscoderConfig):
        return config
    if isinstance(config, dict):
        return validate(config, CrosscoderConfig)
    return validate(read_config_file(config), CrosscoderConfig, source=str(config))


def read_texts_file(source: TextsSource) -> list[str]:
    """The first ``source.n`` non-empty texts of its files, in order (:class:`~kdlens.diffing.config.TextsSource`)."""
    texts: list[str] = []
    for path in [source.path] if isinstance(source.path, str) else source.path:
        texts += _read(Path(path), source)
    texts = [t for t in texts if t.strip()][:source.n]
    if len(texts) < 2:
        fail("texts", "at least 2 non-empty texts (one is held out)", str(len(texts)))
    return texts


def _read(path: Path, source: TextsSource) -> list[str]:
    if not path.is_file():
        fail("texts.path", "a local file of texts", f"{path} (no such file)", error=FileNotFoundError)
    kind = source.format or {".txt": "txt", ".md": "paragraphs", ".jsonl": "json", ".json": "json", ".csv": "csv",
                             ".parquet": "parquet"}.get(path.suffix.lower())
    if kind is None:
        fail("texts.path", "a .txt, .md, .jsonl, .json, .csv or .parquet file (or texts.format)", str(path))
    if kind in ("txt", "paragraphs"):
        text = path.read_text(encoding="utf-8")
        if kind == "txt":
            return text.splitlines()
        return [" ".join(block.split()) for block in text.split("\n\n")]
    import datasets

    table = datasets.load_dataset("json" if kind == "jsonl" else kind, data_files=str(path), split="train",
                                  keep_in_memory=True)
    if source.field not in table.column_names:
        fail("texts.field", f"one of {path.name}'s columns ({', '.join(table.column_names)})", repr(source.field))
    return [str(t) for t in table[source.field] if t is not None]


def diff(config: Any, progress: bool = True) -> dict:
    """Run ``kdlens crosscoder CONFIG``; returns the analysis's figures (the ``crosscoder-<second>`` stage's, also
    written to ``<run_dir>/crosscoder.json``) and ``run_dir``."""
    config = as_crosscoder_config(config)
    run = RunDir(config.run_dir)
    run.check_writable()
    texts = read_texts_file(config.texts)
    first, second = config.names
    models = load_models({first: config.first, second: config.second}, "lm", config.device, progress)
    for model in models.values():
        model.model.eval()
    run.claim()
    run.write_config(dump_yaml(config))
    read = crosscoder.read_texts(texts)
    with StageRunner(run, ["crosscoder"], progress) as runner, runner.line("crosscoder"):
        run_pair(runner, models, first, second, read, config.crosscoder)
    figures = run.stage(crosscoder.names(second)["analysis"]).figures()
    io.atomic_write_json(run.path / "crosscoder.json", figures)
    return {**figures, "run_dir": str(run.path)}

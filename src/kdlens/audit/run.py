"""``kdlens audit CONFIG``: one runner for every audit kind.

:func:`run` validates the config, lets its kind load and check data and models (before any long work), runs the
kind's stages through one :class:`~kdlens.stages.StageRunner`, then scores the students and writes ``results.json``.
"""

from __future__ import annotations

from typing import Any

from kdlens.audit.kind import AuditKind, kind_of
from kdlens.audit.results import write_results
from kdlens.audit.scorecard import scorecard
from kdlens.config import dump_yaml, read_config_file, validate
from kdlens.rundir import RunDir
from kdlens.stages import StageRunner


def as_config(config: Any) -> Any:
    """The config object of ``config`` (itself, a dict of its fields, or a YAML file's path), of its kind's type:
    an :class:`~kdlens.audit.AuditConfig` (classifiers) or an :class:`~kdlens.audit.LMAuditConfig` (``data: {task:
    reasoning}``)."""
    kind = kind_of(config)
    if isinstance(config, kind.config_type):
        return config
    if isinstance(config, dict):
        return validate(config, kind.config_type)
    raw = read_config_file(config)
    return validate(raw, kind_of(raw).config_type, source=str(config))


def run(config: Any, teacher: Any = None, students: dict | None = None, baselines: dict | None = None,
        progress: bool = True) -> dict:
    """Audit a teacher against its students as ``config`` describes; returns what ``results.json`` holds.

    Parameters
    ----------
    config : AuditConfig, LMAuditConfig, a dict of its fields, or the path of a YAML file (the kind follows
        ``data.task``: ``reasoning`` is a language-model audit, anything else a classifier audit)
    teacher, students, baselines : models that take the place of the config's sources (for Python callers):
        ``nn.Module`` classifiers, or :class:`~kdlens.subjects.LanguageModel` objects (no baselines)
    progress : show the lab's training bars and one line per stage

    Returns
    -------
    dict: the results (``<run_dir>/results.json``; layout in ``docs/results.md``).
    """
    config = as_config(config)
    kind: AuditKind = kind_of(config)
    run_dir = RunDir(config.run_dir)
    run_dir.manifest()  # a run directory of an older layout, or a folder kdlens did not make, is refused first
    run_dir.check_writable()
    audit = kind.prepare(config, teacher, students, baselines, progress)
    run_dir.claim()
    run_dir.write_config(dump_yaml(audit.config))
    with StageRunner(run_dir, kind.lines, progress) as runner:
        kind.run_stages(audit, runner)
    headline = kind.headline(audit, run_dir)
    card = scorecard(headline.teacher, {n: headline.metrics[n] for n in audit.students}, audit.config.selection,
                     kind.wording(audit))
    return write_results(run_dir, kind.name, headline, audit.students, audit.baselines, card)

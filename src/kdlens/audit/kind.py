"""An audit kind: what differs between auditing classifiers and auditing language models, and nothing else.

Each kind gives its config model, how its data and models load (checked before any long work), its stages, its
headline numbers and the words its verdicts use. :func:`kdlens.audit.run`, the scorecard, ``results.json`` (whose
``kind`` names the kind) and ``kdlens audit`` are one each; the report draws per-kind sections from ``kind``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from kdlens.audit.scorecard import Wording
from kdlens.config import StrictModel, did_you_mean
from kdlens.rundir import RunDir
from kdlens.stages import StageRunner
from kdlens.validation import fail


@dataclass
class Prepared:
    """An audit ready to run: its resolved config, models by name (teacher first), and whatever the kind loaded
    (data, layers) in ``extra``."""

    config: Any
    models: dict[str, Any]
    students: list[str]
    baselines: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


@dataclass
class Headline:
    """What ``results.json`` says beside the scorecard: ``data``, the teacher's and every model's headline
    metrics (by name), and the kind's own top-level sections."""

    data: dict
    teacher: dict
    metrics: dict[str, dict]
    sections: dict


class AuditKind(Protocol):
    name: str  # results.json's "kind"
    config_type: type[StrictModel]
    tasks: tuple[str, ...]  # the data.task values it audits
    lines: tuple[str, ...]  # one progress line per stage, in order

    def prepare(self, config: Any, teacher: Any, students: dict | None, baselines: dict | None,
                progress: bool, device: str = "cpu") -> Prepared: ...

    def run_stages(self, audit: Prepared, runner: StageRunner) -> None: ...

    def headline(self, audit: Prepared, run: RunDir) -> Headline: ...

    def wording(self, audit: Prepared) -> Wording: ...


def kinds() -> dict[str, AuditKind]:
    """Every audit kind by name."""
    from kdlens.audit.classifier.kind import CLASSIFIER
    from kdlens.audit.lm.kind import LANGUAGE_MODEL

    return {CLASSIFIER.name: CLASSIFIER, LANGUAGE_MODEL.name: LANGUAGE_MODEL}


def kind_for_task(task: Any) -> AuditKind:
    """The kind that audits ``data.task`` (classifiers when the config names none); an unknown task lists them."""
    by_task = {t: kind for kind in kinds().values() for t in kind.tasks}
    if task is None:
        return kinds()["classifier"]
    if task not in by_task:
        fail("data.task", f"one of {', '.join(by_task)}", repr(task), did_you_mean(task, by_task).strip())
    return by_task[task]


def kind_of(config: Any) -> AuditKind:
    """The kind of a config object, or of a config dict as read from YAML."""
    for kind in kinds().values():
        if isinstance(config, kind.config_type):
            return kind
    data = config.get("data") if isinstance(config, dict) else None
    return kind_for_task(data.get("task") if isinstance(data, dict) else None)

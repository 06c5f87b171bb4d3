"""What every audit kind's config holds: where the run goes, the models, how a student is chosen, device, seed.

Each kind's config (:class:`~kdlens.audit.AuditConfig`, :class:`~kdlens.audit.LMAuditConfig`) adds its data and its
probes' settings.
"""

from __future__ import annotations

from pydantic import Field

from kdlens.audit.selection import SelectionRule
from kdlens.config import StrictModel
from kdlens.subjects.sources import ModelSource


class AuditSettings(StrictModel):
    """The keys every audit config has: ``run_dir``, ``teacher``, ``students`` (name: source), ``selection``,
    ``device`` and ``seed``."""

    run_dir: str
    teacher: ModelSource | None = None
    students: dict[str, ModelSource] = Field(default_factory=dict)
    selection: SelectionRule = Field(default_factory=SelectionRule)
    device: str = "cpu"
    seed: int = 0

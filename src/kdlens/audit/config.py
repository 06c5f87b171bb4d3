"""What every audit kind's config holds: where the run goes, the models, how a student is chosen, device, seed.

Each kind's config (:class:`~kdlens.audit.AuditConfig`, :class:`~kdlens.audit.LMAuditConfig`) adds its data and its
probes' settings.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from kdlens.audit.selection import SelectionRule
from kdlens.config import StrictModel
from kdlens.subjects.sources import ModelSource


class AuditSettings(StrictModel):
    """The keys every audit config has: ``run_dir``, ``teacher``, ``students`` (name: source), ``selection``,
    ``device`` and ``seed``."""

    run_dir: str = Field(description="the run directory: a new folder, or one kdlens made (an existing folder of "
                         "other files is refused)")
    teacher: ModelSource | None = None
    students: dict[str, ModelSource] = Field(default_factory=dict)
    selection: SelectionRule = Field(default_factory=SelectionRule)
    device: str = "cpu"
    seed: int = 0

    @field_validator("run_dir")
    @classmethod
    def _a_folder(cls, value: str) -> str:
        return check_run_dir(value)


def check_run_dir(value: str) -> str:
    """A ``run_dir`` that names a folder (an empty path would write into the current directory)."""
    if not value.strip():
        raise ValueError("run_dir must name a folder, e.g. runs/my-audit (an empty path would write into the "
                         "current directory)")
    return value

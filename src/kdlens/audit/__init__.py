"""Run probes as cached stages of a run directory, gather them into ``results.json``, choose a student.

>>> from kdlens import audit
>>> results = audit.run("examples/audit_lab.yaml")   # doctest: +SKIP
"""

from kdlens.audit.config import AuditConfig, SelectionRule
from kdlens.audit.lm_config import LMAuditConfig
from kdlens.audit.pipeline import run
from kdlens.audit.scorecard import scorecard

__all__ = ["AuditConfig", "LMAuditConfig", "SelectionRule", "run", "scorecard"]

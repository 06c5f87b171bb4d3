"""Run probes as cached stages of a run directory, gather them into ``results.json``, choose a student.

>>> from kdlens import audit
>>> results = audit.run("examples/audit_lab.yaml")   # doctest: +SKIP
"""

from kdlens.audit.classifier.config import AuditConfig
from kdlens.audit.lm.config import LMAuditConfig
from kdlens.audit.run import as_config, run, run_share
from kdlens.audit.scorecard import scorecard
from kdlens.audit.selection import SelectionRule

__all__ = ["AuditConfig", "LMAuditConfig", "SelectionRule", "as_config", "run", "run_share", "scorecard"]

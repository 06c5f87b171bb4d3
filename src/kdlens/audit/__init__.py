"""The audit: probes run as cached stages in a run directory (:mod:`kdlens.stages`), and what they found."""

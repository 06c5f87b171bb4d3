"""Teacher-guided selection of distillation data (``kdlens select``): :func:`~kdlens.select.run.select`."""

"""Distillation: losses (pure functions of logits and features), strategies (weighted losses + layer maps), the
trainer, and runs described by one YAML file."""

"""The classifier audit kind: its config, stages and headline."""

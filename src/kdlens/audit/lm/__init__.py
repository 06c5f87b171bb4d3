"""The language-model audit kind (models that reason in checkable steps): its config, stages and headline."""

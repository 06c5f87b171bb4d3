"""Data with ground truth: lab tasks that know the right reason, and loaders for users' own data."""

from kdlens.tasks.shapes import SHAPES, SPLITS, ShapesConfig, ShapesSplit, make_split

__all__ = ["SHAPES", "SPLITS", "ShapesConfig", "ShapesSplit", "make_split"]

"""Data with ground truth: lab tasks that know the right reason, and loaders for users' own data."""

from kdlens.tasks import babi, chains
from kdlens.tasks.babi import BabiConfig, BabiExample, BabiTraceCheck
from kdlens.tasks.chains import ChainExample, ChainsConfig
from kdlens.tasks.files import EvalSplit, load_image_folder, load_tensor_split, save_tensor_split
from kdlens.tasks.shapes import SHAPES, SPLITS, ShapesConfig, ShapesSplit, make_split
from kdlens.tasks.text import TraceCheck

__all__ = ["SHAPES", "SPLITS", "ShapesConfig", "ShapesSplit", "make_split",
           "EvalSplit", "load_tensor_split", "load_image_folder", "save_tensor_split",
           "chains", "ChainsConfig", "ChainExample", "babi", "BabiConfig", "BabiExample", "BabiTraceCheck",
           "TraceCheck"]

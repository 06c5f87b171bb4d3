"""The report reads files alone: importing it, and every module in it, never imports torch."""

import os
import subprocess
import sys


def test_importing_every_report_module_leaves_torch_unimported():
    code = ("import importlib, pkgutil, sys; import kdlens.report as report; "
            "names = [m.name for m in pkgutil.walk_packages(report.__path__, 'kdlens.report.')]; "
            "[importlib.import_module(name) for name in names]; "
            "assert names, 'no report modules found'; "
            "loaded = [name for name in sys.modules if name == 'torch' or name.startswith('torch.')]; "
            "assert not loaded, f'the report imported torch: {loaded[:3]}'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})

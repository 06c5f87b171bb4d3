"""The tiny language-model lab (built once for the package) and one audit of it that several modules read."""

import pytest
import yaml

from kdlens import audit
from tests.audit.lm.labs import lab_config
from tests.lab.test_lm import tiny


@pytest.fixture(scope="package")
def recipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm_recipe")
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny().model_dump(mode="json")))
    return {"path": str(path), "root": str(folder / "labs")}


@pytest.fixture(scope="package")
def audited(recipe, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lm_audit") / "run"
    return run_dir, audit.run(lab_config(recipe, run_dir), progress=False)

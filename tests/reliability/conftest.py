import pytest

from tests.reliability.runs import KINDS


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """Per audit kind: the folder of a finished audit (models, data, ``run/``) and its config. Read-only: tests
    that damage or resume a run work on copies."""
    from kdlens import audit

    out = {}
    for kind, (build, _) in KINDS.items():
        root = tmp_path_factory.mktemp(kind)
        config = build(root)
        audit.run(config, progress=False)
        out[kind] = root, config
    return out

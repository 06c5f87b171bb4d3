"""The trust boundary: with trust_remote_code off, nothing a checkpoint's config.json or a config names runs code
beyond the registered kdlens architectures (issue 14, item 1)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from kdlens import audit
from kdlens.lab.cnn import SmallCNN
from kdlens.subjects import load_classifier, save_classifier
from kdlens.subjects.checkpoint import build_architecture, trusted_architectures


def checkpoint(folder, architecture: str, kwargs: dict):
    """A checkpoint folder as a stranger could ship it: real weights, a config.json of their choosing."""
    save_classifier(SmallCNN(n_classes=3, widths=(2, 4, 4)), folder, {"n_classes": 3, "widths": [2, 4, 4]})
    (folder / "config.json").write_text(json.dumps({"architecture": architecture, "kwargs": kwargs}))
    return folder


def test_a_checkpoint_naming_the_builder_itself_cannot_run_a_command(tmp_path):
    marker = tmp_path / "ran"
    command = {"architecture": "subprocess:run", "kwargs": {"args": [sys.executable, "-c",
                                                                      f"open({str(marker)!r}, 'w')"]},
               "trust_remote_code": True}
    folder = checkpoint(tmp_path / "ckpt", "kdlens.subjects.checkpoint:build_architecture", command)
    with pytest.raises(ValueError, match="registered kdlens architecture"):
        load_classifier(folder)
    assert not marker.exists()


@pytest.mark.parametrize("architecture", ["kdlens.io:atomic_write_text", "kdlens.subjects.sources:load_models",
                                          "subprocess:run", "builtins:eval"])
def test_no_other_callable_is_reached_without_trust(tmp_path, architecture):
    target = tmp_path / "written"
    folder = checkpoint(tmp_path / "ckpt", architecture, {"path": str(target), "text": "x"})
    with pytest.raises(ValueError, match="registered kdlens architecture"):
        load_classifier(folder)
    assert not target.exists()


def test_an_audit_with_trust_off_refuses_such_a_checkpoint_before_any_stage(tmp_path):
    marker = tmp_path / "written"
    folder = checkpoint(tmp_path / "ckpt", "kdlens.io:atomic_write_text", {"path": str(marker), "text": "x"})
    good = checkpoint(tmp_path / "good", "kdlens.lab.cnn:SmallCNN", {"n_classes": 3, "widths": [2, 4, 4]})
    config = {"run_dir": str(tmp_path / "run"), "data": {"task": "shapes", "n": 8},
              "teacher": {"checkpoint": str(good)}, "students": {"s": {"checkpoint": str(folder)}}}
    with pytest.raises(ValueError, match="registered kdlens architecture"):
        audit.run(config, progress=False)
    assert not marker.exists() and not (tmp_path / "run" / "stages").exists()


def test_the_legitimate_paths_still_build(tmp_path):
    assert "kdlens.lab.cnn:SmallCNN" in trusted_architectures()
    assert isinstance(build_architecture("kdlens.lab.cnn:SmallCNN", {"n_classes": 3}), SmallCNN)
    folder = checkpoint(tmp_path / "ckpt", "kdlens.lab.cnn:SmallCNN", {"n_classes": 3, "widths": [2, 4, 4]})
    assert isinstance(load_classifier(folder), SmallCNN)
    assert isinstance(build_architecture("torch.nn:Linear", {"in_features": 2, "out_features": 3}, True),
                      torch.nn.Linear)  # your own code, trusted


def test_with_trust_on_the_result_must_still_be_a_module():
    with pytest.raises(TypeError, match="returns an nn.Module.*returned str"):
        build_architecture("os.path:join", {"a": "x"}, trust_remote_code=True)


@pytest.mark.parametrize("kwargs", [{"n_classes": {"architecture": "subprocess:run", "kwargs": {"args": ["true"]}}},
                                    {"n_classes": 3, "widths": [2, {"architecture": "os:system"}, 4]},
                                    {"n_classes": 3, "widths": [[2, 4], [{"a": 1}]]}])
def test_untrusted_kwargs_cannot_hold_a_mapping_that_could_be_a_source(tmp_path, kwargs):
    folder = checkpoint(tmp_path / "ckpt", "kdlens.lab.cnn:SmallCNN", kwargs)
    with pytest.raises(TypeError, match=r"Expected `kwargs\['(n_classes|widths)'\].*to be a number, string, "
                                        r"boolean, null or a list of them \(trust_remote_code is off\), but got a "
                                        r"dict"):
        load_classifier(folder)
    assert isinstance(build_architecture("torch.nn:Embedding", {"num_embeddings": 2, "embedding_dim": 2,
                                                                "_weight": None}, True), torch.nn.Embedding)

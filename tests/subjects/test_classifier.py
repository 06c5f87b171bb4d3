"""The classifier subject: hooks by layer name, always removed; helpful errors; checkpoints round-trip."""

import json

import pytest
import torch
from torch import nn

from kdlens.lab.cnn import SmallCNN
from kdlens.subjects import Classifier, build_architecture, load_classifier, save_classifier


def net():
    torch.manual_seed(0)
    return SmallCNN(n_classes=3, widths=(4, 8, 8))


def test_capture_records_named_layers_and_removes_hooks():
    subject = Classifier(net())
    x = torch.randn(2, 3, 16, 16)
    with subject.capture(["block1", "block3", "embed"]) as acts:
        logits = subject.forward(x)
    assert acts["block1"].shape == (2, 4, 16, 16)
    assert acts["block3"].shape == (2, 8, 4, 4)
    assert acts["embed"].shape == (2, 8)
    assert logits.shape == (2, 3)
    assert all(not m._forward_hooks for m in subject.model.modules())


def test_hooks_are_removed_when_the_forward_pass_raises():
    subject = Classifier(net())
    with pytest.raises(RuntimeError):
        with subject.capture(["block2"]):
            subject.forward(torch.randn(2, 5, 16, 16))  # wrong channel count
    assert all(not m._forward_hooks for m in subject.model.modules())


def test_capture_keeps_the_graph_when_asked():
    subject = Classifier(net())
    with subject.capture(["block3"], detach=False) as acts:
        subject.forward(torch.randn(2, 3, 16, 16))
    acts["block3"].sum().backward()
    assert subject.model.block1[0].weight.grad is not None


def test_unknown_layer_lists_close_matches():
    subject = Classifier(net(), "teacher")
    with pytest.raises(KeyError, match=r"Expected `layer` to be a layer of teacher .* but got 'blok2'.*'block2'"):
        subject.resolve("blok2")


def test_ddp_prefix_is_tolerated_both_ways():
    wrapped = nn.Module()
    wrapped.module = net()  # what DistributedDataParallel's named_modules() looks like
    assert Classifier(wrapped).resolve("block2") is wrapped.module.block2
    assert Classifier(net()).resolve("module.block2") is not None


def test_logits_runs_in_eval_mode_without_grad_and_restores_mode():
    model = net().train()
    subject = Classifier(model)
    x = torch.randn(10, 3, 16, 16)
    logits = subject.logits(x, batch_size=3)
    assert model.training and not logits.requires_grad
    model.eval()
    torch.testing.assert_close(logits, model(x))


def test_run_returns_logits_and_activations_for_every_input():
    subject = Classifier(net())
    logits, acts = subject.run(torch.randn(7, 3, 16, 16), ["embed"], batch_size=3)
    assert logits.shape == (7, 3) and acts["embed"].shape == (7, 8)


def test_non_logit_output_is_rejected():
    subject = Classifier(nn.Conv2d(3, 2, 1))
    with pytest.raises(ValueError, match="logits"):
        subject.forward(torch.randn(1, 3, 4, 4))


def test_checkpoint_round_trip(tmp_path):
    model = net().eval()
    kwargs = {"n_classes": 3, "widths": [4, 8, 8]}
    save_classifier(model, tmp_path / "ckpt", kwargs, note="test")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["architecture"] == "kdlens.lab.cnn:SmallCNN"
    loaded = load_classifier(tmp_path / "ckpt").eval()
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(loaded(x), model(x))


def test_foreign_architecture_needs_trust_remote_code():
    with pytest.raises(ValueError, match="trust_remote_code"):
        build_architecture("torch.nn:Linear", {"in_features": 2, "out_features": 2})
    assert isinstance(build_architecture("torch.nn:Linear", {"in_features": 2, "out_features": 2},
                                         trust_remote_code=True), nn.Linear)


def test_missing_checkpoint_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_classifier(tmp_path)

"""The layers kdlens reads when the config names none."""

import pytest
import torch
from torch import nn

from kdlens.audit.classifier.layers import default_layers
from kdlens.lab import vision
from kdlens.lab.cnn import SmallCNN


def test_small_cnn_gets_its_last_block_and_its_blocks():
    torch.manual_seed(0)
    picked = default_layers(SmallCNN(widths=(4, 8, 8), convs_per_block=2), torch.rand(2, 3, 16, 16))
    assert picked == {"attribution": "block3", "representations": ["block1", "block2", "block3", "embed"]}


def test_a_single_sequential_trunk_is_opened_one_level():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
    model = nn.Sequential(nn.Sequential(trunk, nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(4, 3))
    picked = default_layers(model, torch.rand(2, 3, 12, 12))
    assert picked["attribution"] == "0.0"  # the trunk: it finishes after its last ReLU
    assert picked["representations"] == ["0.0", "0.1", "0.2"]  # not the logits ("1")


def test_a_model_without_spatial_maps_has_no_attribution_layer():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    assert default_layers(mlp, torch.rand(2, 6)) == {"attribution": None, "representations": ["0", "1"]}


def test_the_probe_pass_leaves_the_models_mode_and_hooks_as_they_were():
    torch.manual_seed(0)
    model = SmallCNN(widths=(2, 4, 4)).train()
    default_layers(model, torch.rand(2, 3, 16, 16))
    assert model.training and all(not m._forward_hooks for m in model.modules())


def test_lab_recipes_by_name_or_file_and_a_typo():
    assert vision.recipe("default") == vision.VisionLabConfig()
    assert vision.recipe("quick") == vision.quick_config()
    with pytest.raises(FileNotFoundError, match="Did you mean 'quick'"):
        vision.recipe("quik")
    with pytest.raises(ValueError, match="Did you mean 'attribution_kd'"):
        vision.check_lab_model("atribution_kd")

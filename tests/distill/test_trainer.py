"""The trainer end to end on tiny models: it learns, resumes exactly after a kill, and saves what it promises."""

import json

import pytest
import torch

from kdlens.config import validate
from kdlens.distill.config import STRATEGIES, StrategyConfig, TrainConfig
from kdlens.distill.trainer import train
from kdlens.lab.cnn import SmallCNN
from kdlens.subjects import load_classifier

KWARGS = {"n_classes": 2, "widths": [4, 8, 8]}


def toy_data(n=256, seed=0):
    """Class 1 images are brighter in the centre: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 16, 16, generator=g) * 0.5
    y = torch.randint(0, 2, (n,), generator=g)
    x[y == 1, :, 4:12, 4:12] += 0.5
    return x, y


def strategy(name):
    return validate(STRATEGIES[name] if isinstance(name, str) else name, StrategyConfig)


def fast(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 32, "lr": 1e-2, "progress": False, **kw})


def teacher_model(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN(**KWARGS)
    train(model, toy_data(), tmp_path / "teacher", strategy("labels_only"), fast(epochs=3), student_kwargs=KWARGS)
    return model.eval()


def test_labels_only_training_learns_and_saves_a_loadable_model(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN(**KWARGS)
    result = train(model, toy_data(), tmp_path / "run", strategy("labels_only"), fast(epochs=3),
                   eval_data={"test": toy_data(128, seed=1)}, student_kwargs=KWARGS)
    assert result.final["test/accuracy"] > 0.9
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    loaded = load_classifier(result.model_dir).eval()
    x, _ = toy_data(8, seed=2)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == result.history


@pytest.mark.parametrize("terms", [
    [{"loss": "kd", "temperature": 4.0}, {"loss": "hard_label", "weight": 0.1}],
    [{"loss": "reverse_kl"}, {"loss": "jsd", "beta": 0.3}],
    [{"loss": "kd"}, {"loss": "fitnet", "pairs": [{"teacher": "block3", "student": "block3"}]}],
    [{"loss": "kd"}, {"loss": "attention", "pairs": [{"teacher": "block2", "student": "block2"}]}],
    [{"loss": "kd"}, {"loss": "rkd_distance", "pairs": [{"teacher": "embed", "student": "embed"}]},
     {"loss": "rkd_angle", "pairs": [{"teacher": "embed", "student": "embed"}]}],
    [{"loss": "kd"}, {"loss": "similarity", "pairs": [{"teacher": "embed", "student": "embed"}]}],
    [{"loss": "kd"}, {"loss": "cka", "pairs": [{"teacher": "embed", "student": "embed"}]},
     {"loss": "calibration"}],
    [{"loss": "kd"}, {"loss": "attribution", "method": "input_gradient"}],
    [{"loss": "kd"}, {"loss": "attribution", "method": "gradcam",
                      "pairs": [{"teacher": "block3", "student": "block3"}]}],
], ids=["kd", "rkl+jsd", "fitnet", "attention", "rkd", "sp", "cka+calibration", "inputgrad", "gradcam"])
def test_every_strategy_trains_a_student_that_agrees_with_the_teacher(tmp_path, terms):
    teacher = teacher_model(tmp_path)
    torch.manual_seed(1)
    student = SmallCNN(n_classes=2, widths=[2, 4, 6])  # narrower: fitnet needs its projector
    result = train(student, toy_data(seed=3), tmp_path / "student", strategy({"terms": terms}), fast(epochs=3),
                   teacher=teacher, eval_data={"test": toy_data(128, seed=1)})
    assert result.final["test/agreement"] > 0.8, result.history
    assert all(name in result.final for name in {t["loss"] for t in terms})


def test_teacher_stays_frozen_in_eval_mode(tmp_path):
    teacher = teacher_model(tmp_path)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()
    train(SmallCNN(**KWARGS), toy_data(), tmp_path / "s", strategy("output_kd"), fast(epochs=1), teacher=teacher)
    assert not teacher.training
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BN statistics included


FITNET = {"terms": [{"loss": "kd"}, {"loss": "fitnet", "pairs": [{"teacher": "block2", "student": "block2"}]}]}


@pytest.mark.parametrize("name", ["output_kd", "fitnet"])
@pytest.mark.parametrize("kill_at", [9, 12])  # 8 steps an epoch: kill at the start of epoch 2, and mid-epoch
def test_a_killed_run_resumes_to_the_same_weights(tmp_path, name, kill_at):
    teacher = teacher_model(tmp_path)
    config = fast(epochs=2, checkpoint_every=3)
    chosen = strategy(FITNET if name == "fitnet" else name)

    torch.manual_seed(5)
    reference = SmallCNN(**KWARGS)
    train(reference, toy_data(), tmp_path / "full", chosen, config, teacher=teacher)

    class Killed(Exception):
        pass

    torch.manual_seed(5)
    interrupted = SmallCNN(**KWARGS)
    calls = {"n": 0}
    original = interrupted.forward

    def dying_forward(x):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise Killed
        return original(x)

    interrupted.forward = dying_forward
    with pytest.raises(Killed):
        train(interrupted, toy_data(), tmp_path / "resumed", chosen, config, teacher=teacher)
    torch.manual_seed(123)  # a fresh process: different global RNG, fresh weights
    fresh = SmallCNN(**KWARGS)
    result = train(fresh, toy_data(), tmp_path / "resumed", chosen, config, teacher=teacher)
    for (name, a), b in zip(reference.state_dict().items(), fresh.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert [r["epoch"] for r in result.history] == [1, 2]


def test_teacher_noise_changes_the_student(tmp_path):
    teacher = teacher_model(tmp_path)
    weights = []
    for sigma in (0.0, 5.0):
        torch.manual_seed(0)
        student = SmallCNN(**KWARGS)
        train(student, toy_data(), tmp_path / f"noise{sigma}", strategy({"terms": [{"loss": "kd"}]}),
              fast(epochs=1, teacher_noise=sigma), teacher=teacher)
        weights.append(student.head.weight.detach().clone())
    assert not torch.allclose(weights[0], weights[1])


def test_missing_teacher_and_wrong_layer_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Expected `teacher` to be a model"):
        train(SmallCNN(**KWARGS), toy_data(), tmp_path / "a", strategy("output_kd"), fast())
    bad = strategy({"terms": [{"loss": "fitnet", "pairs": [{"teacher": "block3", "student": "blok3"}]}]})
    with pytest.raises(KeyError, match="'block3'"):
        train(SmallCNN(**KWARGS), toy_data(), tmp_path / "b", bad, fast(), teacher=SmallCNN(**KWARGS))


def test_diverging_loss_is_reported_not_saved(tmp_path):
    with pytest.raises(ValueError, match="Expected `loss` to be finite"):
        train(SmallCNN(**KWARGS), toy_data(), tmp_path / "nan", strategy("labels_only"), fast(lr=1e30),
              )


@pytest.mark.parametrize("terms", [
    [{"loss": "kd"}, {"loss": "fitnet", "pairs": [{"teacher": "block2", "student": "block2"}]}],
    [{"loss": "kd"}, {"loss": "attribution", "method": "gradcam",
                      "pairs": [{"teacher": "block3", "student": "block3"}]}],
], ids=["fitnet", "gradcam"])
def test_cached_teacher_outputs_train_the_same_student_as_running_the_teacher(tmp_path, terms):
    teacher = teacher_model(tmp_path)
    weights = []
    for cache_mb in (0, 64):
        torch.manual_seed(2)
        student = SmallCNN(n_classes=2, widths=[2, 4, 6])
        train(student, toy_data(seed=3), tmp_path / f"cache{cache_mb}", strategy({"terms": terms}),
              fast(epochs=1, teacher_cache_mb=cache_mb), teacher=teacher)
        weights.append(student.state_dict())
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_data_may_be_a_dataset_of_pairs_or_dicts(tmp_path):
    from torch.utils.data import TensorDataset

    from kdlens.distill.trainer import as_tensors

    x, y = toy_data(16)

    class Dicts(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            return {"image": x[i], "label": y[i]}

    for data in ((x, y), TensorDataset(x, y), Dicts()):
        got_x, got_y = as_tensors(data)
        assert torch.equal(got_x, x) and torch.equal(got_y, y)
    with pytest.raises(TypeError, match="Expected `data` to be a .*pair of tensors or a torch Dataset"):
        as_tensors([1, 2, 3])


def test_a_last_batch_too_small_for_a_relational_loss_is_refused_before_training(tmp_path):
    rkd = strategy({"terms": [{"loss": "rkd_angle", "pairs": [{"teacher": "embed", "student": "embed"}]}]})
    teacher = SmallCNN(**KWARGS)
    with pytest.raises(ValueError, match=r"Expected `data` to be batches of at least 3 examples.*the last holding 2.*"
                                         r"drop_last=True"):
        train(SmallCNN(**KWARGS), toy_data(66), tmp_path / "a", rkd, fast(), teacher=teacher)
    result = train(SmallCNN(**KWARGS), toy_data(66), tmp_path / "b", rkd, fast(epochs=1, drop_last=True),
                   teacher=teacher)
    assert result.final["step"] == 2  # 66 examples, batches of 32: two whole batches, the last two examples skipped


def test_resuming_a_folder_that_holds_another_run_is_refused(tmp_path):
    teacher = teacher_model(tmp_path)
    train(SmallCNN(**KWARGS), toy_data(), tmp_path / "run", strategy("output_kd"), fast(epochs=1), teacher=teacher)
    fitnet = strategy(FITNET)
    with pytest.raises(ValueError, match=r"Expected `run_dir` to be a new folder or one holding this same run.*"
                                         r"delete its checkpoints/"):
        train(SmallCNN(**KWARGS), toy_data(), tmp_path / "run", fitnet, fast(epochs=1), teacher=teacher)
    with pytest.raises(ValueError, match="another strategy, training config or data size"):
        train(SmallCNN(**KWARGS), toy_data(), tmp_path / "run", strategy("output_kd"), fast(epochs=1, lr=0.1),
              teacher=teacher)
    # how it runs is not what it computes: a new device, progress bar or cache size resumes the same run
    train(SmallCNN(**KWARGS), toy_data(), tmp_path / "run", strategy("output_kd"),
          fast(epochs=1, teacher_cache_mb=0, checkpoint_every=5), teacher=teacher)


def test_teacher_and_student_over_different_classes_is_a_clear_error(tmp_path):
    teacher = SmallCNN(n_classes=3, widths=[4, 8, 8])
    with pytest.raises(ValueError, match=r"scores over the same classes, but got 2 and 3 classes"):
        train(SmallCNN(**KWARGS), toy_data(), tmp_path / "a", strategy("output_kd"), fast(), teacher=teacher)


def test_nan_inputs_stop_training_with_the_cause(tmp_path):
    x, y = toy_data()
    x[5, 0, 0, 0] = float("nan")
    x[9, 1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match=r"Expected `data` to be finite inputs, but got NaN or inf in 2 examples "
                                         r"\(the first at index 5\)"):
        train(SmallCNN(**KWARGS), (x, y), tmp_path / "a", strategy("labels_only"), fast(batch_size=256))

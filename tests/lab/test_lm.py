"""The language-model lab on a tiny recipe: every stage built, cached, reloadable through the subject."""

import pytest

from kdlens.distill import TrainConfig
from kdlens.io import read_json
from kdlens.lab import lm
from kdlens.rundir import RunDir
from kdlens.subjects import LanguageModel
from kdlens.tasks import babi, chains


def tiny(**overrides) -> lm.LMLabConfig:
    one = TrainConfig(epochs=1, batch_size=32, lr=3e-3)
    return lm.LMLabConfig(**{
        "chains": chains.ChainsConfig(max_steps=2, start_range=(0, 5), operand_range=(1, 3),
                                      multiplier_range=(2, 2), max_value=20),
        "n_train": 24, "n_train_babi": None, "n_transfer": 8, "max_new_tokens": 24,
        "teacher_model": lm.LlamaSpec(hidden_size=16, num_hidden_layers=1),
        "student_model": lm.LlamaSpec(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1),
        "teacher_train": one, "student_train": one, "distill_train": one, **overrides})


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return lm.build(tmp_path_factory.mktemp("labs"), tiny(), progress=False)


def test_every_model_is_built_and_reloads_through_the_subject(lab):
    assert set(lab.model_dirs) == {"teacher", "base_student", *lm.STUDENTS}
    for name, folder in lab.model_dirs.items():
        assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file(), name
    teacher, student = lab.model("teacher"), lab.model("token_fkl_t2")
    assert isinstance(teacher, LanguageModel) and teacher.same_vocabulary(student)
    assert lab.metrics["teacher"]["parameters"] > lab.metrics["base_student"]["parameters"]


def test_students_start_from_the_base_student_and_learn_from_the_teacher(lab):
    for name in lm.KD_STUDENTS:
        assert lm.KD_STUDENTS[name].loss in lab.metrics[name], name  # the divergence was trained on
    generations = RunDir(lab.root).stage("generations").rows()
    assert len([row["text"] for row in generations]) == 2 * lab.config.n_transfer


def test_the_perturbed_student_saw_perturbed_babi_traces():
    config = tiny()
    example = babi.make_split(config.babi, "train", 1)[0]
    check = babi.check_trace(example, babi.perturb_trace(example, 0))
    assert check.answer_correct and not check.category_correct and not check.retrieval_correct


def test_a_second_build_loads_instead_of_training(lab):
    manifest = read_json(lab.root / "manifest.json")["stages"]
    again = lm.build(lab.root.parent, tiny(), progress=False)
    assert again.root == lab.root and read_json(lab.root / "manifest.json")["stages"] == manifest


def test_run_settings_do_not_change_the_recipe_hash():
    assert lm.recipe_hash(tiny()) == lm.recipe_hash(tiny(teacher_train=TrainConfig(epochs=1, batch_size=32,
                                                                                   lr=3e-3, progress=False)))
    assert lm.recipe_hash(tiny()) != lm.recipe_hash(tiny(n_train=25))


@pytest.mark.parametrize(("hidden", "initializer_range", "std"), [(64, None, 0.125), (64, 0.02, 0.02)])
def test_lab_llamas_draw_weights_at_fan_in_scale_unless_told(hidden, initializer_range, std):
    spec = lm.LlamaSpec(hidden_size=hidden, num_hidden_layers=1, initializer_range=initializer_range)
    model = lm.new_llama(spec, vocab_size=50, seed=0)
    assert model.config.initializer_range == pytest.approx(std)
    weight = model.model.layers[0].mlp.up_proj.weight.detach()  # (128, 64): 8,192 draws
    assert float(weight.std()) == pytest.approx(std, rel=0.05)


def test_the_command_builds_from_a_recipe_file(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from kdlens.cli import app

    recipe = tmp_path / "lm.yaml"
    recipe.write_text(yaml.safe_dump(tiny(students=["seq_kd"]).model_dump(mode="json")))
    result = CliRunner().invoke(app, ["lab", "lm", "--config", str(recipe), "--root", str(tmp_path / "labs")])
    assert result.exit_code == 0, result.output
    assert "teacher" in result.output and "seq_kd" in result.output and "base_student" in result.output

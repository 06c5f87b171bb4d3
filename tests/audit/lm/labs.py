"""The tiny language-model lab's audit config that the tests of this package share."""

from __future__ import annotations

STUDENTS = ["base_student", "seq_kd", "token_fkl_t2"]


def lab_config(recipe: dict, run_dir, students=STUDENTS, **overrides) -> dict:
    """An audit of the tiny lab (``recipe``: the ``recipe`` fixture) on 10 questions per task; with the base student
    and another, the provenance probe traces the others' sentences against the base student."""
    source = {"lab": "lm", "lab_root": recipe["root"], "lab_recipe": recipe["path"]}
    probes = {"traces": {"max_new_tokens": 30}, "representations": {"n": 6}}
    if "base_student" in students and len(students) > 1:
        probes["provenance"] = {"original_student": "base_student", "n_resamples": 200}
    return {"run_dir": str(run_dir), "data": {"task": "reasoning", "n": 10},
            "teacher": source, "students": {n: {**source, "lab_model": n} for n in students},
            "probes": probes, **overrides}

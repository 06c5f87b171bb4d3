from kdlens.stages import run_stage


def run_alone(build):
    """``build``'s stage run on its own: ``run_alone(build)(run_dir, *args)`` is its summary (cached like any)."""
    return lambda run_dir, *args, **kwargs: run_stage(run_dir, build(*args, **kwargs))

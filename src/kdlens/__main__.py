"""``python -m kdlens``, and so ``torchrun -m kdlens audit CONFIG`` and ``accelerate launch -m kdlens audit CONFIG``."""

from kdlens.cli import app

app(prog_name="kdlens")

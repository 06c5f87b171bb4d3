"""kdlens: distil a teacher into students, then audit whether they learned *why* the teacher answers as it does."""

__version__ = "0.1.0"

"""``kdlens crosscoder CONFIG``: crosscoder model-diffing of any two language models on your texts."""

"""Model wrappers (torch + Hugging Face): one class per role, arrays in, arrays out.

Each role has a cheap `__init__`, a `load()` that brings the weights with `from_pretrained` (a hub id, a local
folder or the cache), and a `__call__` under `torch.no_grad()` whose docstring states the output shape and dtype.
"""

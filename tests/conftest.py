import os

import torch

# The Triton kernel runs on the CPU in triton's interpreter; the flag must be set before the
# kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llava():
    """``(model, processor)`` of a tiny random LLaVA-1.5 (see tests/tiny_models.py)."""
    from tiny_models import build_tiny_llava

    return build_tiny_llava()

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


@pytest.fixture(scope="session")
def tiny_onevision():
    """``(model, processor)`` of a tiny random LLaVA-OneVision (see tests/tiny_models.py)."""
    from tiny_models import build_tiny_onevision

    return build_tiny_onevision()


@pytest.fixture(scope="session")
def tiny_qwen2_5_vl():
    """``(model, processor)`` of a tiny random Qwen2.5-VL (see tests/tiny_models.py)."""
    from tiny_models import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl()


@pytest.fixture(scope="session")
def tiny_qwen3_vl():
    """``(model, processor)`` of a tiny random Qwen3-VL (see tests/tiny_models.py)."""
    from tiny_models import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl()


@pytest.fixture(scope="session")
def tiny_internvl():
    """``(model, processor)`` of a tiny random InternVL (see tests/tiny_models.py)."""
    from tiny_models import build_tiny_internvl

    return build_tiny_internvl()


@pytest.fixture(scope="session")
def tiny_gemma3():
    """``(model, processor)`` of a tiny random Gemma 3 (see tests/tiny_models.py)."""
    from tiny_models import build_tiny_gemma3

    return build_tiny_gemma3()

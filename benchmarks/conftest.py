import os

import pytest
import torch

# The Triton kernels run in triton's CPU interpreter when no GPU is present (only relevant if
# a benchmark calls a kernel on CPU; GPU benchmarks skip without CUDA).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        machine_info["gpu"] = props.name
        machine_info["gpu_multiprocessors"] = props.multi_processor_count
        machine_info["cuda"] = torch.version.cuda
    try:
        import triton

        machine_info["triton"] = triton.__version__
    except ImportError:
        pass


@pytest.fixture
def cuda_timed():
    """Wrap a callable so that the timed region ends with the GPU idle."""

    def wrap(fn):
        def timed():
            out = fn()
            torch.cuda.synchronize()
            return out

        return timed

    return wrap

import os

import torch

# The Triton kernel runs on the CPU in triton's interpreter; the flag must be set before the
# kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

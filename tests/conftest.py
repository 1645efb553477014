import os
import sys
from pathlib import Path

import torch

# test_triton.py runs the Triton kernels on CPU tensors in Triton's interpreter,
# which reads TRITON_INTERPRET for the whole process (when kernels are defined and
# when they run). Where a GPU exists, the kernels are compiled instead and
# test_cuda.py tests them; test_triton.py then skips.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, str(Path(__file__).parent))
torch.manual_seed(0)

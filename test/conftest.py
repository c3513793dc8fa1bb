"""Suite-wide settings: small, deterministic thread pools so tests behave the same on 2-core CI."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the runtime-only install has no torch
    pass

"""Tests that need a CUDA device: selected by `pytest -m gpu`, skipped with the reason where there is none."""

import pytest
import torch

CUDA = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

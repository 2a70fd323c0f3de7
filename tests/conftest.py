"""Test-wide settings: one intra-op thread per process, so tiny models are not slowed by thread contention with
DataLoader workers and parallel processes on small machines."""

import torch

torch.set_num_threads(1)

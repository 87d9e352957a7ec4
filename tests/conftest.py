"""Suite-wide settings.

One intra-op thread per process: the tests use tiny models where a second thread only adds
synchronisation, and on a busy two-core machine torch's spinning worker threads make small
operations tens of times slower. Subprocesses (CLI tests) inherit it through OMP_NUM_THREADS.
"""

import os

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

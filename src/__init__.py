"""SAIMP trainer: train and judge a 4-class market-signal classifier from market candles."""

import os as _os
import sys as _sys

# OpenMP threads that spin while they wait collapse the speed of every process sharing
# the cores (see src/core/threads.py). OpenMP reads this once, when torch is first
# imported, so it is set here, before any entry point imports torch; a user's own
# setting wins, and where torch is already loaded it could no longer take effect.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

"""Process set-up every heavy stage shares: no network, seeded randomness."""
from __future__ import annotations

import os
import random


def set_offline_env() -> None:
    """No model hub at run time: every stage refuses the network unless the user opts in."""
    if os.environ.get("JINMEI_ALLOW_HUB") == "1":
        return
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[key] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass

"""``python -m udon_core.train``: the command the training pods and ``torchrun`` run (k8s/README.md).

The work is in ``udon_core.training.job``; this module name is the stable command line of the manifests. On a
Kubeflow Trainer node started without torchrun (one process per node), the runtime's ``PET_*`` variables are
turned into torchrun's (RANK, WORLD_SIZE, ...) first: ``main`` names the rank in its log format before it joins
the process group (``init_distributed``, whose own call is then a no-op), so the logs and the group agree.
"""

from __future__ import annotations

import os
import sys

from udon_core.training.distributed import torch_env
from udon_core.training.job import main

if __name__ == "__main__":
    try:
        os.environ.update(torch_env(os.environ))
    except ValueError as err:  # PET_* that describe no runnable job: one sentence, exit 2 as every user error
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())

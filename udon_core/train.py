"""``python -m udon_core.train``: the command the training pods and ``torchrun`` run (k8s/README.md).

The work is in ``udon_core.training.job``; this module name is the stable command line of the manifests.
"""

from __future__ import annotations

import sys

from udon_core.training.job import main

if __name__ == "__main__":
    sys.exit(main())

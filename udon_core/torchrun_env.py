"""The environment a launcher gives each training process: ``torchrun``'s variables (WORLD_SIZE, RANK, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT), and the ``PET_*`` variables Kubeflow Trainer's torch runtime sets on every node, which
torchrun reads as its flags' defaults and which stand for its variables when a node runs without it.

No torch here: ``pipelines.cluster`` names the same variables (a TrainJob may not set them) without loading torch.
"""

from __future__ import annotations

from collections.abc import Mapping

from udon_core.errors import InvalidValueError

PET_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")


def torch_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``torchrun`` variables (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) that a Kubeflow
    Trainer node's ``PET_*`` variables stand for, when no launcher set them; empty when they are set or absent.

    Only one process per node can be started this way (the process is the node); more need torchrun.
    """
    if "WORLD_SIZE" in environ or "PET_NNODES" not in environ:
        return {}
    missing = [k for k in PET_ENV if k != "PET_NPROC_PER_NODE" and not environ.get(k)]
    if missing:
        raise InvalidValueError(f"PET_NNODES is set but {', '.join(missing)} not: the Kubeflow Trainer torch "
                                "runtime sets all of them")
    nodes, per_node = environ["PET_NNODES"], environ.get("PET_NPROC_PER_NODE", "1")
    if per_node != "1":
        raise InvalidValueError(f"PET_NPROC_PER_NODE={per_node}: start the trainer with torchrun, which starts "
                                "that many processes per node (one process per node needs no launcher)")
    if not nodes.isdigit():
        raise InvalidValueError(f"PET_NNODES={nodes!r}: a fixed number of nodes is needed (no elastic range)")
    return {"WORLD_SIZE": nodes, "RANK": environ["PET_NODE_RANK"], "LOCAL_RANK": "0",
            "MASTER_ADDR": environ["PET_MASTER_ADDR"], "MASTER_PORT": environ["PET_MASTER_PORT"]}

"""Training throughput of one UDON step (forward, four losses, backward, AdamW) on synthetic batches.

    python bench/train_throughput.py --backbone vit_base_patch16_224 --image-size 224 --batch 128 --steps 20

Prints images/s and peak memory; bf16 autocast on CUDA, fp32 on CPU, exactly as the trainer runs.
"""

from __future__ import annotations

import argparse
import time

import torch

from udon_core.data import Preprocess
from udon_core.methods import LossConfig, UdonTask
from udon_core.model import BackboneConfig, ModelConfig, UdonModel
from udon_core.training import TrainConfig, build_optimizer

# UnED's train classes per domain: the classifier sizes are part of the cost of a step.
UNED_CLASSES = {"food2k": 900, "cars": 78, "sop": 9_054, "inshop": 3_198, "inat": 4_552, "met": 224_408,
                "gldv2": 73_182, "rp2k": 1_074}


def synthetic_step(backbone: str, image_size: int, batch: int, steps: int, warmup: int = 3,
                   compile_model: bool = False, device: torch.device | None = None, student_dim: int = 64,
                   teacher_dim: int = 256) -> tuple[float, float]:
    """(median step seconds, peak GPU GiB) of UDON steps on one synthetic batch rotated over UnED's domains."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = ModelConfig(backbone=BackboneConfig(name=backbone, img_size=image_size), student_dim=student_dim,
                      teacher_dim=teacher_dim, preprocess=Preprocess(image_size=image_size))
    model = UdonModel(cfg, UNED_CLASSES).to(device)
    task = UdonTask(model, LossConfig())
    opt = build_optimizer(task, TrainConfig())
    for g in opt.param_groups:
        g["lr"] = 1e-5
    step_fn = torch.compile(task) if compile_model else task
    domains = list(UNED_CLASSES)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    times = []
    for i in range(warmup + steps):
        d = domains[i % len(domains)]
        y = torch.randint(0, UNED_CLASSES[d], (batch,), device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = step_fn(x, y, d)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for q in task.inactive_head_parameters(d):
            q.grad = torch.zeros_like(q)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return sorted(times)[len(times) // 2], mem


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="vit_base_patch16_224")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    med, mem = synthetic_step(args.backbone, args.image_size, args.batch, args.steps, args.warmup, args.compile, device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device={name} backbone={args.backbone} size={args.image_size} batch={args.batch} compile={args.compile}")
    print(f"median step {med * 1000:.1f} ms  ->  {args.batch / med:.0f} images/s  peak GPU memory {mem:.1f} GiB")
    print(f"full UnED run (221,180 steps) at this rate: {221_180 * med / 3600:.1f} h on one device")


if __name__ == "__main__":
    main()

"""UNIC (Sariyildiz et al., ECCV 2024): one ViT student distils several frozen teachers at once.

Pieces (research/unic.md, every default from the official ``naver/unic`` code):
- a ladder of expendable projectors: per teacher and token type (class token, patch tokens), one
  Linear-GELU-Linear per student block, fed the block's raw (pre-norm) output and summed over blocks;
- teacher targets standardised per channel with running statistics (cosine-scheduled momentum, the
  statistics before the update are used);
- loss 0.5 (1 - cos) + 0.5 smooth-L1 per token, patches averaged, then the mean over token types;
- teacher dropping: per image the highest-loss teacher is kept, the others dropped with probability p.

``UnicTask`` is a ``Task`` (udon_core/methods/base.py); ``CombinedTask`` adds it to UDON's objective on the
shared backbone. The methods: ``unic`` (the ladder plus the NormFace-trained 64-d student head as a
separately weighted term), ``unic-published`` (distillation only, the published recipe) and ``udon+unic``.
The projectors and statistics live in the task, not in ``UdonModel``, so they never reach the exported model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from udon_core.errors import InvalidValueError
from udon_core.methods.base import MethodSpec, Task, TrainSettings
from udon_core.methods.losses import LossConfig
from udon_core.methods.udon import NO_TEACHERS, UdonTask, build_udon_task
from udon_core.model.teachers import FrozenTeacher, Normalization, TeacherConfig, create_teachers
from udon_core.model.udon_model import UdonModel

TOKEN_TYPES = ("cls", "patch")
# Official epsilons (research/unic.md 2.2, utils.py::standard_normalize): added to the batch std, and again
# to the running std when standardising.
STD_EPS = 1e-6


class UnicConfig(BaseModel):
    """UNIC distillation settings; defaults are the argparse defaults of naver/unic ``main_unic.py``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    teachers: tuple[TeacherConfig, ...] = Field(
        default=(), description="frozen teachers (official: DINO, DeiT-III, iBOT, dBOT-ft ViT-B/16, none offline)",
    )
    # modeling/unic.py::LP, --which_blocks None: every block of the student feeds the ladder.
    which_blocks: tuple[int, ...] | None = Field(default=None, description="student blocks feeding the ladder")
    # modeling/unic.py::AdaptMLP via LP: hidden_dim 768, last_hidden_dim 3072 (the final block's MLP).
    hidden_dim: int = Field(default=768, ge=1, description="hidden width of the intermediate blocks' MLPs")
    last_hidden_dim: int = Field(default=3072, ge=1, description="hidden width of the last encoder block's MLP")
    # main_unic.py --lp_args "{'std': 0.02}": trunc-normal init of every projector Linear, zero bias.
    init_std: float = Field(default=0.02, gt=0)
    # modeling/losses.py, main_unic.py --lam_lcos 0.5 --lam_lsl1 0.5.
    lam_cos: float = Field(default=0.5, ge=0, description="weight of 1 - cosine")
    lam_sl1: float = Field(default=0.5, ge=0, description="weight of smooth-L1 (beta 1)")
    # modeling/teacher_dropping.py, main_unic.py --t_drop_prob 0.5.
    drop_prob: float = Field(default=0.5, ge=0, le=1, description="drop rate of every teacher but the worst-fit")
    # main_unic.py --tnorm_ema_momentum_start 1.0 --tnorm_ema_momentum_end 0.001 (utils.py::cosine_scheduler).
    momentum_start: float = Field(default=1.0, ge=0, le=1, description="weight of the batch statistics at step 0")
    momentum_end: float = Field(default=0.001, ge=0, le=1, description="... at the last step")
    aux_weight: float = Field(
        default=1.0, ge=0, description="weight of the UNIC loss added to UDON's in 'udon+unic' (not in UNIC)",
    )

    @model_validator(mode="after")
    def _unique_teachers(self) -> "UnicConfig":
        names = [t.name for t in self.teachers]
        if len(set(names)) != len(names):
            raise InvalidValueError(f"UnicConfig.teachers: names must be unique, got {names}")
        return self


def ema_momentum(step: int, total_steps: int, start: float = 1.0, end: float = 0.001) -> float:
    """Weight of the batch statistics at 0-based ``step`` of ``total_steps``: a cosine from ``start`` to ``end``.

    ``end + (start - end) (1 + cos(pi step / T)) / 2``, as ``utils.py::cosine_scheduler`` without warmup
    (whose array has T entries, so the last step is just above ``end``); steps past the end keep the last value.
    """
    it = min(step, total_steps - 1)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * it / total_steps))


def _global_rows(rows: torch.Tensor) -> torch.Tensor:
    """``rows [M, D]`` of every process under torch.distributed (the official stats use the global batch)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, rows.contiguous())
    return torch.cat(parts)


class RunningStandardizer(nn.Module):
    """Per-channel running mean and std of one teacher's tokens of one type (buffers, in the state_dict)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def forward(self, y: torch.Tensor, momentum: float) -> torch.Tensor:
        """Standardise ``y [..., D]`` with the statistics as they are, then (``momentum > 0``) move them.

        New stats: ``(1 - m) old + m batch``, batch mean and unbiased std (+1e-6) over every row of ``y``
        (all processes). Returns float32 ``(y - mean) / (std + 1e-6)`` with the pre-update mean and std.
        """
        y = y.float()
        out = (y - self.mean) / (self.std + STD_EPS)
        if momentum > 0:
            rows = _global_rows(y.reshape(-1, y.shape[-1]))
            if rows.shape[0] < 2:
                raise InvalidValueError("teacher statistics need at least 2 rows per step (batch size >= 2)")
            self.mean.mul_(1 - momentum).add_(rows.mean(0), alpha=momentum)
            self.std.mul_(1 - momentum).add_(rows.std(0) + STD_EPS, alpha=momentum)
        return out


class AdaptMLP(nn.Sequential):
    """Linear(D_s, H) - GELU - Linear(H, D_t), trunc-normal(std) weights and zero biases (``AdaptMLP``)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, std: float) -> None:
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        for layer in (self[0], self[2]):
            nn.init.trunc_normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)


class ProjectorLadder(nn.Module):
    """One MLP per tapped block; the prediction is the sum of their outputs (``LP`` in modeling/unic.py).

    Args:
        blocks: indices of the student blocks feeding the ladder.
        depth: number of student blocks; the MLP of block ``depth - 1`` uses ``last_hidden_dim``.
    """

    def __init__(self, blocks: Sequence[int], depth: int, in_dim: int, out_dim: int, cfg: UnicConfig) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(
            AdaptMLP(in_dim, cfg.last_hidden_dim if b == depth - 1 else cfg.hidden_dim, out_dim, cfg.init_std)
            for b in blocks
        )

    def forward(self, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """``tokens``: one ``[B, D_s]`` or ``[B, N, D_s]`` per tapped block -> summed ``[..., D_t]``."""
        if len(tokens) != len(self.mlps):
            raise InvalidValueError(f"the ladder has {len(self.mlps)} rungs, got {len(tokens)} block outputs")
        return torch.stack([mlp(x) for mlp, x in zip(self.mlps, tokens, strict=True)]).sum(0)


class BlockCapture:
    """Context manager keeping the outputs of some blocks during any forward of the backbone.

    why: forward hooks let UDON's own forward (``UdonModel.features``) also feed the ladder, so
    ``udon+unic`` runs the backbone once. If the backbone runs twice inside, the last run is kept.
    """

    def __init__(self, blocks: nn.ModuleList, ids: Sequence[int]) -> None:
        self.blocks, self.ids = blocks, list(ids)
        self.outputs: dict[int, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> "BlockCapture":
        self.outputs = {}
        self._handles = [self.blocks[i].register_forward_hook(self._hook(i)) for i in self.ids]
        return self

    def _hook(self, i: int):
        def keep(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            self.outputs[i] = output
        return keep

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def tokens(self) -> list[torch.Tensor]:
        """The captured ``[B, prefix + N, D]`` outputs, in block order."""
        missing = [i for i in self.ids if i not in self.outputs]
        if missing:
            raise RuntimeError(f"blocks {missing} did not run inside the capture: run the backbone within it")
        return [self.outputs[i] for i in self.ids]


def align_patch_grid(patch: torch.Tensor, grid: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """Resample teacher patch tokens ``[B, h*w, D]`` on ``grid`` to ``target`` (bilinear) -> ``[B, H*W, D]``.

    why: UNIC's teachers share the student's 14x14 grid; a teacher with another patch size or resolution
    (or a CNN's coarser map) must still give one target per student patch.
    """
    if tuple(grid) == tuple(target):
        return patch
    b, _, d = patch.shape
    fmap = patch.transpose(1, 2).reshape(b, d, *grid)
    fmap = F.interpolate(fmap, size=target, mode="bilinear", align_corners=False)
    return fmap.flatten(2).transpose(1, 2)


def token_loss(pred: torch.Tensor, target: torch.Tensor, lam_cos: float = 0.5, lam_sl1: float = 0.5) -> torch.Tensor:
    """``lam_cos (1 - cos) + lam_sl1 mean_d smooth-L1_beta=1`` over the channel dim: ``[..., D] -> [...]``."""
    cos = 1 - F.cosine_similarity(pred, target, dim=-1)
    sl1 = F.smooth_l1_loss(pred, target, reduction="none", beta=1.0).mean(-1)
    return lam_cos * cos + lam_sl1 * sl1


def teacher_image_losses(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor], lam_cos: float = 0.5,
                         lam_sl1: float = 0.5) -> dict[str, torch.Tensor]:
    """One teacher's per-image losses: 'cls' ``[B]``, 'patch' ``[B]`` (mean over patches) and their mean 'all'."""
    cls = token_loss(pred["cls"], target["cls"], lam_cos, lam_sl1)
    patch = token_loss(pred["patch"], target["patch"], lam_cos, lam_sl1).mean(1)
    return {"cls": cls, "patch": patch, "all": torch.stack([cls, patch]).mean(0)}


def teacher_drop_weights(losses: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Teacher-dropping coefficients ``[T, B]`` for per-image losses ``[T, B]`` (no grad).

    Per image the highest-loss teacher is kept; each other teacher is dropped with probability ``p``.
    Kept pairs get ``1 / (number of kept (teacher, image) pairs in the batch)``, as
    ``modeling/teacher_dropping.py``: one normaliser for the batch, so images keeping more teachers weigh more.
    """
    t, b = losses.shape
    u = torch.rand(t, b, generator=generator, device=losses.device if generator is None else generator.device)
    keep = u.to(losses.device) >= p
    keep[losses.detach().argmax(0), torch.arange(b, device=losses.device)] = True
    coeff = keep.float()
    return coeff / coeff.sum()


def _restore_drop_generator(task: "UnicTask", incompatible_keys: Any) -> None:
    task.drop_generator.set_state(task.drop_rng_state.cpu())


class UnicProjectors(nn.Module):
    """All ladders: ``ladders[teacher][token type]``; maps the student's block tokens to every teacher."""

    def __init__(self, teacher_dims: dict[str, int], blocks: Sequence[int], depth: int, student_dim: int,
                 cfg: UnicConfig) -> None:
        super().__init__()
        self.ladders = nn.ModuleDict({
            name: nn.ModuleDict({k: ProjectorLadder(blocks, depth, student_dim, dim, cfg) for k in TOKEN_TYPES})
            for name, dim in teacher_dims.items()
        })

    def forward(self, cls: Sequence[torch.Tensor], patch: Sequence[torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """Per tapped block ``cls [B, D_s]`` and ``patch [B, N, D_s]`` -> ``{teacher: {'cls': [B, D_t],
        'patch': [B, N, D_t]}}``."""
        return {name: {"cls": ladder["cls"](cls), "patch": ladder["patch"](patch)}
                for name, ladder in self.ladders.items()}


def _vit_student(model: UdonModel) -> nn.Module:
    backbone = model.backbone
    if not hasattr(backbone, "blocks") or getattr(backbone, "cls_token", None) is None:
        raise InvalidValueError(f"UNIC needs a timm ViT student with a class token, got {model.config.backbone.name}")
    return backbone


class UnicTask(Task):
    """UNIC distillation of frozen ``teachers`` into ``model``'s backbone (a timm ViT).

    Args:
        model: the student; only its backbone is trained by this task (heads stay as they are).
        teachers: frozen teachers, in the order of the loss terms.
        cfg: UNIC settings (``cfg.teachers`` is not read here: build the teachers with
            ``udon_core.model.teachers.create_teachers(cfg.teachers)``).
        total_steps: length of the training run (the statistics' momentum schedule spans it).

    The step counter of that schedule is a buffer, so the task's ``state_dict`` (projectors, statistics,
    step; teachers excluded) is everything a checkpoint needs beyond the model to resume exactly.
    """

    def __init__(self, model: UdonModel, teachers: Sequence[FrozenTeacher], cfg: UnicConfig, total_steps: int,
                 seed: int = 0, rank: int = 0) -> None:
        super().__init__()
        if not teachers:
            raise InvalidValueError("UNIC needs at least one teacher (UnicConfig.teachers is empty)")
        backbone = _vit_student(model)
        depth = len(backbone.blocks)
        self.block_ids = list(range(depth)) if cfg.which_blocks is None else list(cfg.which_blocks)
        bad = [b for b in self.block_ids if not 0 <= b < depth]
        if bad or not self.block_ids:
            raise InvalidValueError(f"UnicConfig.which_blocks {cfg.which_blocks}: the student has blocks 0..{depth - 1}")
        self.cfg, self.total_steps, self.model = cfg, total_steps, model
        self.teachers = nn.ModuleDict({t.name: t for t in teachers})
        dims = {t.name: t.num_features for t in teachers}
        self.projectors = UnicProjectors(dims, self.block_ids, depth, int(backbone.embed_dim), cfg)
        self.standardizers = nn.ModuleDict(
            {n: nn.ModuleDict({k: RunningStandardizer(d) for k in TOKEN_TYPES}) for n, d in dims.items()}
        )
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        # why seed + rank: as the official main_unic.py, each data-parallel rank drops teachers with its own
        # draws (the images differ per rank). The generator's state is a buffer, so a checkpoint resumes it.
        self.drop_generator = torch.Generator().manual_seed(seed + rank)
        self.register_buffer("drop_rng_state", self.drop_generator.get_state())
        self.register_load_state_dict_post_hook(_restore_drop_generator)
        pre = model.config.preprocess
        self.student_norm = Normalization(pre.mean, pre.std)
        self.to(next(model.parameters()).device)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """'heads': every projector; 'backbone': the student backbone. Teachers are in no group."""
        return {"heads": list(self.projectors.parameters()), "backbone": list(self.model.backbone.parameters())}

    def inactive_head_parameters(self, domain: str) -> list[nn.Parameter]:
        """None: every projector runs on every batch, whatever its domain."""
        return []

    def capture(self) -> BlockCapture:
        """A context in which a backbone forward records the blocks feeding the ladder."""
        return BlockCapture(self.model.backbone.blocks, self.block_ids)

    def forward(self, images: torch.Tensor, labels: torch.Tensor, domain: str) -> dict[str, torch.Tensor]:
        """UNIC losses of ``images [B, 3, S, S]`` (normalised for the student); labels and domain are unused."""
        with self.capture() as cap:
            self.model.backbone.forward_features(images)
        return self.distill(images, cap)

    def momentum(self) -> float:
        """Weight of this step's batch statistics (0 in eval mode: the statistics are frozen)."""
        if not self.training:
            return 0.0
        return ema_momentum(int(self.step), self.total_steps, self.cfg.momentum_start, self.cfg.momentum_end)

    def targets(self, images: torch.Tensor, grid: tuple[int, int]) -> dict[str, dict[str, torch.Tensor]]:
        """Standardised teacher tokens ``{teacher: {'cls': [B, D_t], 'patch': [B, h*w, D_t]}}`` on ``grid``."""
        m, out = self.momentum(), {}
        for name, teacher in self.teachers.items():
            t = teacher(images, self.student_norm)
            tokens = {"cls": t.cls, "patch": align_patch_grid(t.patch, t.grid, grid)}
            out[name] = {k: self.standardizers[name][k](tokens[k], m) for k in TOKEN_TYPES}
        return out

    def distill(self, images: torch.Tensor, cap: BlockCapture) -> dict[str, torch.Tensor]:
        """The UNIC loss from the blocks ``cap`` recorded while the backbone embedded ``images``.

        Returns 'loss' (with grad), 'loss/<teacher>/<cls|patch>' (batch means before dropping) and
        'teacher_coeff/<teacher>' (the teacher's share of the dropped, normalised loss).
        Projectors run under the caller's autocast; targets and losses in float32.
        """
        backbone, blocks = self.model.backbone, cap.tokens()
        grid = tuple(int(g) for g in backbone.patch_embed.dynamic_feat_size(images.shape[-2:]))
        prefix = backbone.num_prefix_tokens
        targets = self.targets(images, grid)
        preds = self.projectors([x[:, 0] for x in blocks], [x[:, prefix:] for x in blocks])
        with torch.autocast(images.device.type, enabled=False):
            per = {n: teacher_image_losses({k: v.float() for k, v in preds[n].items()}, targets[n],
                                           self.cfg.lam_cos, self.cfg.lam_sl1) for n in self.teachers}
            losses = torch.stack([per[n]["all"] for n in self.teachers])  # [T, B]
            coeff = teacher_drop_weights(losses.detach(), self.cfg.drop_prob, self.drop_generator)
            self.drop_rng_state.copy_(self.drop_generator.get_state())
            total = (coeff * losses).sum()
        if self.training:
            self.step += 1
        out = {"loss": total}
        out.update({f"loss/{n}/{k}": per[n][k].mean().detach() for n in self.teachers for k in TOKEN_TYPES})
        out.update({f"teacher_coeff/{n}": c for n, c in zip(self.teachers, coeff.sum(1), strict=True)})
        return out


class CombinedTask(Task):
    """``udon+unic``: UDON's objective plus ``weight`` x UNIC's on the shared backbone, one backbone forward.

    The result holds every UDON key unchanged (the dynamic sampler's signal included) and every UNIC term,
    with 'loss' = udon + weight x unic and 'loss/udon', 'loss/unic' the two parts.
    """

    def __init__(self, udon: UdonTask, unic: UnicTask, weight: float) -> None:
        super().__init__()
        if udon.model is not unic.model:
            raise InvalidValueError("CombinedTask: both tasks must train the same UdonModel")
        self.udon, self.unic, self.weight = udon, unic, weight

    @property
    def model(self) -> UdonModel:
        return self.udon.model

    @property
    def domains(self) -> list[str]:
        return self.udon.domains

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Both tasks' groups merged by name; a parameter is listed once (the backbone is shared)."""
        merged: dict[str, list[nn.Parameter]] = {}
        seen: set[int] = set()
        for groups in (self.udon.param_groups(), self.unic.param_groups()):
            for name, params in groups.items():
                merged.setdefault(name, []).extend(p for p in params if id(p) not in seen)
                seen.update(id(p) for p in params)
        return merged

    def inactive_head_parameters(self, domain: str) -> list[nn.Parameter]:
        return self.udon.inactive_head_parameters(domain) + self.unic.inactive_head_parameters(domain)

    def forward(self, images: torch.Tensor, labels: torch.Tensor, domain: str) -> dict[str, torch.Tensor]:
        """UDON's outputs of the batch, UNIC's terms, and the weighted total as 'loss'."""
        with self.unic.capture() as cap:
            udon = self.udon(images, labels, domain)
        unic = self.unic.distill(images, cap)
        out = {**udon, **{k: v for k, v in unic.items() if k != "loss"}}
        out.update({"loss": udon["loss"] + self.weight * unic["loss"], "loss/udon": udon["loss"].detach(),
                    "loss/unic": unic["loss"].detach()})
        return out


def _has_teachers(cfg: TrainSettings) -> None:
    if not cfg.unic.teachers:
        raise InvalidValueError(f"method '{cfg.method}' distils frozen teachers: list them in unic.teachers")


def build_unic_task(model: UdonModel, cfg: TrainSettings, loss: LossConfig, rank: int = 0) -> Task:
    """UNIC's distillation, plus the student head's retrieval loss unless every loss weight is 0 (UNIC as
    published); ``udon+unic`` adds it to the whole UDON objective instead."""
    unic = UnicTask(model, create_teachers(cfg.unic.teachers), cfg.unic, cfg.steps, seed=cfg.seed, rank=rank)
    if sum(loss.weights().values()) == 0:
        return unic
    return CombinedTask(build_udon_task(model, cfg, loss), unic, cfg.unic.aux_weight)


def _published_schedule(value: Any) -> dict[str, Any]:
    """One peak lr 3e-4 x batch / 256 for encoder and ladder, linear warmup over 10 of 200 epochs."""
    peak = 3e-4 * value("batch_size") / 256
    return {"lr_heads": peak, "lr_backbone": peak, "warmup_steps": value("steps") // 20}


# UNIC trains the backbone from step 0 (no frozen phase); its teachers give no per-domain loss for the
# dynamic sampler, so domains are taken in turn.
_UNIC = {"frozen_steps": 0, "loss": NO_TEACHERS, "sampler": {"strategy": "round_robin"}}
METHODS = (
    MethodSpec("unic", build=build_unic_task, preset=_UNIC, check=_has_teachers, distillation_only=True),
    # As published (research/unic.md): distillation only, AdamW (0.9, 0.99), weight decay 0.03 on weights of
    # 2+ dimensions, cosine to 1e-6. The student's drop-path 0.1 is a model setting (backbone.drop_path_rate).
    MethodSpec("unic-published", build=build_unic_task, check=_has_teachers, distillation_only=True,
               preset={**_UNIC, "loss": {**NO_TEACHERS, "student_ce_weight": 0.0}, "betas": (0.9, 0.99),
                       "weight_decay": 0.03, "decay_exclude_1d": True, "lr_schedule": "warmup_cosine",
                       "min_lr": 1e-6},
               derived=_published_schedule),
    MethodSpec("udon+unic", build=build_unic_task, check=_has_teachers, distillation_only=True,
               online_teacher_heads=True),
)

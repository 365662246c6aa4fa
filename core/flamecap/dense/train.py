"""Training, evaluation and export of the dense aligner on synthetic renders (:mod:`.data`).

Optimiser AdamW, linear warm-up then cosine decay (computed from the step, so resuming is exact),
gradient clipping, RAFT sequence loss with the Laplace NLL (:func:`.model.sequence_loss`) on a random
subset of ``n_vertices`` vertices per step. Checkpoints (weights + optimizer + step + history) every
``ckpt_every`` steps and at the end, atomically, to one file; ``resume`` continues from it. The data
stream is indexed by step, so a resumed run sees the same samples an uninterrupted one would.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..contract.events import ProgressCallback
from ..contract.model_format import FlameModelData
from ..errors import InputError, WeightsError
from .checkpoint import load_checkpoint, save_checkpoint
from .data import SynthConfig, SyntheticFaceStream, check_model, fixed_set, framing_vertices
from .model import PRESETS, DenseNetConfig, FlowFaceNet, sequence_loss

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """``preset`` names a :data:`~.model.PRESETS` network (``image_size`` overrides its crop size, ``net``
    any other :class:`~.model.DenseNetConfig` field);
    ``fixed_n`` > 0 trains on that many fixed samples (overfitting checks) instead of the stream."""

    preset: str = "b0"
    image_size: int | None = None
    net: dict = field(default_factory=dict)
    steps: int = 1000
    batch_size: int = 8
    lr: float = 4e-4
    weight_decay: float = 1e-4
    warmup: float = 0.05
    gamma: float = 0.8
    n_vertices: int = 1024
    grad_clip: float = 1.0
    seed: int = 0
    eval_seed: int = 1_000_003
    eval_n: int = 32
    eval_every: int = 0
    ckpt_every: int = 500
    workers: int = 0
    fixed_n: int = 0
    device: str = "auto"
    synth: SynthConfig = field(default_factory=SynthConfig)

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise InputError(f"unknown dense preset '{self.preset}'; choose one of {', '.join(sorted(PRESETS))}")
        if self.steps < 1 or self.batch_size < 1 or self.n_vertices < 1 or self.lr <= 0:
            raise InputError("dense training needs steps, batch size, vertices >= 1 and a positive learning rate")
        size = self.net_config().image_size
        if self.synth.image_size != size:
            object.__setattr__(self, "synth", SynthConfig.from_dict({**self.synth.to_dict(), "image_size": size}))

    def net_config(self) -> DenseNetConfig:
        d = {**PRESETS[self.preset].to_dict(), **self.net}
        if self.image_size is not None:
            d["image_size"] = int(self.image_size)
        unknown = set(self.net) - set(DenseNetConfig.__dataclass_fields__)
        if unknown:
            raise InputError(f"dense training: unknown network option(s) {sorted(unknown)}")
        try:
            return DenseNetConfig.from_dict(d)
        except ValueError as exc:
            raise InputError(f"dense training: {exc}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["synth"] = self.synth.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        synth = SynthConfig.from_dict(d.pop("synth", {}))
        known = set(cls.__dataclass_fields__)
        return cls(synth=synth, **{k: v for k, v in d.items() if k in known})


@dataclass
class EvalResult:
    """Per-vertex pixel error of the final iteration over visible vertices of held-out renders (crop px),
    also relative to the crop size; mean σ (px) and the fraction of errors within 2σ (per axis)."""

    mean_px: float
    median_px: float
    mean_rel: float
    mean_sigma_px: float
    within_2sigma: float
    n_images: int


@dataclass
class TrainResult:
    path: Path
    step: int
    history: list
    eval: EvalResult | None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device '{device}'; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but CUDA is not available; use --device cpu")
    return dev


def lr_at(step: int, cfg: TrainConfig) -> float:
    warm = max(int(cfg.warmup * cfg.steps), 1)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(cfg.steps - warm, 1)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


@torch.no_grad()
def evaluate(net: FlowFaceNet, vertex_uv: np.ndarray, data: dict, batch_size: int = 8) -> EvalResult:
    """Evaluate on a stacked set (see :func:`.data.fixed_set`)."""
    net.eval()
    dev = next(net.parameters()).device
    uv = torch.as_tensor(vertex_uv, device=dev)
    errs, sig, inside = [], [], []
    for i in range(0, len(data["image"]), batch_size):
        out = net(data["image"][i:i + batch_size].to(dev), uv).final
        tgt = data["points"][i:i + batch_size].to(dev)
        vis = data["visible"][i:i + batch_size].to(dev)
        d = out.points - tgt
        errs.append(d.norm(dim=-1)[vis].cpu())
        sig.append(out.sigma[vis].cpu())
        inside.append((d.abs() <= 2 * out.sigma[..., None]).float()[vis].mean(-1).cpu())
    e, s, w = torch.cat(errs), torch.cat(sig), torch.cat(inside)
    size = float(data["image"].shape[-1])
    return EvalResult(mean_px=float(e.mean()), median_px=float(e.median()), mean_rel=float(e.mean()) / size,
                      mean_sigma_px=float(s.mean()), within_2sigma=float(w.mean()), n_images=len(data["image"]))


def train(cfg: TrainConfig, model: FlameModelData, out: str | Path, resume: bool = False,
          progress: ProgressCallback | None = None, stop_at: int | None = None) -> TrainResult:
    """Train (or, with ``resume``, continue training the checkpoint at ``out``) and return the history.
    ``stop_at`` ends the session early at that step (checkpoint written, no evaluation), e.g. to fit
    a job time limit; a later ``resume`` continues exactly as if never interrupted."""
    check_model(model)
    out = Path(out)
    dev = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    net_cfg = cfg.net_config()
    net = FlowFaceNet(net_cfg)
    vertex_uv = np.asarray(model["vertex_uv"], dtype=np.float32)
    topo = model.topology
    step, history = 0, []
    opt_state = None
    if resume:
        ck = load_checkpoint(out)
        if ck.config != net_cfg:
            raise WeightsError(f"cannot resume {out}: it was trained with another network config; "
                               f"use the same preset/image size or a new output file")
        if ck.topology_hash != topo:
            raise WeightsError(f"cannot resume {out}: it was trained for another head topology")
        net.load_state_dict(ck.net.state_dict())
        step, history, opt_state = ck.step, ck.history, ck.optim_state
        log.info("resuming %s at step %d", out, step)
    net.to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    uv_all = torch.as_tensor(vertex_uv, device=dev)
    V = len(vertex_uv)
    eval_set = fixed_set(model, cfg.synth, cfg.eval_seed, cfg.eval_n) if cfg.eval_n > 0 and (
        stop_at is None or stop_at >= cfg.steps) else None

    def batches():
        if cfg.fixed_n > 0:
            data = fixed_set(model, cfg.synth, cfg.seed, cfg.fixed_n)
            s = step
            while True:
                g = np.random.default_rng([cfg.seed, 7, s])
                idx = g.choice(cfg.fixed_n, size=min(cfg.batch_size, cfg.fixed_n), replace=False)
                yield {k: v[idx] for k, v in data.items()}
                s += 1
        stream = SyntheticFaceStream(model, cfg.synth, seed=cfg.seed, start=step * cfg.batch_size)
        loader = torch.utils.data.DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.workers,
                                             persistent_workers=cfg.workers > 0)
        yield from loader

    def save():
        save_checkpoint(out, net, vertex_uv, topo, step=step, optimizer=opt, train_config=cfg.to_dict(),
                        history=history, frame_vertices=framing_vertices(model))

    t0 = time.monotonic()
    it = batches()
    net.train()
    running = []
    end = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
    while step < end:
        batch = next(it)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        sel = np.random.default_rng([cfg.seed, 11, step]).choice(V, size=min(cfg.n_vertices, V), replace=False)
        sel_t = torch.as_tensor(np.sort(sel), device=dev)
        img = batch["image"].to(dev, non_blocking=True)
        tgt = batch["points"].to(dev)[:, sel_t]
        vis = batch["visible"].to(dev)[:, sel_t]
        outp = net(img, uv_all[sel_t])
        loss = sequence_loss(outp, tgt, vis, cfg.gamma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        running.append(loss.item())
        with torch.no_grad():
            err = float((outp.final.points - tgt).norm(dim=-1)[vis].mean()) if vis.any() else float("nan")
        if step % 10 == 0 or step == cfg.steps:
            log.info("step %d/%d loss %.3f train err %.2f px lr %.2e (%.1f s)", step, cfg.steps,
                     np.mean(running), err, lr_at(step - 1, cfg), time.monotonic() - t0)
        entry = {"step": step, "loss": float(np.mean(running)), "train_px": err}
        running = []
        if eval_set is not None and cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
            entry["eval_px"] = evaluate(net, vertex_uv, eval_set).mean_px
            net.train()
        history.append(entry)
        if progress is not None:
            progress("fit", step / cfg.steps, f"step {step}/{cfg.steps} loss {entry['loss']:.3f}")
        if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps:
            save()
    ev = None
    if eval_set is not None and step >= cfg.steps:
        ev = evaluate(net, vertex_uv, eval_set)
        if history:
            history[-1]["eval_px"] = ev.mean_px
        log.info("eval: mean %.2f px (%.2f%% of crop), median %.2f px, σ %.2f px", ev.mean_px,
                 100 * ev.mean_rel, ev.median_px, ev.mean_sigma_px)
    save()
    return TrainResult(path=out, step=step, history=history, eval=ev)


def export_weights(checkpoint: str | Path, out: str | Path, half: bool = False) -> Path:
    """Strip the optimizer state (optionally store float16) for distribution, and write the readable
    sidecar ``<out>.json`` (network and training config, topology, last history entry, sha256)."""
    import hashlib
    import json

    from ..contract.npzio import atomic_output

    ck = load_checkpoint(checkpoint)
    out = save_checkpoint(out, ck.net, ck.vertex_uv, ck.topology_hash, step=ck.step,
                          train_config=ck.train_config, history=ck.history[-1:], half=half,
                          frame_vertices=ck.frame_vertices)
    info = {"format": "flamecap.dense", "weights": out.name,
            "sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "config": ck.config.to_dict(),
            "topology_hash": ck.topology_hash, "n_vertices": int(len(ck.vertex_uv)), "step": ck.step,
            "dtype": "float16" if half else "float32", "train": ck.train_config,
            "last": ck.history[-1] if ck.history else None,
            "licence": "FlameCap's own (trained on FlameCap's synthetic renders)"}
    with atomic_output(out.with_suffix(".json")) as tmp:
        Path(tmp).write_text(json.dumps(info, indent=1, sort_keys=True))
    return out

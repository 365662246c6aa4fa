"""Dense-network checkpoints: one ``.safetensors`` file, weights plus JSON in its metadata.

Tensors: ``net.<param>`` (network weights), ``vertex_uv`` (V, 2) (the UV coordinates of the head
topology the network was trained for; inference samples these), ``frame_vertices`` (the vertices whose
2D box frames the crop, :func:`.data.framing_vertices`), and, in training checkpoints,
``optim.<i>.<key>`` (optimizer state per parameter index). Metadata (all strings): ``format``,
``version``, ``config`` (:class:`~.model.DenseNetConfig` JSON), ``topology_hash``, ``step``, ``train``
(training config JSON), ``optim`` (param groups + non-tensor state JSON), ``history`` (JSON list).
Exported weights carry no optimizer state. Writes are atomic (temp file + ``os.replace``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..contract.npzio import atomic_output
from ..errors import WeightsError
from .model import DenseNetConfig, FlowFaceNet

CKPT_FORMAT = "flamecap.dense"
CKPT_VERSION = 1


@dataclass
class DenseCheckpoint:
    """A loaded checkpoint: the network (eval mode, CPU), its config, the trained topology's vertex_uv
    (V, 2), topology hash, step, optional optimizer state dict, training config and history."""

    net: FlowFaceNet
    config: DenseNetConfig
    vertex_uv: np.ndarray
    topology_hash: str
    step: int = 0
    optim_state: dict | None = None
    train_config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    frame_vertices: np.ndarray | None = None


def _safetensors_torch():
    """``safetensors.torch``; safetensors is the ``dense`` extra, so without it: the one-line fix."""
    from ..optional import require
    return require("safetensors.torch", "the dense aligner's checkpoints")


def save_checkpoint(path: str | os.PathLike, net: FlowFaceNet, vertex_uv: np.ndarray, topology_hash: str,
                    step: int = 0, optimizer: torch.optim.Optimizer | None = None,
                    train_config: dict | None = None, history: list | None = None,
                    half: bool = False, frame_vertices: np.ndarray | None = None) -> Path:
    """Write ``net`` (+ optimizer state when given) atomically to ``path``. ``half`` stores weights as
    float16 (export only)."""
    save_file = _safetensors_torch().save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in net.state_dict().items():
        v = v.detach().cpu()
        tensors[f"net.{k}"] = (v.half() if half and v.is_floating_point() else v).contiguous()
    tensors["vertex_uv"] = torch.as_tensor(np.asarray(vertex_uv, dtype=np.float32))
    if frame_vertices is not None:
        tensors["frame_vertices"] = torch.as_tensor(np.asarray(frame_vertices, dtype=np.int64))
    meta: dict[str, str] = {"format": CKPT_FORMAT, "version": str(CKPT_VERSION),
                            "config": json.dumps(net.cfg.to_dict(), sort_keys=True),
                            "topology_hash": str(topology_hash), "step": str(int(step)),
                            "train": json.dumps(train_config or {}, sort_keys=True, default=str),
                            "history": json.dumps(history or [])}
    if optimizer is not None:
        sd = optimizer.state_dict()
        plain: dict[str, Any] = {}
        for idx, st in sd["state"].items():
            for key, val in st.items():
                if torch.is_tensor(val):
                    tensors[f"optim.{idx}.{key}"] = val.detach().cpu().contiguous()
                else:
                    plain[f"{idx}.{key}"] = val
        meta["optim"] = json.dumps({"param_groups": sd["param_groups"], "plain": plain})
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> DenseCheckpoint:
    """Read a checkpoint or exported weights; any problem is a one-line :class:`WeightsError`."""
    st_torch = _safetensors_torch()
    from safetensors import SafetensorError, safe_open
    load_file = st_torch.load_file

    path = Path(path)
    hint = "train with 'flamecap dense train' or pass --weights FILE"
    if not path.is_file():
        raise WeightsError(f"dense weights not found: {path}; {hint}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not a readable safetensors file ({type(exc).__name__}); {hint}") from None
    if meta.get("format") != CKPT_FORMAT:
        raise WeightsError(f"{path} is not FlameCap dense-aligner weights (format '{meta.get('format')}'); {hint}")
    if int(meta.get("version", "0")) > CKPT_VERSION:
        raise WeightsError(f"{path} was written by a newer FlameCap (version {meta.get('version')}); update FlameCap")
    try:
        cfg = DenseNetConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path} has an unusable network config ({exc}); re-export the weights") from None
    net = FlowFaceNet(cfg)
    state = {k[4:]: v.float() if v.is_floating_point() else v for k, v in tensors.items() if k.startswith("net.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected or "vertex_uv" not in tensors:
        what = (missing or unexpected or ["vertex_uv"])[0]
        raise WeightsError(f"{path} does not match the '{cfg.encoder}' dense network layout (e.g. '{what}'); "
                           f"re-export it with this FlameCap version")
    net.to(device).eval()
    optim_state = None
    if "optim" in meta:
        o = json.loads(meta["optim"])
        st: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                st.setdefault(int(idx), {})[key] = v
        for k, v in o.get("plain", {}).items():
            idx, key = k.split(".", 1)
            st.setdefault(int(idx), {})[key] = v
        optim_state = {"state": st, "param_groups": o["param_groups"]}
    return DenseCheckpoint(net=net, config=cfg, vertex_uv=tensors["vertex_uv"].numpy().astype(np.float32),
                           topology_hash=meta.get("topology_hash", ""), step=int(meta.get("step", "0")),
                           optim_state=optim_state, train_config=json.loads(meta.get("train", "{}")),
                           history=json.loads(meta.get("history", "[]")),
                           frame_vertices=tensors["frame_vertices"].numpy() if "frame_vertices" in tensors else None)

"""``flamecap dense train|eval|export``: the dense (FlowFace-style) aligner's network.

    flamecap dense train --preset b0 --steps 20000 -o ckpt.safetensors [--resume] [--model M]
    flamecap dense eval WEIGHTS [--n 64]
    flamecap dense export CKPT -o flowface_dense.safetensors [--half] [--install]
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

from ..cli import add_progress_argument, progress_reporter
from ..errors import InputError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dense", help="train / evaluate / export the dense alignment network")
    dsub = p.add_subparsers(dest="dense_command", metavar="ACTION")
    dsub.required = True

    t = dsub.add_parser("train", help="train on synthetic renders (checkpoints; --resume continues)")
    t.add_argument("-o", "--out", required=True, help="checkpoint file (.safetensors), written atomically")
    t.add_argument("--model", default="synthetic",
                   help="head model: 'synthetic' (built-in), a .npz/.pkl path or a registered name")
    t.add_argument("--preset", default="b0", help="network preset: tiny, b0 (CPU), b5 (paper)")
    t.add_argument("--image-size", type=int, default=None, help="crop size in px (multiple of 32)")
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=4e-4)
    t.add_argument("--vertices", type=int, default=1024, help="vertices per step in the loss")
    t.add_argument("--iters", type=int, default=None, help="refinement iterations (default: preset's)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=int, default=0, help="DataLoader worker processes rendering data")
    t.add_argument("--eval-n", type=int, default=32, help="held-out renders for evaluation")
    t.add_argument("--eval-every", type=int, default=0)
    t.add_argument("--ckpt-every", type=int, default=500)
    t.add_argument("--fixed-n", type=int, default=0, help="train on this many fixed renders (overfit check)")
    t.add_argument("--occluders", type=float, default=0.3, help="probability of occluders per render")
    t.add_argument("--device", default="auto")
    t.add_argument("--resume", action="store_true", help="continue the checkpoint at --out")
    add_progress_argument(t)
    t.set_defaults(handler=cmd_train, run_outputs=("out",), run_models=("model",))

    e = dsub.add_parser("eval", help="per-vertex pixel error on held-out synthetic renders")
    e.add_argument("weights")
    e.add_argument("--model", default="synthetic")
    e.add_argument("--n", type=int, default=32)
    e.add_argument("--seed", type=int, default=1_000_003)
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true")
    e.set_defaults(handler=cmd_eval)

    x = dsub.add_parser("export", help="strip optimizer state: distributable weights")
    x.add_argument("checkpoint")
    x.add_argument("-o", "--out", default=None, help="output file (default: flowface_dense.safetensors)")
    x.add_argument("--half", action="store_true", help="store float16 weights")
    x.add_argument("--install", action="store_true",
                   help="also copy to $FLAMECAP_HOME/weights/flowface_dense.safetensors (the default the "
                        "dense aligner loads)")
    x.set_defaults(handler=cmd_export, run_inputs=("checkpoint",), run_outputs=("out",))


def load_head_model(spec: str):
    """'synthetic' → the built-in synthetic head; else a .npz/.pkl path or a registered model name."""
    if spec == "synthetic":
        from ..flame.synthetic import make_synthetic_model
        return make_synthetic_model()
    from ..flame.io import load_model
    return load_model(spec)


def cmd_train(args) -> int:
    from ..dense.data import SynthConfig
    from ..dense.train import TrainConfig, train

    if not 0.0 <= args.occluders <= 1.0:
        raise InputError("--occluders is a probability in [0, 1]")
    net = {"iters": args.iters} if args.iters else {}
    cfg = TrainConfig(preset=args.preset, image_size=args.image_size, net=net, steps=args.steps,
                      batch_size=args.batch_size, lr=args.lr, n_vertices=args.vertices, seed=args.seed,
                      workers=args.workers, eval_n=args.eval_n, eval_every=args.eval_every,
                      ckpt_every=args.ckpt_every, fixed_n=args.fixed_n, device=args.device,
                      synth=SynthConfig(occluder_prob=args.occluders))
    out = Path(args.out)
    if args.resume and not out.is_file():
        raise InputError(f"--resume: no checkpoint at {out}; drop --resume to start a new run")
    model = load_head_model(args.model)
    em, cb = progress_reporter(getattr(args, "progress", "text"), command="dense train")
    res = train(cfg, model, out, resume=args.resume, progress=cb)
    summary = {"checkpoint": str(res.path), "step": res.step, "eval": asdict(res.eval) if res.eval else None}
    if em is not None:
        em.emit("done", result=str(res.path.resolve()), **{k: v for k, v in summary.items() if k != "checkpoint"})
    elif args.progress == "text":
        print(json.dumps(summary, indent=1))
    return 0


def cmd_eval(args) -> int:
    from ..dense.checkpoint import load_checkpoint
    from ..dense.data import SynthConfig, fixed_set
    from ..dense.train import evaluate, resolve_device
    from ..errors import WeightsError

    if args.n < 1:
        raise InputError("--n must be >= 1")
    ck = load_checkpoint(args.weights, device=resolve_device(args.device))
    model = load_head_model(args.model)
    if model.n_vertices != len(ck.vertex_uv) or (ck.topology_hash and model.topology != ck.topology_hash):
        raise WeightsError(f"{args.weights} was trained for another head topology than model '{args.model}'; "
                           f"pass the --model it was trained with")
    synth = SynthConfig.from_dict({**ck.train_config.get("synth", {}), "image_size": ck.config.image_size})
    res = evaluate(ck.net, ck.vertex_uv, fixed_set(model, synth, args.seed, args.n))
    if args.json:
        print(json.dumps(asdict(res)))
    else:
        for k, v in asdict(res).items():
            print(f"{k:14s} {v:.4f}" if isinstance(v, float) else f"{k:14s} {v}")
    return 0


def cmd_export(args) -> int:
    from ..dense.train import export_weights
    from ..landmarks.dense_aligner import DEFAULT_WEIGHTS_NAME, default_weights_path

    out = Path(args.out or DEFAULT_WEIGHTS_NAME)
    export_weights(args.checkpoint, out, half=args.half)
    print(f"exported {out} (+ {out.with_suffix('.json').name})")
    if args.install:
        from ..contract.npzio import atomic_output
        dst = default_weights_path()
        for src, target in ((out, dst), (out.with_suffix(".json"), dst.with_suffix(".json"))):
            with atomic_output(target) as tmp:
                shutil.copyfile(src, tmp)
        print(f"installed {dst}")
    return 0

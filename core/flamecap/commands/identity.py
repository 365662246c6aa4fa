"""``flamecap identity IMAGE_OR_VIDEO --weights W -o shape.npz`` (MICA identity),
``flamecap identity add-weights PATH`` (install a user-supplied ``mica.tar``) and
``flamecap identity train PAIRS_DIR --weights W --model M -o trained.tar`` (train the mapping network on
``NAME.png|jpg`` + ``NAME.npy`` (FLAME shape) pairs)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from ..cli import progress_reporter

log = logging.getLogger(__name__)

SHAPE_FORMAT = "flamecap.identity"
SHAPE_VERSION = 1


def register(sub: argparse._SubParsersAction) -> None:
    from ..cli import add_progress_argument

    p = sub.add_parser(
        "identity", help="estimate FLAME identity (shape) from a face image or video with MICA",
        description="MICA: metrical FLAME 2020 identity from a photo or clip (best sharp, frontal frames). "
                    "Weights are user-supplied (non-commercial): 'flamecap identity add-weights mica.tar'. "
                    "Usage: 'flamecap identity IMAGE_OR_VIDEO -o shape.npz' or "
                    "'flamecap identity add-weights PATH' or "
                    "'flamecap identity train PAIRS_DIR --model M -o trained.tar'.")
    p.add_argument("input", help="image, video or image folder; or 'add-weights' / 'train'")
    p.add_argument("path", nargs="?", help="with 'add-weights': the mica.tar to install; with 'train': a folder "
                                           "of NAME.png|jpg face images + NAME.npy FLAME shape codes")
    p.add_argument("-o", "--output", help="output .npz with 'shape' (n_shape,) (default: INPUT_identity.npz)")
    p.add_argument("--weights", "--identity-weights", dest="weights", default=None,
                   help="mica.tar (default: the one installed with 'add-weights')")
    p.add_argument("--encoder-weights", default=None,
                   help="optional insightface IResNet-100 backbone.pth to use as the encoder")
    p.add_argument("--model", default=None, help="head model (registered name, .npz or .pkl): truncate/pad the "
                                                 "shape to its n_shape and also save the neutral vertices")
    p.add_argument("--n-shape", type=int, default=None, help="truncate/pad the shape to this many coefficients")
    p.add_argument("--frames", type=int, default=8, help="video: number of best frames to average (default 8)")
    p.add_argument("--candidates", type=int, default=48, help="video: frames sampled and scored (default 48)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--steps", type=int, default=1000, help="train: optimiser steps (default 1000)")
    p.add_argument("--batch-size", type=int, default=8, help="train: batch size (default 8)")
    p.add_argument("--lr", type=float, default=1e-5, help="train: AdamW learning rate (default 1e-5, as MICA)")
    add_progress_argument(p)
    p.set_defaults(handler=cmd_identity, run_inputs=("input", "path", "weights", "encoder_weights"),
                   run_outputs=("output",), run_models=("model",))


def cmd_add_weights(args) -> int:
    from ..errors import InputError
    from ..identity.checkpoint import install_weights

    if not args.path:
        raise InputError("usage: flamecap identity add-weights PATH (the downloaded mica.tar)")
    dest, sha = install_weights(args.path)
    print(f"installed MICA weights: {dest} (sha256 {sha})")
    return 0


def cmd_train(args) -> int:
    from ..errors import InputError
    from ..flame.io import load_model
    from ..identity import checkpoint, mica, train
    from ..identity.mica import IMAGE_SUFFIXES

    if not args.path or not Path(args.path).is_dir():
        raise InputError("usage: flamecap identity train PAIRS_DIR --model M -o trained.tar (PAIRS_DIR holds "
                         "NAME.png|jpg images and NAME.npy FLAME shape codes)")
    if not args.output:
        raise InputError("flamecap identity train needs -o trained.tar (where to write the trained weights)")
    folder = Path(args.path)
    images = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    pairs = [(f, f.with_suffix(".npy")) for f in images if f.with_suffix(".npy").is_file()]
    if not pairs:
        raise InputError(f"no training pairs in {folder}: put NAME.png (or .jpg) next to NAME.npy (FLAME shape)")
    if len(pairs) < len(images):
        log.warning("%d image(s) in %s have no NAME.npy shape file and are skipped", len(images) - len(pairs), folder)
    model = load_model(args.model)
    cfg = train.TrainConfig(lr=args.lr, steps=args.steps, batch_size=args.batch_size)
    weights = checkpoint.resolve_weights(args.weights)
    net = mica.load_mica(weights, encoder_path=args.encoder_weights, device=args.device, require_mapping=False)
    ds = train.ShapePairDataset([a for a, _ in pairs], [b for _, b in pairs])
    emitter, progress = progress_reporter(args.progress, stream=sys.stderr)
    if emitter:
        emitter.emit("start", command="identity train", input=str(folder))
    before = train.evaluate_loss(net, ds, model)
    res = train.train_mapping(net, ds, model, cfg, progress=progress)
    after = train.evaluate_loss(net, ds, model)
    out = checkpoint.save_mica_checkpoint(args.output, net, extra={"global_step": res.steps})
    if emitter:
        emitter.emit("done", result=str(Path(out).resolve()))
    else:
        print(f"trained on {len(pairs)} pair(s), {res.steps} steps: loss {before:.4f} -> {after:.4f}; wrote {out}")
    return 0


def cmd_identity(args) -> int:
    if args.input == "add-weights":
        return cmd_add_weights(args)
    if args.input == "train":
        return cmd_train(args)
    import numpy as np

    from ..contract.npzio import write_npz_atomic
    from ..errors import FootageError, InputError
    from ..identity import checkpoint, mica
    from ..identity.mica import IMAGE_SUFFIXES

    if args.path:
        raise InputError(f"unexpected argument '{args.path}'; usage: flamecap identity IMAGE_OR_VIDEO -o shape.npz")
    src = Path(args.input).expanduser()
    if not src.exists():
        raise FootageError(f"input not found: {src}; pass a face image, a video or an image folder")
    if args.frames < 1 or args.candidates < 1:
        raise InputError("--frames and --candidates must be >= 1")
    model = None
    if args.model:
        from ..flame.io import load_model
        model = load_model(args.model)
    n_shape = args.n_shape or (model.n_shape if model is not None else mica.MICA_N_SHAPE)
    if n_shape < 1:
        raise InputError(f"--n-shape must be >= 1, got {n_shape}")
    emitter, progress = progress_reporter(args.progress, stream=sys.stderr)
    if emitter:
        emitter.emit("start", command="identity", input=str(src))
    weights = checkpoint.resolve_weights(args.weights)  # one-line error with instructions when absent
    net = mica.load_mica(weights, encoder_path=args.encoder_weights, device=args.device)
    if progress:
        progress("identity", 0.05, "weights loaded")
    if src.is_file() and src.suffix.lower() in IMAGE_SUFFIXES:
        rgb = mica._read_rgb(src)
        shape = mica.estimate_shape_from_image(rgb, net, mica.MICA_N_SHAPE, where=str(src))
        frames = [0]
    else:
        cands = mica.select_frames(src, k=args.frames, max_candidates=args.candidates, progress=progress)
        from ..identity.preprocess import to_arcface_input
        codes = mica.predict_shapes(net, to_arcface_input(np.stack([c.crop for c in cands])))
        shape = codes.mean(0)
        frames = [c.frame_index for c in cands]
    if model is not None:
        shape = mica.convert_shape(shape, model, net.flame_basis)
    shape = mica.fit_shape_length(shape, n_shape)
    arrays = {"shape": shape.astype(np.float32), "frames": np.asarray(frames, np.int64)}
    if model is not None:
        arrays["neutral_vertices"] = mica.neutral_vertices(model, shape)
    meta = {"format": SHAPE_FORMAT, "version": SHAPE_VERSION, "method": "mica", "space": model.release if model is not None else "FLAME2020",
            "units": "m", "source": str(src),
            "converted_from_flame2020": bool(model is not None and model.release.lower() not in mica.DIRECT_RELEASES
                                             and net.flame_basis is not None
                                             and net.flame_basis[0].shape[0] == model.n_vertices), "weights": str(weights),
            "weights_sha256": checkpoint.sha256_file(weights), "n_shape": int(n_shape),
            "model": model.release if model is not None else None}
    out = Path(args.output) if args.output else src.with_name(src.stem + "_identity.npz")
    write_npz_atomic(out, arrays, meta)
    if progress:
        progress("identity", 1.0, f"wrote {out}")
    if emitter:
        emitter.emit("done", result=str(out.resolve()))
    else:
        print(f"wrote {out} (shape {shape.shape[0]} coefficients from {len(frames)} frame(s))")
    return 0

"""`delf train attention`, and the feature-map cache commands that serve it
(`delf train fmaps`, `delf train features`)."""

from __future__ import annotations

import os
import sys

from .confargs import add_conf_args, conf_from_args, report_batch


def register(sub) -> None:
    p = sub.add_parser("train", help="train the attention head; feature-map cache")
    tsub = p.add_subparsers(dest="train_command", metavar="ACTION")
    tsub.required = True

    a = tsub.add_parser(
        "attention", help="train the attention head from labelled photos (DELF's recipe)",
        description="Frozen backbone; the attention-weighted mean of the L2-normalised feature map feeds a linear "
                    "classifier over the labels; cross-entropy. The backbone's maps of a fixed number of augmented "
                    "copies per photo (random crops and scales, rotation, perspective, colour jitter) are computed "
                    "once and cached. Give --images and --labels once per data set (classes of different data sets "
                    "stay apart). Never train on your evaluation photos.")
    a.add_argument("--images", action="append", required=True, metavar="DIR",
                   help="folder of photos (repeatable, one per --labels)")
    a.add_argument("--labels", action="append", required=True, metavar="CSV",
                   help="CSV: photo (relative to --images), label; header optional. Or 'folders': each photo's "
                        "folder is its class; 'none': unlabelled (--objective homography) (repeatable)")
    a.add_argument("--objective", default="labels", choices=["labels", "homography", "both", "inliers"],
                   help="labels: DELF's classification loss; homography: self-supervised, predict which cells "
                        "survive into another augmented copy (random homography, colour change) of the same "
                        "photo; both; inliers: predict which pyramid cells become verified RANSAC inliers against "
                        "other photos of the same label and make no matches into other labels' photos "
                        "(default: %(default)s)")
    a.add_argument("--out", required=True, metavar="WEIGHTS", help="attention head .npz to write")
    a.add_argument("--cache", help="feature-map cache folder (default: WEIGHTS.cache)")
    a.add_argument("--checkpoint", help="checkpoint, written every epoch and resumed from (default: WEIGHTS.ckpt.npz)")
    a.add_argument("--curve", help="training curve PNG (default: WEIGHTS with .png)")
    a.add_argument("--seed", type=int, default=0, help="seed of augmentation, split and initialisation (default: 0)")
    a.add_argument("--epochs", type=int, default=30, help="(default: %(default)s)")
    a.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    a.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (default: %(default)s)")
    a.add_argument("--copies", type=int, default=8, help="augmented copies per photo (default: %(default)s)")
    a.add_argument("--min-side", type=int, default=320, help="smallest longest side of a copy (default: %(default)s)")
    a.add_argument("--max-side", type=int, default=640, help="largest longest side of a copy (default: %(default)s)")
    a.add_argument("--partners", type=int, default=4,
                   help="inliers: same-label photos matched per photo (default: %(default)s)")
    a.add_argument("--distractors", type=int, default=2,
                   help="inliers: other-label photos matched per photo (default: %(default)s)")
    a.add_argument("--cells", type=int, default=4000,
                   help="inliers: candidate cells per photo, strongest by norm plus a random quarter of the rest "
                        "(default: %(default)s)")
    a.add_argument("--norm-input", action="store_true",
                   help="the head also sees each cell's log feature norm, not only its direction (default: direction "
                        "only)")
    a.add_argument("--val-fraction", type=float, default=0.15, help="photos per class held out (default: %(default)s)")
    a.add_argument("--backbone", default="lite0", choices=["lite0", "resnet50"], help="(default: lite0)")
    a.add_argument("--weights", help="backbone weights (as for delf extract)")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    a.set_defaults(func=run_attention)

    f = tsub.add_parser(
        "fmaps", help="cache the backbone's raw feature maps of photos (one backbone pass for every scoring)",
        description="Runs the backbone over each photo's pyramid and caches the raw maps (float16), so that "
                    "`delf train features` rebuilds features of any scoring, head, PCA or keypoint budget in "
                    "milliseconds per photo. Resumable.")
    f.add_argument("inputs", nargs="+", metavar="PHOTOS_OR_DIR")
    f.add_argument("--cache", required=True, help="cache folder")
    f.add_argument("--quiet", action="store_true")
    add_conf_args(f)
    f.set_defaults(func=run_fmaps)

    e = tsub.add_parser(
        "features", help="write a features HDF5 from cached feature maps (as delf extract would)",
        description="Same file as `delf extract` with the same extractor options (conf attributes included), "
                    "built from the feature-map cache; photos not cached yet are computed and cached.")
    e.add_argument("inputs", nargs="+", metavar="PHOTOS_OR_DIR")
    e.add_argument("--cache", required=True, help="cache folder")
    e.add_argument("--out", required=True, help="features file (HDF5) to create or add to")
    e.add_argument("--float16", action="store_true")
    e.add_argument("--quiet", action="store_true")
    add_conf_args(e)
    e.set_defaults(func=run_features)


def run_attention(args) -> int:
    from engine.training.attention import TrainConf, train_attention
    from common.labels import labelled_photos
    from engine.training.data import AugmentConf
    from engine.training.inliers import PairConf

    if len(args.images) != len(args.labels):
        raise ValueError(f"give one --labels per --images ({len(args.images)} --images, {len(args.labels)} --labels)")
    photos = []
    for i, (images, labels) in enumerate(zip(args.images, args.labels)):
        multi = len(args.images) > 1
        photos += labelled_photos(images, labels, prefix=str(i) if multi else "",
                                  label_prefix=f"{i}/" if multi else "")
    for key in ("epochs", "batch_size", "copies", "min_side", "max_side", "cells"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1")
    for key in ("partners", "distractors"):
        if getattr(args, key) < 0:
            raise ValueError(f"--{key} must be >= 0")
    if args.min_side > args.max_side:
        raise ValueError("--min-side must not exceed --max-side")
    if not 0 <= args.val_fraction < 1:
        raise ValueError("--val-fraction must be in [0, 1)")
    conf = TrainConf(seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     val_fraction=args.val_fraction, objective=args.objective, norm_input=args.norm_input,
                     augment=AugmentConf(copies=args.copies, min_side=args.min_side, max_side=args.max_side),
                     pairs=PairConf(partners=args.partners, distractors=args.distractors, cells=args.cells))
    curve = args.curve or os.path.splitext(args.out)[0] + ".png"
    result = train_attention(photos, args.out, args.cache or args.out + ".cache", conf,
                             backbone_name=args.backbone, backbone_weights=args.weights,
                             checkpoint=args.checkpoint, curve=curve, progress=not args.quiet,
                             log=lambda m: print(m, file=sys.stderr))
    last = result.history[-1] if result.history else {}
    what = {"homography": "survival under homographies",
            "inliers": "verified inliers of same-label pairs"}.get(args.objective, f"{len(result.classes)} classes")
    unit = "photos" if args.objective == "inliers" else "augmented copies"
    line = (f"{args.out}: attention head trained on {result.n_train} {unit} ({what}), final train loss "
            f"{last.get('train_loss', float('nan')):.3f}, validation loss {last.get('val_loss', float('nan')):.3f}")
    if args.objective in ("labels", "both"):
        line += f", validation accuracy {last.get('val_acc', float('nan')):.3f}"
    print(line + f" ({result.seconds / 60:.1f} min)")
    print(f"wrote {args.out}, {curve}")
    return 0


def run_fmaps(args) -> int:
    from engine.training.fmaps import fill_cache

    cache, done, failed = fill_cache(args.inputs, args.cache, conf_from_args(args), progress=not args.quiet)
    for path, problem in failed:
        print(f"{path}: {problem}", file=sys.stderr)
    print(f"{cache.dir}: {len(done)} photos cached, {len(failed)} failed")
    return 0 if done or not failed else 2


def run_features(args) -> int:
    from engine.training.fmaps import features_from_cache

    report = features_from_cache(args.inputs, args.cache, args.out, conf_from_args(args), float16=args.float16,
                                 progress=not args.quiet)
    return report_batch(report)

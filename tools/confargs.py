"""Command-line options that build an ExtractorConf (shared by every command that extracts)."""

from __future__ import annotations

from delf.conf import BACKBONES, PRESETS, SCORINGS, ExtractorConf


def add_conf_args(p) -> None:
    g = p.add_argument_group("extractor")
    g.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="starting conf (default: %(default)s)")
    g.add_argument("--backbone", choices=BACKBONES, help="network (default: lite0)")
    g.add_argument("--weights", help="backbone weights: resnet50 .h5 file, or SavedModel dir for savedmodel")
    g.add_argument("--scales", type=lambda s: tuple(float(v) for v in s.split(",")),
                   help="pyramid scales, comma-separated (default: %s)" % ",".join(map(str, ExtractorConf().scales)))
    g.add_argument("--max-image-size", type=int, help="longest side before the pyramid (default: 1024)")
    g.add_argument("--max-features", type=int, help="keypoints kept per photo (default: 1000)")
    g.add_argument("--abs-threshold", type=float, help="drop keypoints scoring below this (default: none)")
    g.add_argument("--scoring", choices=SCORINGS, help="keypoint scoring (default: norm)")
    g.add_argument("--attention-weights", help="attention head .npz (default: the shipped head)")
    g.add_argument("--pca", help="PCA .npz, 'default' (shipped) or 'none' (default: default)")
    g.add_argument("--pca-dim", type=int, help="descriptor dimension after PCA (default: 40)")
    g.add_argument("--seed", type=int, help="seed of --scoring random (default: 0)")


def conf_from_args(args) -> ExtractorConf:
    conf = ExtractorConf.preset(args.preset)
    changes = {}
    for key in ("backbone", "weights", "scales", "max_image_size", "max_features", "abs_threshold", "scoring",
                "attention_weights", "pca_dim", "seed"):
        value = getattr(args, key, None)
        if value is not None:
            changes[key] = value
    if getattr(args, "pca", None) is not None:
        changes["pca"] = None if args.pca.lower() == "none" else args.pca
    return conf.replace(**changes) if changes else conf


def report_batch(report, file=None) -> int:
    """Print an extraction batch's result: each photo that could not be used on
    one line of stderr, the counts on stdout. Exit status 2 when nothing usable
    came out of the batch, else 0."""
    import sys

    for path, problem in report.failed:
        print(f"{path}: {problem}", file=sys.stderr)
    print(report.summary(with_failures=False), file=file)
    return 2 if report.failed and not report.extracted and not report.skipped else 0

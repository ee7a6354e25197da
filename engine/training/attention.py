"""`delf train attention`: DELF's attention head trained from image labels.

Frozen backbone; the attention-weighted mean of the L2-normalised feature map
feeds a linear classifier over the labels; cross-entropy. The backbone's maps
of a fixed number of augmented copies per photo are computed once and cached
(``delf.training.data``), so each epoch only runs the small head: minutes on
two CPU cores for a few hundred photos. TensorFlow places the work on a GPU
when there is one.

Deterministic for a seed: weights are initialised with NumPy, batches are
drawn from a per-epoch seeded permutation, TensorFlow runs with op
determinism. A checkpoint written after every epoch (optimiser state
included) lets a killed run resume to the very same weights.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from common.files import atomic_write_bytes
from delf.attention import BN_EPS, HIDDEN, AttentionHead, head_input
from .data import AugmentConf, AugmentedMaps, photo_seed, split_photos, survival_labels
from .inliers import PairConf

CKPT_VERSION = 1
OBJECTIVES = ("labels", "homography", "both", "inliers")


@dataclass(frozen=True)
class TrainConf:
    seed: int = 0
    epochs: int = 30
    batch_size: int = 32
    lr: float = 5e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.15
    # "labels": DELF's classification loss; "homography": self-supervised, the
    # attention predicts which cells survive into another augmented copy of
    # the same photo (mutual nearest neighbour at the true place); "both".
    # "inliers": the attention predicts which cells of the photo's pyramid
    # become verified RANSAC inliers against other photos of its label and
    # make no matches into other labels' photos (``delf.training.inliers``).
    objective: str = "labels"
    match_px: float = 12.0
    # The head also sees each cell's log feature norm (standardised), not
    # only its direction, as DELF's attention sees the raw features.
    norm_input: bool = False
    augment: AugmentConf = field(default_factory=AugmentConf)
    pairs: PairConf = field(default_factory=PairConf)

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    head: AttentionHead
    history: list[dict]  # one row per epoch: epoch, train_loss, train_acc, val_loss, val_acc, seconds
    classes: list[str]
    n_train: int
    n_val: int
    seconds: float


def _init_params(rng: np.random.Generator, c: int, k: int, extra: int = 0) -> dict:
    def glorot(fan_in, fan_out):
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-lim, lim, (fan_in, fan_out)).astype(np.float32)

    return {
        "conv1_w": glorot(c + extra, HIDDEN),
        "conv1_b": np.zeros(HIDDEN, np.float32),
        "bn_gamma": np.ones(HIDDEN, np.float32),
        "bn_beta": np.zeros(HIDDEN, np.float32),
        "conv2_w": (glorot(HIDDEN, 1) * 0.1).astype(np.float32),
        "conv2_b": np.zeros(1, np.float32),
        "cls_w": glorot(c, k),
        "cls_b": np.zeros(k, np.float32),
    }


def _pack(maps: list[np.ndarray], targets: list[np.ndarray]):
    """The cells of a batch of maps as one (N, C) array, the copy each cell
    belongs to and its survival target: no padding, and one traced graph for
    every batch."""
    c = maps[0].shape[-1]
    x = np.concatenate([m.reshape(-1, c) for m in maps]).astype(np.float32)
    seg = np.repeat(np.arange(len(maps), dtype=np.int32), [m.shape[0] * m.shape[1] for m in maps])
    return x, seg, np.concatenate(targets).astype(np.float32)


class _Model:
    """The head and classifier as TensorFlow variables, with a hand-written
    Adam (its state goes into the checkpoint)."""

    def __init__(self, tf, params: dict, conf: TrainConf, lognorm=None):
        self.tf, self.conf = tf, conf
        # (mean, std) of the log feature norm when the head sees it, else None.
        self.lognorm = None if lognorm is None else (float(lognorm[0]), float(lognorm[1]))
        self.names = sorted(params)
        self.vars = {k: tf.Variable(params[k], name=k) for k in self.names}
        self.m = {k: tf.Variable(np.zeros_like(params[k]), name=k + "_m") for k in self.names}
        self.v = {k: tf.Variable(np.zeros_like(params[k]), name=k + "_v") for k in self.names}
        self.t = tf.Variable(0.0)
        sig = [tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32),
               tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int32)]
        self._step = tf.function(self._train_step, input_signature=sig)
        self._eval = tf.function(self._forward, input_signature=sig)

    def _forward(self, x, seg, targets, labels):
        tf, p = self.tf, self.vars
        b = tf.shape(labels)[0]
        norm = tf.maximum(tf.norm(x, axis=-1, keepdims=True), 1e-12)
        xn = x / norm
        xin = xn
        if self.lognorm is not None:
            xin = tf.concat([xn, (tf.math.log(norm) - self.lognorm[0]) / self.lognorm[1]], axis=1)
        h = xin @ p["conv1_w"] + p["conv1_b"]
        # BatchNorm over every cell of the batch.
        mean = tf.reduce_mean(h, axis=0)
        var = tf.reduce_mean(tf.square(h - mean), axis=0)
        h = (h - mean) / tf.sqrt(var + BN_EPS) * p["bn_gamma"] + p["bn_beta"]
        s = (tf.nn.relu(h) @ p["conv2_w"])[:, 0] + p["conv2_b"]
        a = tf.nn.softplus(s)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(a), seg, b)
        pooled = tf.math.unsorted_segment_sum(a[:, None] * xn, seg, b) / counts[:, None]
        logits = pooled @ p["cls_w"] + p["cls_b"]
        loss = 0.0
        if self.conf.objective in ("labels", "both"):
            loss += tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        if self.conf.objective in ("homography", "both"):
            # Balanced binary cross-entropy on the score's logit (softplus is
            # monotonic, so the ranking of cells is what is learnt).
            pos = tf.cast(targets > 0.5, tf.float32)
            neg = tf.cast(tf.abs(targets) < 0.5, tf.float32)
            bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=pos, logits=s)
            loss += 0.5 * (tf.reduce_sum(bce * pos) / tf.maximum(tf.reduce_sum(pos), 1.0)
                           + tf.reduce_sum(bce * neg) / tf.maximum(tf.reduce_sum(neg), 1.0))
        if self.conf.objective == "inliers":
            # Soft targets (fraction of a cell's chances that became verified
            # inliers); -1: no evidence.
            has = tf.cast(targets >= 0, tf.float32)
            bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.clip_by_value(targets, 0.0, 1.0), logits=s)
            loss += tf.reduce_sum(bce * has) / tf.maximum(tf.reduce_sum(has), 1.0)
        acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels), tf.float32))
        return loss, acc

    def _train_step(self, x, seg, targets, labels):
        tf, c = self.tf, self.conf
        with tf.GradientTape() as tape:
            loss, acc = self._forward(x, seg, targets, labels)
            decay = tf.add_n([tf.reduce_sum(tf.square(self.vars[k])) for k in ("conv1_w", "conv2_w", "cls_w")])
            total = loss + c.weight_decay * decay
        grads = tape.gradient(total, [self.vars[k] for k in self.names])
        self.t.assign_add(1.0)
        b1, b2 = 0.9, 0.999
        lr = c.lr * tf.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for k, g in zip(self.names, grads):
            if g is None:  # the classifier's bias when only the survival objective is trained
                continue
            self.m[k].assign(b1 * self.m[k] + (1 - b1) * g)
            self.v[k].assign(b2 * self.v[k] + (1 - b2) * tf.square(g))
            self.vars[k].assign_sub(lr * self.m[k] / (tf.sqrt(self.v[k]) + 1e-8))
        return loss, acc

    def step(self, x, seg, targets, labels):
        loss, acc = self._step(x, seg, targets, labels)
        return float(loss), float(acc)

    def evaluate(self, x, seg, targets, labels):
        loss, acc = self._eval(x, seg, targets, labels)
        return float(loss), float(acc)

    def state(self) -> dict:
        out = {}
        for k in self.names:
            out["p_" + k] = self.vars[k].numpy()
            out["m_" + k] = self.m[k].numpy()
            out["v_" + k] = self.v[k].numpy()
        out["t"] = np.float32(self.t.numpy())
        return out

    def load_state(self, z) -> None:
        for k in self.names:
            self.vars[k].assign(z["p_" + k])
            self.m[k].assign(z["m_" + k])
            self.v[k].assign(z["v_" + k])
        self.t.assign(float(z["t"]))

    def params(self) -> dict:
        return {k: self.vars[k].numpy() for k in self.names}


def _batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]


def _ckpt_identity(photos, conf: TrainConf, backbone_name: str, pyramid=None) -> str:
    # Everything but the epoch count: a finished run can be resumed for more epochs.
    d = conf.to_dict()
    d.pop("epochs")
    if conf.objective == "inliers":
        d["pyramid"] = None if pyramid is None else pyramid.to_dict()
    return json.dumps({"conf": d, "backbone": backbone_name,
                       "photos": [[p.name, p.label] for p in photos]}, sort_keys=True)


def precise_bn(params: dict, maps: list[np.ndarray], chunk: int = 64, lognorm=None) -> tuple[np.ndarray, np.ndarray]:
    """Population mean and variance of the head's pre-BatchNorm activations
    over every cell of ``maps`` (what inference normalises with)."""
    total = np.zeros(HIDDEN, np.float64)
    total_sq = np.zeros(HIDDEN, np.float64)
    n = 0
    for i in range(0, len(maps), chunk):
        x = np.concatenate([m.reshape(-1, m.shape[-1]).astype(np.float32) for m in maps[i : i + chunk]])
        h = head_input(x, lognorm) @ params["conv1_w"] + params["conv1_b"]
        total += h.sum(axis=0)
        total_sq += np.square(h, dtype=np.float64).sum(axis=0)
        n += len(h)
    mean = total / n
    return mean.astype(np.float32), np.maximum(total_sq / n - mean**2, 0).astype(np.float32)


def _augmented_data(photos, cache_dir, conf, backbone, backbone_name, backbone_weights, maps, targets, labels,
                    owner, label_of, progress):
    """Maps of each photo's augmented copies (and survival targets when the
    objective needs them), appended to the given lists."""
    from tqdm import tqdm

    if backbone is None:
        from delf.backbones import make_backbone

        backbone = make_backbone(backbone_name, backbone_weights)
    store = AugmentedMaps(cache_dir, backbone_name, backbone_weights, conf.augment, conf.seed)
    need_targets = conf.objective != "labels"
    if need_targets and conf.augment.copies < 2:
        raise ValueError("the homography objective needs at least two augmented copies per photo")
    for i, p in enumerate(tqdm(photos, desc="feature maps", unit="photo", disable=None if progress else True, dynamic_ncols=True)):
        pm = store.get(p, backbone)
        if need_targets:
            # Copies pair up (0, 1), (2, 3), ...; an odd last copy pairs with copy 0.
            geo = store.geometry(p)
            for k in range(len(pm)):
                other = k ^ 1 if (k ^ 1) < len(pm) else 0
                targets.append(survival_labels(pm[k], geo[k], pm[other], geo[other], backbone.grid, conf.match_px))
        else:
            targets += [np.full(m.shape[0] * m.shape[1], -1, np.int8) for m in pm]
        for m in pm:
            maps.append(m)
            labels.append(label_of[p.label])
            owner.append(i)
    msg = ""
    if need_targets:
        allt = np.concatenate(targets)
        msg = f"survival targets: {np.mean(allt[allt >= 0] == 1):.3f} of {np.sum(allt >= 0)} cells survive"
    return backbone, msg


def _inlier_data(photos, cache_dir, conf, backbone, backbone_name, backbone_weights, maps, targets, progress,
                 pyramid=None):
    """The candidate cells of each photo's pyramid (``pyramid``: an
    ExtractorConf, default the extractor's default) that have evidence, as
    one (n, 1, C) array per photo, with their soft targets."""
    from tqdm import tqdm

    from delf.conf import ExtractorConf
    from delf.extractor import Extractor
    from delf.image import ImageError, problem_of
    from .fmaps import FeatureMapCache, cached_maps
    from .inliers import draw_pairs, gather_evidence, photo_cells

    xconf = (pyramid or ExtractorConf()).replace(backbone=backbone_name, weights=backbone_weights, scoring="norm",
                                                 attention_weights=None)
    extractor = Extractor(xconf)
    if backbone is not None:
        extractor.backbone = backbone
    cache = FeatureMapCache(cache_dir, xconf)
    cells = []
    for p in tqdm(photos, desc="feature maps", unit="photo", disable=None if progress else True, dynamic_ncols=True):
        try:
            levels, size = cached_maps(extractor, cache, p.path, p.name)
        except (ImageError, FileNotFoundError) as exc:
            raise ValueError(f"{p.path}: {problem_of(exc, p.path)}") from exc
        rng = np.random.default_rng(photo_seed(conf.seed, p.name))
        cells.append(photo_cells(extractor, levels, size, conf.pairs, rng))
    same, diff = draw_pairs([p.label for p in photos], conf.pairs, conf.seed)
    if not same:
        raise ValueError("the inliers objective needs at least two photos of one label")
    ev, stats = gather_evidence(cells, same, diff, conf.pairs, conf.seed, progress=progress)
    if stats["verified_pairs"] == 0:
        raise ValueError(f"none of the {len(same)} same-label pairs verified with {conf.pairs.min_inliers} inliers: "
                         "no inlier targets to learn from")
    n_cells = n_pos = 0.0
    for i, c in enumerate(cells):
        t = ev.targets(i)
        has = np.flatnonzero(t >= 0)
        if len(has) == 0:  # keep the photo (one cell, no verdict) so indices stay aligned
            has = np.array([0])
        maps.append(c.raw[has][:, None, :])
        targets.append(t[has])
        n_cells += float(np.sum(t >= 0))
        n_pos += float(np.sum(np.clip(t[t >= 0], 0, 1)))
    msg = (f"inlier targets: {stats['verified_pairs']} of {stats['same_pairs']} same-label pairs verified, "
           f"{stats['false_matches']} false matches in {stats['different_pairs']} other pairs; {n_cells:.0f} cells "
           f"with evidence, mean target {n_pos / max(n_cells, 1):.4f}")
    return extractor.backbone, msg


def _lognorm_stats(maps: list[np.ndarray]) -> tuple[float, float]:
    """Mean and std of the log feature norm over every cell of ``maps``."""
    total = total_sq = 0.0
    n = 0
    for m in maps:
        ln = np.log(np.maximum(np.linalg.norm(m.reshape(-1, m.shape[-1]).astype(np.float32), axis=1), 1e-12))
        total += float(ln.sum())
        total_sq += float(np.square(ln, dtype=np.float64).sum())
        n += len(ln)
    mean = total / max(n, 1)
    return mean, float(np.sqrt(max(total_sq / max(n, 1) - mean**2, 1e-12)))


def train_attention(
    photos: list,  # of common.labels.LabelledPhoto
    out: str,
    cache_dir: str,
    conf: TrainConf | None = None,
    backbone=None,
    backbone_name: str = "lite0",
    backbone_weights: str | None = None,
    checkpoint: str | None = None,
    curve: str | None = None,
    progress: bool = True,
    log=print,
    pyramid=None,
) -> TrainResult:
    """Train the attention head on labelled photos and write it to ``out``
    (an ``AttentionHead`` .npz). ``checkpoint`` (default ``out + '.ckpt.npz'``)
    is written after every epoch and resumed from when it matches this run.
    ``pyramid``: the ExtractorConf whose pyramid the ``inliers`` objective
    matches cells over (default: the extractor's default pyramid); the
    other objectives use augmented single-scale copies."""
    from tqdm import tqdm

    from delf.tfimport import import_tensorflow

    tf = import_tensorflow()
    tf.config.experimental.enable_op_determinism()
    conf = conf or TrainConf()
    t0 = time.perf_counter()
    if len(photos) < 2:
        raise ValueError("training needs at least two labelled photos")
    classes = sorted({p.label for p in photos})
    if len(classes) < 2 and conf.objective != "homography":
        raise ValueError(f"training needs at least two classes, got only {classes[0]!r}")
    label_of = {c: i for i, c in enumerate(classes)}
    maps, labels, owner, targets = [], [], [], []
    if conf.objective == "inliers":
        backbone, data_log = _inlier_data(photos, cache_dir, conf, backbone, backbone_name, backbone_weights,
                                          maps, targets, progress, pyramid)
        labels = [label_of[p.label] for p in photos]
        owner = list(range(len(photos)))
    else:
        backbone, data_log = _augmented_data(photos, cache_dir, conf, backbone, backbone_name, backbone_weights,
                                             maps, targets, labels, owner, label_of, progress)
    labels, owner = np.asarray(labels, np.int32), np.asarray(owner)
    train_photos, val_photos = split_photos(photos, conf.val_fraction, conf.seed)
    tr = np.flatnonzero(np.isin(owner, train_photos))
    va = np.flatnonzero(np.isin(owner, val_photos))
    if data_log:
        log(data_log)
    what = ("every pyramid cell with evidence" if conf.objective == "inliers"
            else f"{conf.augment.copies} augmented copies each")
    log(f"{len(photos)} photos of {len(classes)} classes ({len(train_photos)} train, {len(val_photos)} validation), "
        f"{what}; feature maps ready in {time.perf_counter() - t0:.0f} s")
    lognorm = _lognorm_stats([maps[j] for j in tr]) if conf.norm_input else None

    rng = np.random.default_rng(np.random.SeedSequence([conf.seed, 1]))
    model = _Model(tf, _init_params(rng, maps[0].shape[-1], len(classes), 1 if lognorm else 0), conf, lognorm)
    checkpoint = checkpoint or os.fspath(out) + ".ckpt.npz"
    identity = _ckpt_identity(photos, conf, backbone_name, pyramid)
    history: list[dict] = []
    start = 0
    if os.path.isfile(checkpoint):
        try:
            with np.load(checkpoint) as z:
                if str(z["identity"]) == identity:
                    model.load_state(z)
                    history = json.loads(str(z["history"]))
                    start = len(history)
                    log(f"resumed from {checkpoint} after epoch {start}")
                else:
                    log(f"{checkpoint}: made by another run (photos or settings differ); starting afresh")
        except (KeyError, OSError, ValueError) as exc:
            raise ValueError(f"{checkpoint}: damaged checkpoint ({exc}); delete it to start afresh") from exc

    def run_eval(idx):
        if len(idx) == 0:
            return float("nan"), float("nan")
        tot_l = tot_a = 0.0
        for b in range(0, len(idx), 64):
            sel = idx[b : b + 64]
            x, seg, t = _pack([maps[j] for j in sel], [targets[j] for j in sel])
            l, a = model.evaluate(x, seg, t, labels[sel])
            tot_l += l * len(sel)
            tot_a += a * len(sel)
        return tot_l / len(idx), tot_a / len(idx)

    bar = tqdm(range(start, conf.epochs), desc="train", unit="epoch", disable=None if progress else True, dynamic_ncols=True,
               initial=start, total=conf.epochs)
    for epoch in bar:
        te = time.perf_counter()
        erng = np.random.default_rng(np.random.SeedSequence([conf.seed, 2, epoch]))
        losses, accs, sizes = [], [], []
        for sel in _batches(len(tr), conf.batch_size, erng):
            sel = tr[sel]
            x, seg, t = _pack([maps[j] for j in sel], [targets[j] for j in sel])
            l, a = model.step(x, seg, t, labels[sel])
            losses.append(l)
            accs.append(a)
            sizes.append(len(sel))
        val_loss, val_acc = run_eval(va)
        row = {"epoch": epoch + 1, "train_loss": float(np.average(losses, weights=sizes)),
               "train_acc": float(np.average(accs, weights=sizes)), "val_loss": val_loss, "val_acc": val_acc,
               "seconds": time.perf_counter() - te}
        history.append(row)
        if conf.objective not in ("labels", "both"):
            # No classifier is trained: its accuracy means nothing (NaN, left out of the curve).
            row["train_acc"] = row["val_acc"] = float("nan")
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{val_loss:.3f}", acc=f"{row['val_acc']:.2f}")
        state = model.state()
        state["identity"] = np.array(identity)
        state["history"] = np.array(json.dumps(history))
        state["version"] = np.int32(CKPT_VERSION)
        buf = io.BytesIO()
        np.savez(buf, **state)
        atomic_write_bytes(checkpoint, buf.getvalue())
    bar.close()

    params = model.params()
    bn_mean, bn_var = precise_bn(params, [maps[j] for j in tr], lognorm=lognorm)
    head = AttentionHead(params["conv1_w"], params["conv1_b"], params["bn_gamma"], params["bn_beta"],
                         bn_mean, bn_var, params["conv2_w"], params["conv2_b"],
                         None if lognorm is None else np.asarray(lognorm, np.float32))
    head.save(out)
    if curve:
        write_curve(curve, history)
    return TrainResult(head, history, classes, len(tr), len(va), time.perf_counter() - t0)


def write_curve(path: str, history: list[dict], width: int = 800, height: int = 480) -> None:
    """Training curve PNG: loss (train, validation) and validation accuracy per epoch."""
    import cv2

    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 20, 30, 50
    pw, ph = width - left - right, height - top - bottom
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    epochs = [r["epoch"] for r in history]
    series = [("train loss", [r["train_loss"] for r in history], (200, 60, 30)),
              ("val loss", [r["val_loss"] for r in history], (30, 60, 200))]
    finite = [v for _, vals, _ in series for v in vals if np.isfinite(v)]
    ymax = max(finite) * 1.05 if finite else 1.0
    xmax = max(epochs) if epochs else 1

    def pt(e, v, vmax):
        return (int(left + pw * (e / max(xmax, 1))), int(top + ph * (1 - v / vmax)))

    if any(np.isfinite(r["val_acc"]) for r in history):
        series.append(("val accuracy (x max loss)", [r["val_acc"] * ymax for r in history], (30, 150, 30)))
    for k, (name, vals, colour) in enumerate(series):
        pts = [pt(e, v, ymax) for e, v in zip(epochs, vals) if np.isfinite(v)]
        for a, b in zip(pts, pts[1:]):
            cv2.line(img, a, b, colour, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 2, colour, -1)
        cv2.putText(img, name, (left + 10 + 230 * k, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    for frac in (0, 0.25, 0.5, 0.75, 1.0):
        y = int(top + ph * (1 - frac))
        cv2.putText(img, f"{ymax * frac:.2f}", (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"epoch (0..{xmax})", (left + pw // 2 - 40, height - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (0, 0, 0), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", img[..., ::-1])
    if not ok:
        raise ValueError(f"cannot encode a PNG for {path}")
    atomic_write_bytes(path, buf.tobytes())

"""A cache of raw backbone feature maps, one ``.npz`` per photo.

The backbone is nearly all of extraction's time (97% with the default
pyramid), while scoring, selection and PCA take milliseconds. Caching each
pyramid level's raw map (float16, about 2.7 MB per 1024 px photo at the six
default scales) lets ``Extractor.features_from_maps`` rebuild the features of
any scoring, head, PCA or keypoint budget without running the network again,
and gives training its precomputed inputs.

Layout: ``DIR/<key>/<photo name>.npz`` where ``key`` hashes what decides the
maps (backbone, weights, scales, max_image_size); ``DIR/<key>/conf.json``
records those. Every file is written atomically, so an interrupted run leaves
only complete entries and resumes by skipping them.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np

from common.files import atomic_write_bytes, sha256_text

MAP_KEYS = ("backbone", "weights", "scales", "max_image_size")
FORMAT_VERSION = 1


def map_conf(conf) -> dict:
    d = conf.to_dict()
    return {k: d[k] for k in MAP_KEYS}


def map_key(conf) -> str:
    return sha256_text(json.dumps(map_conf(conf), sort_keys=True), 16)


class FeatureMapCache:
    """``cache.get(name)`` -> (levels, image_size) or None; ``cache.put(...)``."""

    def __init__(self, root, conf):
        self.conf = conf
        self.dir = os.path.join(os.fspath(root), map_key(conf))

    def _ensure(self) -> None:
        """The cache folder and its conf.json, made when the first map is stored (a failed run leaves none)."""
        meta = os.path.join(self.dir, "conf.json")
        if not os.path.isfile(meta):
            atomic_write_bytes(meta, json.dumps(map_conf(self.conf), sort_keys=True, indent=1).encode())

    def path(self, name: str) -> str:
        name = os.fspath(name)
        if os.path.isabs(name) or ".." in name.split("/"):
            raise ValueError(f"feature-map cache: photo name {name!r} must be a relative path inside the folder")
        return os.path.join(self.dir, name + ".npz")

    def __contains__(self, name: str) -> bool:
        return os.path.isfile(self.path(name))

    def get(self, name: str):
        path = self.path(name)
        if not os.path.isfile(path):
            return None
        try:
            with np.load(path) as z:
                size = tuple(int(v) for v in z["image_size"])
                meta = z["levels"]
                levels = [
                    (float(meta[i, 0]), int(meta[i, 1]), int(meta[i, 2]), z[f"map{i}"])
                    for i in range(len(meta))
                ]
        except (KeyError, OSError, ValueError) as exc:
            raise ValueError(f"{path}: damaged feature-map cache entry ({exc}); delete it to recompute") from exc
        return levels, size

    def put(self, name: str, levels, image_size) -> None:
        self._ensure()
        arrays = {
            "format_version": np.int32(FORMAT_VERSION),
            "image_size": np.asarray(image_size, np.int64),
            "levels": np.asarray([(s, lw, lh) for s, lw, lh, _ in levels], np.float64).reshape(-1, 3),
        }
        for i, (_, _, _, fmap) in enumerate(levels):
            arrays[f"map{i}"] = np.asarray(fmap, np.float16)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self.path(name), buf.getvalue())


def cached_maps(extractor, cache: FeatureMapCache, path: str, name: str):
    """(levels, image_size) of a photo: from the cache, else computed and cached."""
    hit = cache.get(name)
    if hit is not None:
        return hit
    rgb = extractor.load(path)
    h, w = rgb.shape[:2]
    levels = extractor.feature_maps(rgb)
    cache.put(name, levels, (w, h))
    # Return what a later hit returns (float16 maps) so both paths agree.
    return [(s, lw, lh, np.asarray(m, np.float16)) for s, lw, lh, m in levels], (w, h)


def fill_cache(inputs, cache_root, conf=None, progress: bool = True, extractor=None):
    """Compute and cache the feature maps of every photo of ``inputs``.
    Returns (cache, names done, [(path, problem)] failed)."""
    from tqdm import tqdm

    from delf.conf import ExtractorConf
    from delf.extractor import Extractor
    from delf.image import ImageError, list_images, problem_of, require_inputs

    conf = conf or ExtractorConf()
    require_inputs(inputs)
    items = list_images(inputs)
    if not items:
        raise ValueError(f"no photos found in {', '.join(map(str, inputs))}")
    cache = FeatureMapCache(cache_root, conf)
    todo = [(p, n) for p, n in items if n not in cache]
    if todo and extractor is None:
        extractor = Extractor(conf.replace(scoring="norm", pca=None))
    done, failed = [n for p, n in items if n in cache], []
    for path, name in tqdm(todo, desc="feature maps", unit="photo", disable=None if progress else True, dynamic_ncols=True):
        try:
            cached_maps(extractor, cache, path, name)
        except (ImageError, FileNotFoundError) as exc:
            failed.append((path, problem_of(exc, path)))
            continue
        done.append(name)
    return cache, done, failed


def features_from_cache(inputs, cache_root, out, conf=None, float16: bool = False, progress: bool = True):
    """Write a features HDF5 (as ``delf extract`` would, conf attributes
    included) for every photo of ``inputs``, from cached feature maps;
    photos not yet cached are computed and cached first."""
    from delf.conf import ExtractorConf
    from delf.extract import extract_to_h5
    from delf.extractor import Extractor

    extractor = Extractor(conf or ExtractorConf())
    cache = FeatureMapCache(cache_root, extractor.conf)

    def compute(path, name):
        return extractor.features_from_maps(*cached_maps(extractor, cache, path, name))

    return extract_to_h5(inputs, out, float16=float16, progress=progress, extractor=extractor, compute=compute,
                         desc="features")

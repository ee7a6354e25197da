"""`delf index build|add|remove|compact|info`: thin wrappers over ``index``."""

from __future__ import annotations

import os
import sys


def register(sub) -> None:
    from index.writer import IndexConf

    d = IndexConf()
    p = sub.add_parser("index", help="build and maintain the descriptor index",
                       description="An index is a directory: a manifest, a codebook (the default compact "
                                   "\"pq\" kind: Annoy over coarse centroids, product-quantised codes, about "
                                   "23 bytes per descriptor) and one or more segments per build, add or compact. "
                                   "One writer at a time; any number of readers, who always see the last "
                                   "complete state.")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION")
    isub.required = True

    def writer_opts(q, build: bool = False) -> None:
        if build:
            q.add_argument("--kind", choices=("pq", "annoy"), default=d.kind,
                           help="pq: compact inverted file of product-quantised codes; annoy: one Annoy "
                                "forest over the full descriptors, about 90x larger (default: %(default)s)")
            q.add_argument("--shards", type=int, default=d.shards,
                           help="segments of whole photos written by build and compact, searched in "
                                "parallel by `delf search --workers/--scheduler` (default: %(default)s)")
            q.add_argument("--nlist", type=int, default=d.nlist,
                           help="pq: coarse cells; 0: about 4 sqrt(descriptors) (default: %(default)s)")
            q.add_argument("--pq-m", type=int, default=d.pq_m,
                           help="pq: one-byte codes per descriptor (default: %(default)s)")
            q.add_argument("--trees", type=int, default=d.n_trees,
                           help="annoy: trees per segment, kept for later adds (default: %(default)s)")
            q.add_argument("--seed", type=int, default=d.seed, help="k-means and Annoy seed (default: %(default)s)")
        q.add_argument("--build-threads", type=int, default=d.build_threads,
                       help="build threads; -1: all cores (a pq index is the same for any count) "
                            "(default: %(default)s)")
        q.add_argument("--wait", type=float, default=d.lock_timeout,
                       help="seconds to wait for another writer to finish (default: %(default)s)")

    q = isub.add_parser("build", help="create an index from features files (one segment)")
    q.add_argument("index", metavar="INDEX", help="index directory")
    q.add_argument("features", metavar="FEATURES.h5", nargs="+", help="features files from `delf extract`")
    q.add_argument("--overwrite", action="store_true", help="replace an existing index (atomically)")
    q.add_argument("--no-graph", action="store_true",
                   help="do not build the match graph (every photo searching the index once: diffusion walks "
                        "it, a version 3 confidence reads which photos are one place from it)")
    writer_opts(q, build=True)
    q.set_defaults(func=run_build)

    q = isub.add_parser("add", help="add the photos of a features file as a new segment")
    q.add_argument("index", metavar="INDEX")
    q.add_argument("features", metavar="FEATURES.h5")
    q.add_argument("--no-graph", action="store_true", help="do not search the index with the new photos for its "
                                                            "match graph (when it has one)")
    q.add_argument("--skip-existing", action="store_true",
                   help="add only the photos not in the index yet (default: refuse duplicates)")
    writer_opts(q)
    q.set_defaults(func=run_add)

    q = isub.add_parser("remove", help="remove photos by name (tombstones; bytes freed by compact)")
    q.add_argument("index", metavar="INDEX")
    q.add_argument("names", metavar="NAMES", nargs="+", help="photo names as in the features file")
    writer_opts(q)
    q.set_defaults(func=run_remove)

    q = isub.add_parser("compact", help="merge the segments into the index's shard count, dropping removed photos")
    q.add_argument("index", metavar="INDEX")
    writer_opts(q)
    q.set_defaults(func=run_compact)

    q = isub.add_parser("info", help="photos, descriptors, segments and bytes on disk")
    q.add_argument("index", metavar="INDEX")
    q.add_argument("--check", action="store_true", help="also verify every file's SHA-256")
    q.add_argument("--json", dest="json_out", help="also write the figures here as JSON")
    q.set_defaults(func=run_info)


def _conf(args, **extra):
    from index.writer import IndexConf

    return IndexConf(build_threads=args.build_threads, lock_timeout=args.wait, **extra)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def format_info(info: dict) -> str:
    conf = info["extractor_conf"]
    lines = [
        f"index        {info['path']} (format {info['format_version']}, generation {info['generation']})",
        f"photos       {info['photos']}" + (f" ({info['removed_photos']} removed, awaiting compact)"
                                            if info["removed_photos"] else ""),
        f"descriptors  {info['descriptors']} x {info['dim']}-D"
        + (f" ({info['stored_descriptors']} stored)"
           if info["stored_descriptors"] != info["descriptors"] else ""),
        f"segments     {len(info['segments'])}",
        f"on disk      {_mib(info['bytes_on_disk'])} ({info['bytes_on_disk']} bytes)",
        _kind_line(info),
        f"extractor    backbone {conf.get('backbone')}, scales {conf.get('scales')}, pca {conf.get('pca')} "
        f"-> {conf.get('descriptor_dim', conf.get('pca_dim'))}-D",
    ]
    for s in info["segments"]:
        lines.append(f"  {s['name']}  {s['photos']} photos  {s['descriptors']} descriptors  "
                     f"{_mib(s['bytes'])}")
    return "\n".join(lines)


def _kind_line(info: dict) -> str:
    ic, cb = info["index_conf"], info.get("codebook")
    per = info["bytes_on_disk"] / max(info["stored_descriptors"], 1)
    if info.get("kind", "annoy") == "pq" and cb:
        return (f"kind         pq: {cb['nlist']} cells, {cb['pq_m']} codes, {per:.1f} bytes per descriptor, "
                f"seed {ic.get('seed')}")
    return f"kind         annoy: {ic.get('n_trees')} trees, {per:.0f} bytes per descriptor, seed {ic.get('seed')}"


def run_build(args) -> int:
    from index import build_index

    from common.errors import UserError

    if args.shards < 1 or args.nlist < 0 or args.pq_m < 1:
        raise UserError("--shards and --pq-m must be at least 1, --nlist at least 0")
    info = build_index(args.index, args.features,
                       _conf(args, kind=args.kind, shards=args.shards, nlist=args.nlist, pq_m=args.pq_m,
                             n_trees=args.trees, seed=args.seed), overwrite=args.overwrite)
    print(format_info(info))
    if not args.no_graph:
        _graph(args.index, args.features, None, rebuild=True)
    return 0


def _graph(index, features, names, rebuild: bool = False) -> None:
    from engine.graph_update import update_graph_from_features

    g = update_graph_from_features(index, features, names, rebuild=rebuild, progress=True)
    print(f"match graph  {len(g.searched)} photos searched, {len(g)} verified pairs")


def run_add(args) -> int:
    from index import add_to_index

    from engine.graph import graph_path, stale
    from index import Index

    with Index(args.index) as index:
        before = set(index.photos())
    print(format_info(add_to_index(args.index, args.features, _conf(args), skip_existing=args.skip_existing)))
    if not args.no_graph and stale(args.index):
        print(f"{graph_path(args.index)}: match graph of an older version, not updated; "
              f"`delf index build` makes a new one", file=sys.stderr)
    elif not args.no_graph and os.path.isfile(graph_path(args.index)):
        with Index(args.index) as index:
            added = set(index.photos()) - before
        if added:
            _graph(args.index, [args.features], added)
    return 0


def run_remove(args) -> int:
    from index import remove_from_index

    print(format_info(remove_from_index(args.index, args.names, _conf(args))))
    return 0


def run_compact(args) -> int:
    from index import compact_index

    print(format_info(compact_index(args.index, _conf(args))))
    return 0


def run_info(args) -> int:
    from index import index_info

    info = index_info(args.index, check="full" if args.check else "size")
    print(format_info(info))
    if args.check:
        print("check        every file matches its SHA-256 in the manifest")
    if args.json_out:
        from common.files import write_json

        write_json(args.json_out, info)
    return 0

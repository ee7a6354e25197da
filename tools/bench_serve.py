"""`delf bench serve`: command line of evaluation.bench_serve."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="load test of `delf serve` on loopback: queries per second, latency, errors",
        description="Starts `delf serve` over a copy of the index on a free loopback port, sends REQUESTS "
                    "searches from CLIENTS threads while adding one photo, checks every answer and that the "
                    "index ends complete, then answers the same queries in process for comparison.")
    p.add_argument("--index", required=True, help="index directory (from `delf index build`)")
    p.add_argument("--queries", required=True, help="query photos: a folder, a photo or a .txt list")
    p.add_argument("--clients", type=int, default=8, help="client threads (default: %(default)s)")
    p.add_argument("--requests", type=int, default=200, help="searches sent in all (default: %(default)s)")
    p.add_argument("--top", type=int, default=5, help="results asked per search (default: %(default)s)")
    p.add_argument("--startup-timeout", type=float, default=600,
                   help="seconds to wait for the server's /health (default: %(default)s)")
    p.add_argument("--json", required=True, dest="json_out", help="write the results here")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from common.files import write_json
    from evaluation.bench_serve import bench_serve

    result = bench_serve(args.index, args.queries, clients=args.clients, requests=args.requests, top=args.top,
                         startup_timeout=args.startup_timeout, log=print)
    write_json(args.json_out, result)
    print(json.dumps({k: result[k] for k in ("queries_per_second", "p50_ms", "p95_ms", "p99_ms", "errors",
                                             "in_process_queries_per_second")}, indent=1))
    print(f"wrote {args.json_out}")
    return 0 if result["errors"] == 0 else 1

"""Benchmark behind `delf bench serve`: a bounded load test of `delf serve` on loopback.

Starts its own server (``python -m tools.cli serve`` on a free port, over a
copy of the index, so that the index given is never changed), waits for
``/health``, sends ``requests`` POST /search requests from ``clients``
threads and, a quarter of the way in, adds one photo (POST /photos). Every
answer is checked (status, fields, the query's name); afterwards the index
must hold the added photo and every photo it held before. Then the same
queries are answered in this process with ``Engine.search``, one after
another: the ratio of the two rates is the cost (or gain) of serving.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_server(index_dir, port: int, log_path: str, args=(), python: str = sys.executable) -> subprocess.Popen:
    """``delf serve INDEX --port PORT ARGS...`` in a subprocess (this checkout's code first on its path),
    its output appended to ``log_path``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    with open(log_path, "ab") as out:
        return subprocess.Popen([python, "-m", "tools.cli", "serve", os.fspath(index_dir), "--port", str(port),
                                 *map(str, args)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def wait_healthy(proc: subprocess.Popen, url: str, log_path: str, timeout: float = 600.0) -> float:
    """Seconds until ``url``/health answers 200; RuntimeError (with the server's last output) if the
    server exits or the time runs out."""
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}: {_tail(log_path)}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server did not answer /health within {timeout:.0f} s: {_tail(log_path)}")


def stop_server(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """SIGTERM, then the exit status (killed after ``timeout`` s: -9)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return -9
    return proc.returncode


def _tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace")
    except OSError:
        return "(no output)"


def check_answer(resp, name: str) -> str | None:
    """None when ``resp`` is a valid /search answer for the query ``name``, else what is wrong."""
    if resp.status_code != 200:
        return f"{name}: HTTP {resp.status_code}: {resp.text[:200]}"
    try:
        d = resp.json()
    except ValueError:
        return f"{name}: not JSON: {resp.text[:200]}"
    if d.get("query") != name or d.get("decision") not in ("match", "no match"):
        return f"{name}: wrong query or decision in {str(d)[:200]}"
    if not isinstance(d.get("results"), list) or not 0.0 <= float(d.get("confidence", -1)) <= 1.0:
        return f"{name}: no results list or a confidence out of [0, 1]"
    if any(not {"name", "inliers", "confidence"} <= set(r) for r in d["results"]):
        return f"{name}: a result without name, inliers or confidence"
    return None


def bench_serve(index_dir, queries, clients: int = 8, requests: int = 200, top: int = 5,
                startup_timeout: float = 600.0, log=print) -> dict:
    """The load test (module docstring). Returns queries_per_second, p50_ms, p95_ms, p99_ms, errors,
    in_process_queries_per_second and the run's details."""
    import httpx

    from delf.image import list_images

    if clients < 1 or requests < 1:
        raise ValueError(f"clients and requests must be at least 1, got {clients} and {requests}")
    photos = list_images(queries if isinstance(queries, (list, tuple)) else [queries])
    if not photos:
        raise ValueError(f"{queries}: no query photos")
    payloads = []
    for path, name in photos:
        with open(path, "rb") as f:
            payloads.append((os.path.basename(name), f.read()))
    plan = [payloads[i % len(payloads)] for i in range(requests)]
    added_name = f"bench-added-{secrets.token_hex(4)}.jpg"
    token = secrets.token_hex(16)
    errors, messages = [0], []
    lock = threading.Lock()

    def fail(message: str) -> None:
        with lock:
            errors[0] += 1
            if len(messages) < 10:
                messages.append(message)

    with tempfile.TemporaryDirectory(prefix="delf-bench-serve-") as tmp:
        idx = os.path.join(tmp, "index")
        shutil.copytree(index_dir, idx, ignore=shutil.ignore_patterns("LOCK"))
        log_path = os.path.join(tmp, "server.log")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log(f"starting delf serve on {url} over a copy of {index_dir}")
        proc = start_server(idx, port, log_path, ["--token", token])
        try:
            startup = wait_healthy(proc, url, log_path, startup_timeout)
            before = set(httpx.get(url + "/photos", timeout=60).json()["photos"])
            with httpx.Client(timeout=600) as c:  # not timed: the first answer of a fresh process
                name, data = plan[0]
                problem = check_answer(c.post(url + "/search", files={"photo": (name, data)}), name)
                if problem:
                    raise RuntimeError(f"the warm-up search failed: {problem}")
            log(f"server ready in {startup:.1f} s ({len(before)} photos); {requests} searches from {clients} clients")
            latencies, done = [], [0]
            quarter = threading.Event()
            todo = iter(range(requests))

            def client() -> None:
                with httpx.Client(timeout=600) as c:
                    while True:
                        with lock:
                            i = next(todo, None)
                        if i is None:
                            return
                        name, data = plan[i]
                        t0 = time.perf_counter()
                        try:
                            resp = c.post(url + "/search", files={"photo": (name, data)}, data={"top": str(top)})
                            problem = check_answer(resp, name)
                        except httpx.HTTPError as exc:
                            problem = f"{name}: {type(exc).__name__}: {exc}"
                        ms = (time.perf_counter() - t0) * 1000
                        if problem:
                            fail(problem)
                        with lock:
                            latencies.append(ms)
                            done[0] += 1
                            if done[0] >= max(1, requests // 4):
                                quarter.set()

            def adder() -> None:
                quarter.wait()
                try:
                    resp = httpx.post(url + "/photos", files={"photo": (added_name, payloads[0][1])},
                                      headers={"Authorization": f"Bearer {token}"}, timeout=600)
                    if resp.status_code != 200 or resp.json().get("added") != [added_name]:
                        fail(f"POST /photos: HTTP {resp.status_code}: {resp.text[:200]}")
                except httpx.HTTPError as exc:
                    fail(f"POST /photos: {type(exc).__name__}: {exc}")

            threads = [threading.Thread(target=client) for _ in range(clients)] + [threading.Thread(target=adder)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads[:-1]:
                t.join()
            wall = time.perf_counter() - t0
            quarter.set()
            threads[-1].join()
            after = set(httpx.get(url + "/photos", timeout=60).json()["photos"])
            if added_name not in after:
                fail(f"the added photo {added_name} is not in the index")
            if not before <= after:
                fail(f"photos lost during the load: {sorted(before - after)[:5]}")
        finally:
            status = stop_server(proc)
        if status != 0:
            fail(f"the server exited with status {status}: {_tail(log_path)}")
    log(f"{requests} searches in {wall:.1f} s ({requests / wall:.2f}/s), {errors[0]} errors; now in process")
    in_process = _in_process_rate(index_dir, photos, requests, top)
    lat = np.array(latencies)
    return {
        "queries_per_second": round(requests / wall, 3),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "errors": errors[0],
        "in_process_queries_per_second": round(in_process, 3),
        "served_vs_in_process": round(requests / wall / in_process, 3),
        "requests": requests, "clients": clients, "photos": len(before), "added": added_name,
        "seconds": round(wall, 2), "server_startup_s": round(startup, 1), "error_messages": messages,
        "index": os.path.abspath(index_dir), "queries": len(photos),
    }


def _in_process_rate(index_dir, photos, requests: int, top: int) -> float:
    """Queries per second of the same queries answered by Engine.search in this process, one after another."""
    from engine import Engine

    with Engine.open(index_dir) as engine:
        engine.search(photos[0][0], top=top)  # not timed: TensorFlow's graph and the kernels
        t0 = time.perf_counter()
        for i in range(requests):
            engine.search(photos[i % len(photos)][0], top=top)
        return requests / (time.perf_counter() - t0)


__all__ = ["bench_serve", "check_answer", "free_port", "start_server", "stop_server", "wait_healthy"]

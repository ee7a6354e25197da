"""`delf serve`: the engine as an HTTP service with a web page.

An ASGI app on FastAPI, served by uvicorn; the endpoints call
``engine.service.Service``. The index is opened once (memory
mapped) and the extractor and calibration are loaded once, at start-up; each
request only decodes its photos, extracts them and searches.

Concurrency: FastAPI runs the (sync) endpoints in a thread pool. Extraction
(TensorFlow) is serialised by a lock; searches read the memory-mapped index
side by side (``index.Index`` loads a new state when a writer commits one);
adds and removals are serialised by a second lock on top of the index's own
writer lock. Verification runs side by side too, unless Numba's threading
layer is the one that cannot be entered from several threads (workqueue):
then it is serialised as well.

Bad input never reaches a traceback: each problem is a 4xx answer
``{"error": "..."}`` that names it. Every request is logged in one line
(method, path, status, milliseconds).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time.
import contextlib
import logging
import mimetypes
import os
import signal
import socket
import sys
import threading
import time

from .service import ApiError, Service

log = logging.getLogger("delf.serve")

WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
DEFAULT_TOP = 5


# ---------------------------------------------------------------- the ASGI app


def create_app(engine, token: str | None = None, db_images: str | None = None, max_upload_mb: float = 20):
    """The FastAPI app over an open ``Engine`` (its extractor is built here if it was not)."""
    from typing import Annotated

    from fastapi import Depends, FastAPI, File, Form, Query, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.security import HTTPBearer
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    svc = Service(engine, token=token, db_images=db_images, max_upload_mb=max_upload_mb)
    engine.extractor  # built once, here, never per request
    app = FastAPI(
        title="delf-engine", version="0.1.0",
        description="Landmark retrieval: search an index with a photo (ranked results, a calibrated confidence, "
                    "match or no match), verify two photos, list, add and remove indexed photos. Errors are "
                    "`{\"error\": \"...\"}`.")
    app.state.service = svc
    bearer = HTTPBearer(auto_error=False, description="the --token the server was started with")

    def writer(credentials=Depends(bearer)) -> None:
        svc.check_token(credentials)

    def error(status: int, message: str, headers=None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return error(exc.status, exc.message, exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        message = {404: f"no such endpoint: {request.method} {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
        return error(exc.status_code, str(message), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ())[1:]) or "request"
            problems.append(f"missing field '{where}'" if e.get("type") == "missing" else f"{where}: {e.get('msg')}")
        return error(422, "; ".join(problems))

    Top = Annotated[int | None, Form(ge=1, description=f"results returned (default {DEFAULT_TOP})")]
    TopQ = Annotated[int | None, Query(alias="top", ge=1, description="the same as the form field")]
    Threshold = Annotated[float | None, Form(ge=0.0, le=1.0, description="match threshold (default: the server's)")]
    ThresholdQ = Annotated[float | None, Query(alias="threshold", ge=0.0, le=1.0)]
    Labels = Annotated[bool | None, Form(description="add predicted_label and label_confidence (default: when "
                                                     "the server has labels)")]
    LabelsQ = Annotated[bool | None, Query(alias="labels")]
    Draw = Annotated[bool, Form(description="also draw the best result's inliers (picture_url; needs --db-images)")]
    DrawQ = Annotated[bool | None, Query(alias="draw")]

    @app.post("/search", summary="Search the index with a photo")
    def search(photo: Annotated[UploadFile, File(description="the query photo")], top: Top = None,
               threshold: Threshold = None, labels: Labels = None, draw: Draw = False, top_q: TopQ = None,
               threshold_q: ThresholdQ = None, labels_q: LabelsQ = None, draw_q: DrawQ = None) -> dict:
        """The answer of `delf search --json` for one query: decision, confidence, threshold and ranked
        results (each with an `image_url` when the server has `--db-images`)."""
        return svc.search(photo, top if top is not None else (top_q or DEFAULT_TOP),
                          threshold if threshold is not None else threshold_q,
                          labels if labels is not None else labels_q, draw or bool(draw_q))

    @app.post("/match", summary="Verify two photos against each other")
    def match(photo1: Annotated[UploadFile, File()], photo2: Annotated[UploadFile, File()]) -> dict:
        """Inliers, unique inliers, the affine model (photo1 pixels to photo2 pixels), the calibrated
        confidence and a link to the picture of the inliers."""
        return svc.match(photo1, photo2)

    @app.get("/match/{pid}.png", summary="Picture of the inliers of a match or search",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def match_picture(pid: str):
        return Response(svc.picture(pid), media_type="image/png")

    @app.get("/photos", summary="The indexed photos")
    def photos() -> dict:
        names = engine.photos
        return {"count": len(names), "photos": names, "images": svc.db_images is not None}

    @app.post("/photos", summary="Add photos to the index", dependencies=[Depends(writer)])
    def add(photo: Annotated[list[UploadFile], File(description="one or more photos; each is indexed under its "
                                                                "file name, sanitised")]) -> dict:
        """Extracts the photos and adds them as one new segment (searches go on meanwhile and see all of
        them or none). Needs `Authorization: Bearer TOKEN` when the server has a token."""
        return svc.add(photo)

    @app.delete("/photos/{name:path}", summary="Remove a photo from the index", dependencies=[Depends(writer)])
    def remove(name: str) -> dict:
        """Searches skip it at once (the image file, if any, stays in --db-images)."""
        return svc.remove(name)

    @app.get("/photos/{name:path}/image", summary="A database photo's image (needs --db-images)",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}})
    def photo_image(name: str, max_side: Annotated[int | None, Query(ge=16, le=4096)] = None):
        """The photo's file, or with `max_side` a JPEG at most that many pixels a side."""
        if max_side:
            return Response(svc.thumbnail(name, max_side), media_type="image/jpeg",
                            headers={"Cache-Control": "max-age=300"})
        path = svc.image_file(name)
        return FileResponse(path, media_type=mimetypes.guess_type(path)[0] or "application/octet-stream")

    @app.get("/health", summary="Liveness and what the server offers")
    def health() -> dict:
        return svc.health()

    @app.get("/stats", summary="Photos, descriptors, index generation, queries served and latency")
    def stats() -> dict:
        return svc.stats()

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(os.path.join(WEB_DIR, "index.html"), headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.add_middleware(Guard, max_body=svc.max_upload_bytes)
    return app


class Guard:
    """ASGI middleware: refuses bodies over the limit (413), answers a crash with a
    JSON 500 (its traceback goes to the log, never to the client), logs one line a request."""

    def __init__(self, app, max_body: int):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [0]

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            body, size = await self._read_body(scope, receive)
            if body is None:
                if size >= 0:
                    await _send_json(send_logged, 413, f"upload of {size / 1048576:.1f} MB is over the limit of "
                                                       f"{self.max_body / 1048576:g} MB (--max-upload-mb)")
                return
            sent = [False]

            async def replay():
                if sent[0]:
                    return await receive()
                sent[0] = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send_logged)
        except Exception as exc:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not status[0]:
                await _send_json(send_logged, 500, f"internal error ({type(exc).__name__}); the server's log "
                                                   "has the details")
        finally:
            log.info("%s %s %d %.1f ms", scope.get("method"), scope.get("path"), status[0],
                     (time.perf_counter() - t0) * 1000)

    async def _read_body(self, scope, receive) -> tuple[bytes | None, int]:
        """(body, size); (None, size) when it is over the limit (read on, up to a bound, so that the
        client reads the 413); (None, -1) when the client went away."""
        declared = -1
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = -1
        if declared > 16 * self.max_body:
            return None, declared
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, -1
            part = message.get("body", b"")
            size += len(part)
            if size <= self.max_body:
                chunks.append(part)
            elif size > 16 * self.max_body:
                return None, size
            if not message.get("more_body", False):
                break
        return (b"".join(chunks), size) if size <= self.max_body else (None, size)


async def _send_json(send, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- running it


def serve(index_dir, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          db_images: str | None = None, max_upload_mb: float = 20, labels=None, calibration=None,
          threshold: float | None = None, say=None) -> int:
    """Open the index, load the extractor and calibration, warm up, and serve
    until Ctrl-C or SIGTERM (then 0). Raises ValueError/FileNotFoundError on
    bad settings or when the address cannot be bound."""
    import uvicorn

    from .demo import sample_photos
    from .engine import Engine

    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    _log_to_stderr()
    if db_images is not None and not os.path.isdir(db_images):
        raise FileNotFoundError(f"{db_images}: no such folder (--db-images)")
    sock = _bind(host, port)
    t0 = time.perf_counter()
    engine = Engine.open(index_dir, calibration=calibration, threshold=threshold, labels=labels)
    try:
        engine.extractor
        # One search before the first request: loads TensorFlow's graph and the compiled kernels.
        engine.search(engine.extractor.extract(sample_photos()[0]), name="warm-up")
        app = create_app(engine, token=token, db_images=db_images, max_upload_mb=max_upload_mb)
        server = _make_server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        bound = sock.getsockname()
        where = f"http://{'[' + bound[0] + ']' if ':' in bound[0] else bound[0]}:{bound[1]}/"
        say(f"delf serve: {index_dir}: {len(engine.photos)} photos, ready in {time.perf_counter() - t0:.1f} s; "
            f"serving {where} (API: {where}docs; Ctrl-C stops it)")
        if token is None and host not in ("127.0.0.1", "localhost", "::1"):
            say("delf serve: warning: no --token: anyone who can reach this address can add and remove photos")
        server.run(sockets=[sock])
        n = app.state.service.counts.get("queries", 0)
        say(f"delf serve: stopped ({server.stopped_by or 'shut down'}); {n} quer{'y' if n == 1 else 'ies'} served")
        return 0
    finally:
        sock.close()
        engine.close()


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _log_to_stderr() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _make_server(config):
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, stopped by SIGINT or SIGTERM without re-raising the signal (exit status 0)."""

        stopped_by: str | None = None

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self._on_signal) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        def _on_signal(self, sig, frame) -> None:
            self.stopped_by = signal.Signals(sig).name
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    return Server(config)


__all__ = ["Guard", "create_app", "serve"]

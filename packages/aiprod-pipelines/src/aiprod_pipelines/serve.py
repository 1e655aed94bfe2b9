"""``aiprod serve``: the pipelines over HTTP (FastAPI + uvicorn), loaded once, jobs queued.

    aiprod serve examples/text_to_video.yaml --port 8000          # http://127.0.0.1:8000/

- ``POST /v1/jobs`` a pipeline document as JSON (the YAML's keys), or ``{"template": "text_to_video",
  "prompt": "..."}`` to start from a YAML named on the command line → ``202 {"id", "status"}``.
  ``"seed"`` may ride along. The server chooses where the output goes (the document's ``output`` only
  gives the extension: ``.mp4``, ``.webm``, ``.gif``, a folder is refused here).
- ``GET /v1/jobs/{id}`` → ``{"id", "status": queued|running|done|failed, "progress": 0..1, "error"}``.
- ``GET /v1/jobs/{id}/output`` → the file; ``GET /v1/templates`` → the documents the server was started with.
- ``GET /openapi.json``, ``GET /docs``: the API; ``GET /``: a page to type a prompt, watch progress, play the clip.

Bad requests get a 4xx with the same one-line messages as ``aiprod run`` (``{"detail": first line,
"errors": [lines]}``). Jobs run one at a time on a worker thread (a GPU serves one at a time); a job that
fails is marked failed with its message and the server carries on. Components named by the documents
are loaded once and kept (keyed by their reference, device and dtype). The server binds 127.0.0.1
unless ``--host`` says otherwise; ``--token`` (or ``AIPROD_SERVE_TOKEN``) requires
``Authorization: Bearer <token>`` on every ``/v1`` route.
"""


import copy
import queue
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from aiprod_core.errors import AiprodError

OUTPUT_EXTENSIONS = (".mp4", ".webm", ".gif", ".wav", ".flac", ".ogg")


@dataclass
class Job:
    id: str
    kind: str
    cfg: Any
    spec: Any
    seed: int
    output: Path
    status: str = "queued"
    progress: float = 0.0
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "pipeline": self.kind, "status": self.status, "progress": round(self.progress, 3),
                "error": self.error, "output": f"/v1/jobs/{self.id}/output" if self.status == "done" else None,
                "created": self.created, "finished": self.finished}


class JobServer:
    """The queue, the worker thread and the component cache, independent of the web framework."""

    def __init__(self, templates: dict[str, dict[str, Any]] | None = None, *, device: str = "auto",
                 dtype: str = "auto", jobs_dir: str | Path | None = None, quiet: bool = True) -> None:
        from aiprod_core.device import pick_device, pick_dtype

        self.templates = templates or {}
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.jobs_dir = Path(jobs_dir) if jobs_dir else Path(tempfile.mkdtemp(prefix="aiprod-serve-"))
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.quiet = quiet
        self.jobs: dict[str, Job] = {}
        self.cache: dict[Any, Any] = {}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="aiprod-serve-worker", daemon=True)
        self._worker.start()

    # -- submission --------------------------------------------------------------------------------------
    def document(self, body: Any) -> tuple[dict[str, Any], int]:
        """The request body → (pipeline document, seed); raises ConfigError with one line a problem."""
        from aiprod_core.errors import ConfigError

        if not isinstance(body, dict):
            raise ConfigError([f"request: expected a JSON object (a pipeline document), got {type(body).__name__}"])
        body = dict(body)
        seed = body.pop("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError([f"request: seed: expected a non-negative integer, got {seed!r}"])
        name = body.pop("template", None)
        if name is not None:
            if name not in self.templates:
                raise ConfigError([f"request: template: unknown {name!r}; known: {', '.join(self.templates) or 'none'}"])
            body = {**copy.deepcopy(self.templates[name]), **body}
        if "recipe" in body:
            raise ConfigError(["request: training recipes are not served; send a pipeline document"])
        return body, seed

    def submit(self, body: Any) -> Job:
        from aiprod_core.errors import ConfigError
        from aiprod_core.pipeline import validate_document

        doc, seed = self.document(body)
        job_id = uuid.uuid4().hex[:12]
        ext = Path(str(doc.get("output", "out.mp4"))).suffix.lower()
        if ext not in OUTPUT_EXTENSIONS:
            raise ConfigError([f"request: output: the server writes files ending in {', '.join(OUTPUT_EXTENSIONS)}, "
                               f"got {str(doc.get('output'))!r}"])
        out = self.jobs_dir / job_id / f"output{ext}"
        if "output" in doc:
            doc["output"] = str(out)
        _, spec, cfg = validate_document(doc, "request", None)
        if not hasattr(cfg, "output"):
            raise ConfigError([f"request: pipeline {spec.name!r} writes no 'output' file; it cannot be served"])
        if getattr(cfg, "prompts", None) is not None:
            raise ConfigError(["request: prompts: one job is one clip; send one job per prompt"])
        job = Job(job_id, spec.name, cfg, spec, seed, out)
        with self._lock:
            self.jobs[job_id] = job
        self._queue.put(job)
        return job

    def preload(self) -> list[str]:
        """Load the components of every template now (text-to-video ones), so the first job is fast."""
        from aiprod_core.pipeline import validate_document

        loaded = []
        for name, doc in self.templates.items():
            doc = dict(doc)
            doc["output"] = str(self.jobs_dir / "preload.mp4")
            _, spec, cfg = validate_document(doc, f"template {name}", None)
            if spec.name == "text-to-video":
                from aiprod_pipelines.text_to_video import load_models

                load_models(cfg, self._context(None))
                loaded.append(name)
        return loaded

    # -- the worker ------------------------------------------------------------------------------------
    def _context(self, job: Job | None):
        from aiprod_core.pipeline import RunContext

        ctx = RunContext(source=Path(f"job {job.id}" if job else "preload"), device=self.device, dtype=self.dtype,
                         seed=job.seed if job else 0, quiet=True, overwrite=True)
        ctx.component_cache = self.cache
        if job is not None:
            steps = int(getattr(job.cfg, "steps", 0) or 0) + (job.cfg.two_stage.steps if getattr(job.cfg, "two_stage", None) else 0)

            def on_step(pipe, i, sigma, kw, job=job, count=[0]):  # noqa: B006 - a counter across both stages
                count[0] += 1
                job.progress = min(0.95, count[0] / max(steps, 1))

            ctx.on_step = on_step
        return ctx

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            job.status = "running"
            try:
                job.output.parent.mkdir(parents=True, exist_ok=True)
                job.spec.load_run()(job.cfg, self._context(job))
                job.status, job.progress = "done", 1.0
            except AiprodError as err:
                job.status, job.error = "failed", " ".join(err.lines())
            except Exception as err:  # noqa: BLE001 - a failing job must not take the server down
                job.status, job.error = "failed", f"internal error: {type(err).__name__}: {err}"
                traceback.print_exc()
            finally:
                job.finished = time.time()

    def close(self) -> None:
        self._queue.put(None)


# -- the web app ------------------------------------------------------------------------------------------------
def create_app(server: JobServer, token: str | None = None):
    """The FastAPI app over a :class:`JobServer` (``pip install 'aiprod-pipelines[serve]'``)."""
    try:
        from fastapi import Depends, FastAPI, HTTPException, Request
        from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    except ImportError:
        raise AiprodError("aiprod serve needs FastAPI and uvicorn: pip install 'aiprod-pipelines[serve]'") from None
    from aiprod_pipelines import __version__

    app = FastAPI(title="AIPROD", version=__version__,
                  description="Generation jobs over the AIPROD pipelines (the documents `aiprod run` takes).")

    def auth(request: Request) -> None:
        if token and request.headers.get("authorization", "") != f"Bearer {token}":
            raise HTTPException(401, "missing or wrong API token (Authorization: Bearer <token>)")

    def problem(status: int, lines: list[str]) -> JSONResponse:
        return JSONResponse({"detail": lines[0] if lines else "bad request", "errors": lines}, status_code=status)

    def get_job(job_id: str) -> Job:
        job = server.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"job {job_id!r} not found")
        return job

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        from importlib.resources import files

        return files("aiprod_pipelines").joinpath("static/serve.html").read_text(encoding="utf-8")

    @app.get("/v1/templates", dependencies=[Depends(auth)])
    def templates() -> dict[str, Any]:
        """The pipeline documents the server was started with (``{"template": name, ...}`` starts from one)."""
        return server.templates

    @app.post("/v1/jobs", status_code=202, dependencies=[Depends(auth)])
    async def submit(request: Request):
        """Queue a job: a pipeline document (JSON), optionally ``template`` + overrides and ``seed``."""
        try:
            body = await request.json()
        except ValueError as err:
            return problem(400, [f"request: not valid JSON ({err})"])
        try:
            job = server.submit(body)
        except AiprodError as err:
            return problem(422, err.lines())
        return JSONResponse(job.as_dict(), status_code=202)

    @app.get("/v1/jobs", dependencies=[Depends(auth)])
    def list_jobs() -> list[dict[str, Any]]:
        return [j.as_dict() for j in server.jobs.values()]

    @app.get("/v1/jobs/{job_id}", dependencies=[Depends(auth)])
    def status(job_id: str) -> dict[str, Any]:
        """Status and progress (0..1) of a job."""
        return get_job(job_id).as_dict()

    @app.get("/v1/jobs/{job_id}/output", dependencies=[Depends(auth)])
    def output(job_id: str):
        """The file the job wrote (once its status is ``done``)."""
        job = get_job(job_id)
        if job.status != "done":
            return problem(409, [f"job {job_id}: {job.status}" + (f": {job.error}" if job.error else ", no output yet")])
        return FileResponse(job.output, filename=f"{job.id}{job.output.suffix}")

    return app


# -- the command ----------------------------------------------------------------------------------------------
@click.command("serve")
@click.argument("templates", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind (0.0.0.0: every interface)")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", envvar="AIPROD_SERVE_TOKEN", default=None,
              help="require 'Authorization: Bearer TOKEN' (or set AIPROD_SERVE_TOKEN)")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--jobs-dir", type=click.Path(file_okay=False), default=None,
              help="where job outputs are written (default: a new temporary folder)")
@click.option("--no-preload", is_flag=True, help="load components on the first job instead of at start")
def serve_command(templates, host, port, token, device, dtype, jobs_dir, no_preload) -> None:
    """Serve the pipelines over HTTP: POST /v1/jobs, GET /v1/jobs/{id}[/output], a page at /.

    TEMPLATES are pipeline YAMLs (e.g. examples/text_to_video.yaml), validated now; a request
    {"template": "text_to_video", "prompt": "..."} starts from one, and their components load at start.
    """
    from aiprod_core.config import load_yaml
    from aiprod_core.errors import ConfigError
    from aiprod_core.pipeline import validate_document

    try:
        import uvicorn
    except ImportError:
        raise AiprodError("aiprod serve needs FastAPI and uvicorn: pip install 'aiprod-pipelines[serve]'") from None
    docs: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for path in templates:
        data = load_yaml(path)
        try:
            validate_document({**data, "output": data.get("output", "x.mp4")}, str(path), None)
        except ConfigError as err:
            problems += err.lines()
        docs[Path(path).stem] = data
    if problems:
        raise ConfigError(problems)
    server = JobServer(docs, device=device, dtype=dtype, jobs_dir=jobs_dir)
    if not no_preload:
        loaded = server.preload()
        if loaded:
            click.echo(f"aiprod serve: loaded the components of {', '.join(loaded)}", err=True)
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        click.echo(f"aiprod serve: warning: listening on {host} without --token", err=True)
    click.echo(f"aiprod serve: http://{host}:{port}/ (jobs in {server.jobs_dir})", err=True)
    try:
        uvicorn.run(create_app(server, token), host=host, port=port, log_level="warning")
    finally:
        server.close()
        if jobs_dir is None:
            shutil.rmtree(server.jobs_dir, ignore_errors=True)

"""`fleet serve`: the controller, with its HTTP API, webhooks and metrics, until SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.common import (
    CacheOpt,
    DirOpt,
    LabOpt,
    QuietOpt,
    StateOpt,
    VerboseOpt,
    app,
    engine_for,
    err,
    fail,
    guard,
    note,
)
from reconciler.errors import UsageError
from reconciler.settings import ServeSettings, load_serve_settings


@app.command()
def serve(
    path: Annotated[
        Path | None,
        typer.Argument(
            metavar="PATH",
            help="A fleet repo working tree to follow (default: the current directory, unless --repo).",
            show_default=False,
        ),
    ] = None,
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo", metavar="PATH_OR_URL", help="Follow a branch of this Git repository (FLEET_REPO)."
        ),
    ] = None,
    branch: Annotated[
        str | None,
        typer.Option(
            "--branch", metavar="BRANCH", help="The branch of --repo to follow (FLEET_BRANCH; default main)."
        ),
    ] = None,
    directory: DirOpt = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="Where the HTTP API, /metrics and the webhooks listen (FLEET_LISTEN;"
            " default 127.0.0.1:8080).",
        ),
    ] = None,
    repository_name: Annotated[
        str | None,
        typer.Option(
            "--repository-name",
            metavar="OWNER/NAME",
            help="The followed repository as push webhooks name it (FLEET_REPOSITORY_NAME), when --repo"
            " is a local path or a mirror's URL.",
        ),
    ] = None,
    poll_interval: Annotated[
        float | None,
        typer.Option(
            "--poll-interval",
            metavar="SECONDS",
            min=1,
            help="Seconds between fetches (FLEET_POLL_INTERVAL; default: fleet.yaml's"
            " controller.pollIntervalSeconds, 60).",
        ),
    ] = None,
    drift_interval: Annotated[
        float | None,
        typer.Option(
            "--drift-interval",
            metavar="SECONDS",
            min=1,
            help="Seconds between drift passes (FLEET_DRIFT_INTERVAL; default: fleet.yaml's"
            " policies.drift.intervalMinutes).",
        ),
    ] = None,
    lab: LabOpt = False,
    state: StateOpt = None,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run the controller: follow the fleet repo (polling, and push webhooks at /webhooks/github and
    /webhooks/gitlab), apply each valid revision's changes, correct drift on the drift schedule,
    and serve /api/v1, /metrics, /healthz and /readyz. Logs are JSON lines on stderr; SIGTERM
    drains (running actions finish within FLEET_GRACE seconds) and exits 0."""

    def settings() -> ServeSettings:
        found = load_serve_settings(
            path=path,
            repo=repo,
            branch=branch,
            directory=directory,
            listen=listen,
            repository_name=repository_name,
            poll_interval=poll_interval,
            drift_interval=drift_interval,
            lab=lab or None,
            state=state,
            cache_dir=cache_dir,
        )
        if found.path is not None and found.repo is not None:
            raise UsageError("give either PATH or --repo, not both")
        if found.directory is not None and found.repo is None:
            raise UsageError("--path needs --repo", hint="for a working tree, give its directory as PATH")
        return found

    # Imported here: the web stack costs every other command's start-up nothing.
    import uvicorn

    from reconciler.controller.api import build_app
    from reconciler.controller.controller import Controller
    from reconciler.controller.follow import Followed
    from reconciler.controller.logs import json_logger
    from reconciler.controller.ui import mount_ui
    from reconciler.controller.webhooks import Followed as PushesOf
    from reconciler.controller.webhooks import StoredDeliveries, webhook_router

    chosen = guard(settings)
    followed = Followed(
        chosen.path or (None if chosen.repo else Path(".")), chosen.repo, chosen.branch, chosen.directory
    )
    if followed.path is not None and not followed.path.is_dir():
        fail(f"no such fleet repo: {followed.path}")
    host, port = chosen.listen_address()
    replica = f"{socket.gethostname()}:{os.getpid()}"
    log = json_logger(replica)

    def run() -> None:
        with engine_for(chosen, store=True) as engine:
            shared = None
            if engine.store.dialect == "postgresql":
                # Several replicas may serve this store: they share the work through its job queue.
                from reconciler.controller.shared import SharedJobs

                shared = SharedJobs(
                    chosen.state_url(),
                    log=log.info,
                    tick_seconds=int(min(chosen.poll_interval or 5, 5)),
                    stalled_after=chosen.stalled_after,
                )
            controller = Controller(
                engine,
                followed,
                poll_interval=chosen.poll_interval,
                drift_interval=chosen.drift_interval,
                log=log.info,
                shared=shared,
            )
            pushed = PushesOf(followed.branch, followed.repo, chosen.repository_name)
            if followed.repo is not None and not pushed.identifiable:
                log.info(
                    "push webhooks can match no repository: --repo is a local path; give --repository-name",
                    repo=followed.repo,
                )
            pushes = webhook_router(
                followed=pushed,
                secrets=lambda forge: chosen.webhook_secret(forge) or controller.webhook_secret(forge),
                on_push=lambda push: controller.request_poll(f"{push.forge} push of {push.commit[:12]}"),
                on_pull_request=controller.request_pull,
                on_result=lambda forge, result: controller.metrics.webhooks.labels(forge, result.value).inc(),
                deliveries=StoredDeliveries(engine.store),
            )
            web = mount_ui(
                build_app(controller, engine.store, controller.api_tokens, routers=[pushes], log=log.info)
            )
            server = uvicorn.Server(
                uvicorn.Config(
                    web, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
                )
            )
            note(f"serving {followed.describe()} on http://{chosen.listen}", "green")
            # uvicorn stops on SIGTERM and SIGINT, then raises the signal again to the handler it
            # found: this one, so that the drain below runs and the process exits 0.
            stopping: list[int] = []
            signal.signal(signal.SIGTERM, lambda number, frame: stopping.append(number))
            controller.start()
            try:
                server.run()
            finally:
                drained = controller.stop(chosen.grace)
                log.info("stopped", drained=drained)
            if not server.started:
                raise UsageError(
                    f"cannot listen on {chosen.listen}", hint="is another process using the port?"
                )

    guard(run)
    err().print("stopped")

"""`platformctl rollouts ...`: start a fleet rollout, watch it wave by wave, pause, resume,
cancel it, retry its failed tenants."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from cli.errors import EXIT_CODES_HELP, CliError, ExitCode
from cli.live import WaveBars, progress_console
from cli.session import OutputOption, Session, session_of
from cli.views import rollout_list_view, rollout_view
from cli.waves import WAVE_SYNTAX, WaveSyntaxError, parse_wave
from tenancy.models import SlaTier
from tenancy.rollouts import FINAL_ROLLOUT_STATUSES, RolloutStatus

rollouts_app = typer.Typer(
    help="Roll a service's new migrations out to the fleet, wave by wave.", no_args_is_help=True
)

RolloutIdArgument = Annotated[str, typer.Argument(metavar="ID", help="The rollout's id.")]
WatchOption = Annotated[
    bool,
    typer.Option(
        "--watch", help="A progress bar per wave until the rollout ends; exit 0 only if SUCCEEDED."
    ),
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0, help="Seconds --watch watches at most.")
]
POLL_INTERVAL = 0.5


def _path(rollout_id: str, action: str = "") -> str:
    return f"/api/rollouts/{rollout_id}" + (f"/{action}" if action else "")


def _waves(values: list[str] | None) -> list[dict[str, Any]] | None:
    if not values:
        return None
    try:
        return [parse_wave(value) for value in values]
    except WaveSyntaxError as exc:
        raise typer.BadParameter(str(exc), param_hint="--wave") from None


def watch(session: Session, rollout: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll the rollout until it ends (SUCCEEDED, FAILED, CANCELLED) or `timeout` seconds
    pass, showing a bar per wave; PAUSED and HALTED wait for an operator and are shown."""
    deadline = time.monotonic() + timeout
    with WaveBars(progress_console()) as bars:
        while True:
            bars.update(rollout)
            if rollout["status"] in FINAL_ROLLOUT_STATUSES or time.monotonic() > deadline:
                return rollout
            time.sleep(POLL_INTERVAL)
            rollout = session.api.get(_path(rollout["id"]))


def _show(
    session: Session, rollout: dict[str, Any], output: OutputOption, watched: bool, timeout: float
) -> None:
    if watched:
        rollout = watch(session, rollout, timeout)
    session.printer(output).show(rollout, rollout_view)
    if watched and rollout["status"] != RolloutStatus.SUCCEEDED:
        ended = rollout["status"] in FINAL_ROLLOUT_STATUSES
        raise CliError(
            ExitCode.CHECK_FAILED,
            f"rollout {rollout['id']} "
            + (f"ended {rollout['status']}" if ended else f"is still {rollout['status']}")
            + (f": {rollout['statusReason']}" if rollout.get("statusReason") else ""),
        )


@rollouts_app.command(
    "start",
    epilog=f"--wave {WAVE_SYNTAX}, repeated, in order. Examples: "
    "--wave canary:size=1 --wave basic:tier=BASIC --wave rest; "
    "--wave pilots:tenants=acme+globex. Keys: size (the first N matching tenants), tier and "
    "tenants (values joined with +). Without --wave: one wave named 'all'.\n\n" + EXIT_CODES_HELP,
)
def start(
    ctx: typer.Context,
    service: Annotated[
        list[str] | None,
        typer.Option(
            "--service",
            metavar="NAME",
            help="A service to roll out (repeat for "
            "more, in order; default: every configured service).",
        ),
    ] = None,
    wave: Annotated[
        list[str] | None,
        typer.Option("--wave", metavar="SPEC", help=f"A wave: {WAVE_SYNTAX} (repeatable)."),
    ] = None,
    tier: Annotated[
        list[SlaTier] | None,
        typer.Option(
            "--tier", case_sensitive=False, help="Select only tenants of this tier (repeatable)."
        ),
    ] = None,
    tenant: Annotated[
        list[str] | None,
        typer.Option("--tenant", metavar="ID", help="Select only these tenants (repeatable)."),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", min=1, max=256, help="Calls in flight at once."),
    ] = None,
    max_failure_ratio: Annotated[
        float | None,
        typer.Option(
            "--max-failure-ratio", min=0, max=1, help="A wave failing more than this halts it."
        ),
    ] = None,
    pause_after_each_wave: Annotated[
        bool,
        typer.Option("--pause-after-each-wave", help="Wait for resume after each wave."),
    ] = False,
    watch_it: WatchOption = False,
    timeout: TimeoutOption = 3600,
    output: OutputOption = None,
) -> None:
    """Start a rollout (POST /api/rollouts): ACTIVE tenants, chosen now, wave by wave."""
    session = session_of(ctx)
    selector: dict[str, Any] = {}
    if tier:
        selector["slaTier"] = [t.value for t in tier]
    if tenant:
        selector["tenantIds"] = tenant
    body = {
        "services": service or None,
        "selector": selector,
        "waves": _waves(wave),
        "concurrency": concurrency,
        "maxFailureRatio": max_failure_ratio,
        "pauseAfterEachWave": pause_after_each_wave,
    }
    rollout = session.api.post("/api/rollouts", {k: v for k, v in body.items() if v is not None})
    _show(session, rollout, output, watch_it, timeout)


@rollouts_app.command("status", epilog=EXIT_CODES_HELP)
def status(
    ctx: typer.Context,
    rollout_id: RolloutIdArgument,
    watch_it: WatchOption = False,
    timeout: TimeoutOption = 3600,
    output: OutputOption = None,
) -> None:
    """Show a rollout: status, counts per wave, failures (GET /api/rollouts/ID)."""
    session = session_of(ctx)
    _show(session, session.api.get(_path(rollout_id)), output, watch_it, timeout)


@rollouts_app.command("list", epilog=EXIT_CODES_HELP)
def list_rollouts(
    ctx: typer.Context,
    status: Annotated[
        RolloutStatus | None,
        typer.Option("--status", case_sensitive=False, help="Only this status."),
    ] = None,
    output: OutputOption = None,
) -> None:
    """List the newest 100 rollouts (GET /api/rollouts)."""
    session = session_of(ctx)
    rollouts = session.api.get("/api/rollouts", status=status.value if status else None)
    session.printer(output).show(rollouts, rollout_list_view)


def _action(verb: str, doc: str) -> None:
    """Register `rollouts VERB ID`: POST /api/rollouts/ID/VERB."""

    def command(
        ctx: typer.Context, rollout_id: RolloutIdArgument, output: OutputOption = None
    ) -> None:
        session = session_of(ctx)
        session.printer(output).show(session.api.post(_path(rollout_id, verb)), rollout_view)

    command.__doc__ = doc
    rollouts_app.command(verb, epilog=EXIT_CODES_HELP)(command)


_action("pause", "Let the calls in flight finish, start no new ones (409 unless RUNNING).")
_action("resume", "Go on with the next tenant (409 unless PAUSED or HALTED).")
_action("cancel", "Stop after the calls in flight; the rest stay pending (409 once ended).")
_action(
    "retry-failed",
    "Run the failed tenants again as a new pass of the rollout (409 unless it ended FAILED).",
)

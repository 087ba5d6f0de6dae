"""`heron`: serve, database, keys, API access, users and groups, for operators and scripts.
Every command uses the same HERON_DATABASE_URL as the server."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from heron.bootstrap import prepare
from heron.config import get_settings
from heron.errors import HeronError, InvalidInput
from heron.observability import configure_logging
from heron.runtime.background import fast_event_loop
from heron.tenancy import api_users, groups, users
from heron.tenancy.access import SYSTEM

app = typer.Typer(help="Heron: an open, self-hostable LPWAN device cloud.", no_args_is_help=True)
db_app = typer.Typer(help="Database: migrations and backups.", no_args_is_help=True)
keys_app = typer.Typer(help="Key-encryption keys.", no_args_is_help=True)
api_access_app = typer.Typer(help="API access (API users).", no_args_is_help=True)
users_app = typer.Typer(help="Users.", no_args_is_help=True)
groups_app = typer.Typer(help="Groups.", no_args_is_help=True)
devices_app = typer.Typer(help="Devices.", no_args_is_help=True)
registration_token_app = typer.Typer(
    help="Registration tokens (the Senet onboarding second factor).", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(api_access_app, name="api-access")
app.add_typer(users_app, name="users")
app.add_typer(groups_app, name="groups")
app.add_typer(devices_app, name="devices")
app.add_typer(registration_token_app, name="registration-token")
simulate_app = typer.Typer(help="Simulated radio networks, sending to a running Heron.", no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")

# Messages go to stderr, so --json output on stdout stays parseable. Every command prepares with
# the default announce_password=True: whichever command first meets an empty database creates the
# administrator, and a generated password nobody is shown would be lost for good.
console = Console(stderr=True)


def _fail(exc: HeronError) -> None:
    console.print(f"[red]error:[/red] {exc.message}")
    raise typer.Exit(2)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default HERON_HTTP_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default HERON_HTTP_PORT")] = None,
    workers: Annotated[int | None, typer.Option(help="default HERON_WORKERS")] = None,
) -> None:
    """Apply migrations, then serve the HTTP API and GUI (with the uplink writer and the
    delivery worker in processes of their own, restarted if they die: docs/ARCHITECTURE.md,
    "Processes")."""
    from heron.runtime.serve import serve as serve_all

    serve_all(get_settings(), host=host, port=port, workers=workers)


@app.command()
def worker(
    parent_fd: Annotated[int | None, typer.Option(hidden=True, help="stop when this pipe closes")] = None,
    nice: Annotated[int, typer.Option(min=0, max=19, help="lower this process's CPU priority by this")] = 0,
) -> None:
    """Send callbacks and decide downlinks, without the HTTP API (`heron serve` starts one; a
    scaled-out deployment runs as many as it likes)."""
    from heron.runtime import worker as background_worker

    settings = get_settings()
    configure_logging(settings.log_level)
    background_worker.run(settings, parent_fd=parent_fd, niceness=nice)


@app.command("uplink-writer")
def uplink_writer(
    socket: Annotated[Path, typer.Option(help="the Unix socket the API processes store through")],
    parent_fd: Annotated[int | None, typer.Option(hidden=True, help="stop when this pipe closes")] = None,
) -> None:
    """Store the stations' receptions for the API processes (`heron serve` starts one, and
    points its API processes at it with HERON_UPLINK_SOCKET)."""
    from heron.uplink import process as uplink_process

    settings = get_settings()
    configure_logging(settings.log_level)
    uplink_process.run(settings, socket, parent_fd=parent_fd)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations."""
    prepare(get_settings())
    console.print("database is current")


@db_app.command("backup")
def db_backup(file: Path) -> None:
    """Take a consistent online copy of the database into FILE."""
    from heron.db.backup import BackupFailed, backup

    settings = get_settings()
    try:
        backup(settings.resolved_database_url, file)
    except BackupFailed as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"backup written to {file}")


@keys_app.command("rotate")
def keys_rotate(
    new_kek: Annotated[
        str | None, typer.Option(help="base64 of the new 32-byte KEK (required when HERON_KEK is set)")
    ] = None,
) -> None:
    """Generate (or take) a new key-encryption key, re-encrypt every stored secret under it,
    and drop the old keys."""
    from heron.keys import UndecryptableSecret, rotate_all

    settings = get_settings()
    prepared = prepare(settings)
    try:
        count, kid = rotate_all(settings, prepared.db, prepared.keyring, new_kek)
    except (ValueError, UndecryptableSecret) as exc:  # no or malformed --new-kek; a secret under a lost key
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"re-encrypted {count} secrets under key {kid}")
    if settings.kek is not None:
        console.print("set HERON_KEK to the new key before the next start")


@api_access_app.command("create")
def api_access_create(
    group: Annotated[str, typer.Option(help="group id, or 'root'")],
    profile: Annotated[list[str], typer.Option(help="profile id (repeatable), e.g. ADMIN")],
    name: Annotated[str, typer.Option()] = "CLI API access",
    timezone: Annotated[str, typer.Option()] = "UTC",
    device_type: Annotated[
        int | None, typer.Option(help="bind to this LORAWAN device type (the Senet application used without appEui)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Create an API user and print its login, secret and `authorization` header value."""
    prepared = prepare(get_settings())
    try:
        with prepared.db.write() as session:
            g = groups.resolve(session, SYSTEM, group)
            view, secret = api_users.create(
                session,
                SYSTEM,
                group_id=g.id,
                name=name,
                timezone=timezone,
                profile_ids=profile,
                device_type_id=device_type,
            )
            login = str(view.api_user.id)
    except HeronError as exc:
        _fail(exc)
    basic = "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode()
    if as_json:
        print(json.dumps({"login": login, "secret": secret, "authorization": secret, "basic": basic}))
        return
    print(f"login:         {login}")
    print(f"secret:        {secret}   (shown once)")
    print(f"authorization: {secret}")
    print(f"basic:         {basic}")


@registration_token_app.command("create")
def registration_token_create(
    group: Annotated[str, typer.Option(help="group id, or 'root': the token serves applications in it and below")],
    issued_to: Annotated[str | None, typer.Option(help="the person it is issued to (default: your login)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Issue a six-digit registration token: single use, valid 10 minutes (the `token` of the
    Senet `register` call, and of an AppKey change through `activate`)."""
    import getpass

    from heron.registry import registration_tokens

    prepared = prepare(get_settings())
    try:
        with prepared.db.write() as session:
            g = groups.resolve(session, SYSTEM, group)
            issued = registration_tokens.create(
                session, SYSTEM, group_id=g.id, issued_to=issued_to or getpass.getuser()
            )
            out = {
                "token": issued.code,
                "groupId": str(g.id),
                "issuedTo": issued.token.issued_to,
                "expiresAt": issued.expires_at.isoformat(),
            }
    except HeronError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(out))
        return
    print(f"token:      {out['token']}   (single use)")
    print(f"group:      {out['groupId']}")
    print(f"issued to:  {out['issuedTo']}")
    print(f"expires at: {out['expiresAt']}")


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option()],
    first_name: Annotated[str, typer.Option()],
    last_name: Annotated[str, typer.Option()],
    group: Annotated[str, typer.Option(help="group id, or 'root'")] = "root",
    profile: Annotated[list[str] | None, typer.Option(help="profile id (repeatable)")] = None,
    password: Annotated[
        str | None, typer.Option(help="read from stdin when '-'", envvar="HERON_NEW_USER_PASSWORD")
    ] = None,
    timezone: Annotated[str, typer.Option()] = "UTC",
) -> None:
    """Create a user holding PROFILEs on GROUP."""
    prepared = prepare(get_settings())
    if password == "-":  # noqa: S105 - "-" means read stdin
        password = sys.stdin.readline().rstrip("\n")
    try:
        with prepared.db.write() as session:
            g = groups.resolve(session, SYSTEM, group)
            user = users.create(
                session,
                SYSTEM,
                email=email,
                first_name=first_name,
                last_name=last_name,
                timezone=timezone,
                roles=[users.RoleGrant(g.id, tuple(profile or ["DEVICE_MANAGER_R"]))],
                password=password,
            )
            print(user.id)
    except HeronError as exc:
        _fail(exc)


@groups_app.command("list")
def groups_list(
    parent: Annotated[str | None, typer.Option(help="list the subtree of this group id")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List groups in tree order."""
    prepared = prepare(get_settings())
    with prepared.db.read() as session:
        rows = []
        offset = 0
        while True:
            page = groups.list_groups(
                session,
                SYSTEM,
                parent_ids=[int(parent)] if parent else None,
                deep=True,
                limit=100,
                offset=offset,
            )
            rows += page.groups
            if not page.has_more:
                break
            offset += 100
    if as_json:
        print(json.dumps([{"id": str(g.id), "name": g.name, "path": g.path, "level": g.depth} for g in rows]))
        return
    table = Table("id", "name", "type", "timezone")
    for g in rows:
        table.add_row(str(g.id), "  " * g.depth + g.name, str(g.type), g.timezone)
    Console().print(table)


@devices_app.command("export")
def devices_export(
    group: Annotated[str | None, typer.Option(help="group id, or 'root'")] = None,
    deep: Annotated[bool, typer.Option("--deep", help="include the group's subgroups")] = False,
    device_type: Annotated[int | None, typer.Option("--device-type", help="device type id")] = None,
    lifecycle: Annotated[str | None, typer.Option(help="REGISTERED, ACTIVE, DEACTIVATED or DELETED")] = None,
    columns: Annotated[
        str | None, typer.Option(help="comma-separated API field names (default: id, name, state, ...)")
    ] = None,
    sort: Annotated[str, typer.Option(help="id, -id, name, -name, lastCom, -lastCom")] = "id",
    out: Annotated[Path | None, typer.Option(help="CSV file to write (default: stdout)")] = None,
) -> None:
    """Export devices as CSV (the columns and filters of GET /api/v2/devices/export), with a
    progress bar on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from heron.registry import device_queries

    prepared = prepare(get_settings())
    try:
        names = device_queries.parse_columns(columns, "--columns")
        with prepared.db.read() as session:
            group_ids = [groups.resolve(session, SYSTEM, group).id] if group else []
            query = device_queries.parse_filter(
                group_ids=group_ids, deep=deep, device_type_id=device_type, lifecycle=lifecycle
            )
            plan = device_queries.plan(session, SYSTEM, query, sort, with_total=True)
    except HeronError as exc:
        _fail(exc)
    columns_shown = (TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    target = open(out, "wb") if out is not None else sys.stdout.buffer  # noqa: SIM115 - closed below
    try:
        with Progress(*columns_shown, console=console, transient=False) as bar:
            task = bar.add_task("devices", total=plan.matches)
            for block in device_queries.export_csv(prepared.db, plan, names, progress=lambda n: bar.advance(task, n)):
                target.write(block)
    finally:
        if out is not None:
            target.close()
        else:
            target.flush()
    console.print(f"exported {plan.matches} devices" + (f" to {out}" if out is not None else ""))


@devices_app.command("import")
def devices_import(
    file: Annotated[
        Path, typer.Argument(help="CSV or TXT file, one `ID;PAC` per line (an `id;pac` header is optional)")
    ],
    device_type: Annotated[int, typer.Option("--device-type", help="the SIGFOX device type the devices join")],
    prefix: Annotated[str | None, typer.Option(help="device names: prefix + increment")] = None,
    product_certificate: Annotated[str | None, typer.Option("--product-certificate")] = None,
    activable: Annotated[bool, typer.Option("--activable/--not-activable", help="take a token")] = True,
    automatic_renewal: Annotated[
        bool | None, typer.Option("--automatic-renewal/--no-automatic-renewal", help="default: the device type's")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the job's result as JSON on stdout")] = False,
) -> None:
    """New series from a file, as the GUI's New series: one job, run here with a progress bar
    on stderr. Bad lines are reported with their line numbers and the others registered.
    Exit status: 0 all registered, 3 some lines failed, 1 the job failed, 2 bad input (nothing
    submitted)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from heron.jobs import engine
    from heron.jobs.models import Job
    from heron.registry import bulk_jobs, series_input
    from heron.runtime.job_kinds import register_job_kinds

    register_job_kinds()  # this command runs its job itself
    prepared = prepare(get_settings())
    try:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise InvalidInput.field("file", f"cannot be read: {exc.strerror}") from None
        rows = series_input.new_series(series_input.decode(data))
        with prepared.db.write() as session:
            job = bulk_jobs.submit_create(
                session,
                SYSTEM,
                prepared.keyring,
                device_type_id=device_type,
                rows=rows,
                prefix=prefix,
                product_certificate=product_certificate,
                activable=activable,
                automatic_renewal=automatic_renewal,
            )
            job_id, req_id, total = job.id, job.req_id, job.total
    except HeronError as exc:
        _fail(exc)
    runner = engine.JobRunner(prepared.db, keyring=prepared.keyring, idle_poll=0.05)
    runner.start()  # a running server may take the job instead: either way it runs once
    columns_shown = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns_shown, console=console, transient=False) as bar:
            task = bar.add_task("devices", total=total)
            while True:
                with prepared.db.read() as session:
                    current = session.get(Job, job_id)
                    assert current is not None
                    bar.update(task, completed=current.processed)
                    if current.state in engine.FINISHED:
                        rep = engine.report(session, current)
                        break
                time.sleep(0.1)
    finally:
        runner.stop()
    success, failed = rep.stats.get(bulk_jobs.SUCCESS, 0), rep.stats.get(bulk_jobs.ERRORS, 0)
    if as_json:
        errors = [{"entity": entity, "message": message} for entity, message in rep.entries]
        out = {"jobId": req_id, "state": rep.job.state, "total": total, "success": success, "errors": errors}
        print(json.dumps(out))
    else:
        for entity, message in rep.entries[:20]:
            console.print(f"  {entity or '-'}: {message}", markup=False)
        if len(rep.entries) > 20:
            console.print(f"  ... and {len(rep.entries) - 20} more (GET /api/v2/jobs/{req_id})")
    console.print(f"job {req_id} {rep.job.state}: {success} registered, {failed} failed")
    if rep.job.state != "DONE_SUC":
        raise typer.Exit(1)
    if failed:
        raise typer.Exit(3)


@simulate_app.command("sigfox")
def simulate_sigfox(
    devices: Annotated[int, typer.Option(min=1, max=100_000, help="number of simulated devices")],
    rate: Annotated[float, typer.Option(min=0.01, help="frames per second (at most)")],
    stations: Annotated[
        int | None, typer.Option(min=1, max=100, help="stations hearing each frame: 1 to K (default: all, or 3)")
    ] = None,
    duration: Annotated[float, typer.Option(min=0.1, help="seconds (Ctrl-C stops earlier)")] = 10.0,
    url: Annotated[str, typer.Option(help="the Heron to send to")] = "http://127.0.0.1:8000",
    register: Annotated[
        bool, typer.Option("--register", help="create the stations and register the devices first")
    ] = False,
    device_type: Annotated[str | None, typer.Option("--device-type", help="device type id (with --register)")] = None,
    group: Annotated[str | None, typer.Option(help="group id for the stations (with --register)")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="HERON_API_KEY", help="API key (with --register)")
    ] = None,
    station_secret: Annotated[
        list[str] | None, typer.Option("--station-secret", help="ID:SECRET of an existing station (repeatable)")
    ] = None,
    first_device: Annotated[str, typer.Option("--first-device", help="hex id of the first device")] = "5100000",
    first_station: Annotated[
        str, typer.Option("--first-station", help="hex id of the first station (with --register)")
    ] = "5E000",
    clients: Annotated[int, typer.Option(min=1, max=200, help="concurrent requests per station")] = 4,
    batch: Annotated[int, typer.Option(min=1, max=1000, help="receptions per request, at most")] = 20,
    first_seq: Annotated[
        int | None, typer.Option("--first-seq", min=0, max=4095, help="first sequence number (default: random)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="random seed, for a repeatable run")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON on stdout")] = False,
) -> None:
    """Devices sending frames, heard by base stations that post their receptions to
    POST /ingest/sigfox, paced to RATE frames/s for DURATION seconds. Exit status: 0 every
    request accepted, 1 some failed (or the set-up did), 2 bad arguments."""
    import asyncio
    import signal

    import httpx

    from heron.network.sigfox import simulator as sim

    try:
        first = int(first_device.removeprefix("0x"), 16)
        ids = sim.device_ids(first, devices)
        int(first_station, 16)
        given = [sim.StationCredential.parse(s) for s in station_secret or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if register and (device_type is None or api_key is None or (group is None and not given)):
        raise typer.BadParameter("--register needs --device-type, --api-key and --group (or --station-secret)")
    if not register and not given:
        raise typer.BadParameter("give --station-secret ID:SECRET (repeatable), or --register to create stations")
    if given and stations is not None and stations > len(given):
        raise typer.BadParameter(f"--stations {stations} but only {len(given)} --station-secret given")

    async def main() -> sim.Stats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        creds = list(given)
        if register:
            assert api_key is not None and device_type is not None
            headers = {"authorization": api_key}
            async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=60) as http:
                if not creds:
                    count = stations or 3
                    idents = [f"{int(first_station, 16) + i:X}" for i in range(count)]
                    assert group is not None
                    creds = await sim.create_stations(http, group, idents)
                    console.print("stations: " + " ".join(f"{c.id}:{c.secret}" for c in creds), markup=False)
                done = await sim.register_devices(http, device_type, ids)
            console.print(
                f"devices {ids[0]}..{ids[-1]}: {done.registered} registered, {done.existing} already there"
                f" (job {done.job_id})"
            )
            if done.errors:
                shown = "; ".join(done.errors[:5])
                raise sim.SimulationError(f"{len(done.errors)} devices not registered: {shown}")
        k = stations or len(creds)
        plan = sim.Plan(
            url=url,
            stations=creds,
            devices=ids,
            rate=rate,
            duration=duration,
            heard_by=(1, k),
            clients_per_station=clients,
            batch=batch,
            first_seq=first_seq,
            seed=seed,
        )
        return await sim.run(plan, stop)

    try:
        with asyncio.Runner(loop_factory=fast_event_loop()) as runner:
            stats = runner.run(main())
    except (sim.SimulationError, httpx.HTTPError) as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True)
        raise typer.Exit(1) from None
    figures = stats.as_dict()
    if as_json:
        print(json.dumps(figures))
    else:
        table = Table("", "", title="heron simulate sigfox", show_header=False)
        latency = figures["latencyMs"]
        for label, value in (
            ("frames sent", f"{stats.frames:,}"),
            ("receptions", f"{stats.receptions:,}"),
            ("requests", f"{stats.requests:,}"),
            ("errors", f"{stats.errors:,}"),
            ("skipped (fell behind the rate)", f"{stats.skipped_frames:,}"),
            ("achieved rate", f"{stats.frames_per_second:,.1f} frames/s over {stats.elapsed:.1f} s"),
            ("latency p50 / p99", f"{latency['p50']} ms / {latency['p99']} ms"),
        ):
            table.add_row(label, value)
        Console().print(table)
        for sample in stats.error_samples:
            console.print(f"  {sample}", markup=False)
    if stats.errors:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()

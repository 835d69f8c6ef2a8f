"""The `gis` command. Every failure the user can cause ends in one readable line and a non-zero exit."""

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from gis.db.cluster import Cluster, database_url
from gis.db.migrate import migrate
from gis.errors import GisError
from gis.layers import LayerRegistry, RasterSpec, load_registry
from gis.refresh.runner import RefreshRequest, run_refresh
from gis.settings import Settings

if TYPE_CHECKING:
    from gis.security.audit import AuditEntry
    from gis.security.policy import Policy
    from gis.security.settings import AuthSettings


DB_PASSWORD_ENV = "GIS_DB_USER_PASSWORD"


def _registry(settings: Settings) -> LayerRegistry:
    return load_registry(settings.layers_dir, settings.styles_dir)


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "grant":
        return cmd_db_grant(args, settings)
    if args.action in ("replica", "promote"):
        return cmd_db_replica(args, settings)
    if args.rest:
        raise GisError(f"db {args.action}: unexpected arguments {' '.join(args.rest)}")
    if settings.database_url and args.action != "url":
        print(f"GIS_DATABASE_URL is set: using that database, no embedded cluster to {args.action}")
        return 0
    if args.action == "url":
        print(database_url(settings))
        return 0
    cluster = Cluster(settings)
    actions: dict[str, Callable[[], str]] = {
        "start": cluster.start,
        "stop": cluster.stop,
        "status": lambda: cluster.status().describe(),
    }
    print(actions[args.action]())
    return 0 if args.action != "status" or cluster.status().running else 3


def cmd_db_replica(args: argparse.Namespace, settings: Settings) -> int:
    """gis db replica create NAME --port P | list | start NAME | stop NAME | drop NAME | url [NAME...];
    gis db promote NAME. Standbys of the embedded cluster (gis.db.replicas)."""
    from gis.db.replicas import Replicas, read_url

    if settings.database_url:
        raise GisError(f"db {args.action}: GIS_DATABASE_URL is set; replicas of that server are its operators' "
                       "(docs/deployment.md), these commands act on the embedded cluster's")
    replicas = Replicas(settings)
    words = list(args.rest)
    if args.action == "promote":
        if len(words) != 1:
            raise GisError("db promote: give the replica's NAME")
        print(replicas.promote(words[0]))
        return 0
    verb = words.pop(0) if words else "list"
    if verb == "list":
        found = replicas.list()
        for status in found:
            print(status.describe())
        if not found:
            print("no replicas ('gis db replica create NAME --port P')")
        return 0
    if verb == "url":
        print(read_url(settings, words or None))
        return 0
    if verb not in ("create", "start", "stop", "drop") or len(words) != 1:
        raise GisError("db replica: create NAME --port P | list | start NAME | stop NAME | drop NAME | url [NAME...]")
    name = words[0]
    if verb == "create":
        if not args.port:
            raise GisError("db replica create: give --port P (a free port for the standby)")
        print(replicas.create(name, args.port).describe())
    else:
        print({"start": replicas.start, "stop": replicas.stop, "drop": replicas.drop}[verb](name))
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from gis.security import audit, db_roles

    registry = _registry(settings)
    _, policy = _policy(settings)
    regranted: list[str] = []

    def regrant(conn: psycopg.Connection) -> None:  # in the tables' transaction: no new column is readable ungranted
        plans = db_roles.reapply_if_granted(conn, policy, registry, settings.city_extent)
        if plans:
            regranted.extend(p.name for p in plans)
            audit.record(conn, _admin_entry("db-grant", {"after": "migrate", "roles": regranted}))

    with psycopg.connect(database_url(settings)) as conn:
        applied = migrate(conn, registry, after_tables=regrant)
    print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}; {len(registry)} layers' tables ensured")
    if regranted:
        print(f"database roles' grants re-applied: {', '.join(regranted)}")
    return 0


def cmd_db_grant(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from gis.security import audit, db_roles

    if not args.user and (args.role or args.claim or args.password_stdin or args.reset_password or args.remove):
        raise GisError("db grant: --role, --claim, --password-stdin, --reset-password and --remove go with --user")
    if args.user and not args.role and not args.remove:
        raise GisError("db grant: --user needs --role ROLE (or --remove)")
    claims = _claims(args.claim, "db grant")
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else os.environ.get(DB_PASSWORD_ENV)
    if password is not None and len(password) < 12:
        raise GisError("db grant: a password needs at least 12 characters")
    registry = _registry(settings)
    _, policy = _policy(settings)
    user = None
    with psycopg.connect(database_url(settings)) as conn, conn.transaction():
        plans = db_roles.apply(conn, policy, registry, settings.city_extent)
        if args.user and args.remove:
            db_roles.remove_user(conn, args.user)
        elif args.user:
            user = db_roles.grant_user(conn, policy, args.user, args.role, claims, password, args.reset_password)
        audit.record(conn, _admin_entry("db-grant", {
            "roles": [p.name for p in plans], "user": args.user, "user_role": args.role, "claims": sorted(claims),
            "removed": bool(args.remove)}))
    for group in plans:
        print(group.describe())
    if args.remove:
        print(f"login role {args.user}: no group, no claims, cannot log in")
    if user is not None:
        print(user.describe())
        if user.password:
            print("password, shown once, store it now:")
            print(user.password)
    return 0


def cmd_refresh(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    if args.watch:
        return _watch(args, settings, registry)
    if args.all == bool(args.layers):
        raise GisError("name the layers to refresh, or --all")
    if args.source and (args.all or len(args.layers) != 1):
        raise GisError("--source goes with exactly one layer")
    specs = registry.specs() if args.all else [registry.get_layer(name) for name in args.layers
                                               if name not in registry.rasters]
    rasters = registry.rasters.values() if args.all else [registry.rasters[n] for n in args.layers
                                                          if n in registry.rasters]
    url = database_url(settings)
    failures = _refresh_rasters(url, rasters, args, settings)
    for spec in specs:
        request = RefreshRequest(
            spec=spec,
            source_path=Path(args.source) if args.source else settings.samples_dir / spec.source.path,
            city_extent=settings.city_extent,
            rejects_dir=settings.rejects_dir,
            force=args.force,
            progress=not args.quiet,
            cut_at=_cut_at(args.cut_at),
        )
        try:
            print(run_refresh(url, request).summary(), flush=True)
        except GisError as exc:
            failures += 1
            print(f"gis: refresh {spec.id} failed: {exc}", file=sys.stderr, flush=True)
    return 1 if failures else 0


def _watch(args: argparse.Namespace, settings: Settings, registry: LayerRegistry) -> int:
    """Deliveries dropped into DIR/<layer>/ (gis/deliveries/watch.py), one line each."""
    from gis.deliveries.watch import watch

    if args.layers or args.all or args.source:
        raise GisError("--watch takes no layers, --all or --source: the folder names the layer")

    def report(outcome: dict[str, object]) -> None:
        summary = outcome.get("summary") or outcome.get("message")
        print(f"{outcome['layer']}: {outcome['status']}: {summary} ({outcome['file']})", flush=True)

    return 1 if watch(database_url(settings), registry, Path(args.watch), settings.city_extent,
                      settings.rejects_dir, report, once=args.once, scratch_dir=settings.temp_dir) else 0


def _cut_at(value: str | None) -> datetime | None:
    """--cut-at: an ISO 8601 time; without an offset it is Beijing time, as the departments write it."""
    from gis.refresh.normalise import LOCAL_TIME

    if value is None:
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise GisError(f"--cut-at: '{value[:40]}' is not an ISO 8601 time (e.g. 2026-12-01T18:00+08:00)") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=LOCAL_TIME)


def _refresh_rasters(url: str, specs: Iterable[RasterSpec], args: argparse.Namespace, settings: Settings) -> int:
    """Raster layers (layers/rasters/): validate, reproject, write the next COG version. Returns the failures."""
    from gis.rasters.refresh import RasterRefreshRequest, run_raster_refresh

    failures = 0
    for spec in specs:
        source = Path(args.source) if args.source else settings.samples_dir / spec.source.path
        request = RasterRefreshRequest(spec, source, settings.city_extent, settings.rasters_dir, force=args.force)
        try:
            print(run_raster_refresh(url, request).summary(), flush=True)
        except GisError as exc:
            failures += 1
            print(f"gis: refresh {spec.id} failed: {exc}", file=sys.stderr, flush=True)
    return failures


def cmd_styles(args: argparse.Namespace, settings: Settings) -> int:
    from gis.styles import publish_styles

    registry = _registry(settings)
    with psycopg.connect(database_url(settings)) as conn:
        changed = publish_styles(conn, registry, settings.styles_dir)
    print(f"styles published: {changed} of {len(registry)} layers' default styles written or updated")
    return 0


def cmd_tiles(args: argparse.Namespace, settings: Settings) -> int:
    """Bring the layers' generalised tile copies to their current version now (the workers do it in the background)."""
    from gis import tiles, tiles_generalised

    registry = _registry(settings)
    unknown = [name for name in args.layers if name not in registry]
    if unknown:
        print(f"tiles: no such layer: {', '.join(unknown)}", file=sys.stderr)
        return 2
    for spec in (registry[name] for name in args.layers or list(registry)):
        if tiles_generalised.has_copy(spec):
            version = tiles_generalised.catch_up(database_url(settings), spec,
                                                 tiles.drawn_fields(spec, settings.styles_dir))
            print(f"{spec.id}: {'not loaded' if version is None else f'generalised copy at version {version}'}")
    return 0


def cmd_layers(args: argparse.Namespace, settings: Settings) -> int:
    from gis.rasters import versions

    registry = _registry(settings)
    with psycopg.connect(database_url(settings)) as conn:
        stats: dict[str, int] = dict(conn.execute(
            "SELECT layer_id, row_count FROM ops.layer_stats").fetchall())
        current = {v.layer_id: v for v in map(versions.from_row, conn.execute(versions.CURRENT_SQL).fetchall())}
    print(f"{'layer':<24} {'domain':<12} {'geometry':<16} {'access':<11} {'rows':>9}")
    for spec in registry.values():
        rows = stats.get(spec.id)
        print(f"{spec.id:<24} {spec.domain.value:<12} {spec.geometry.value:<16} {spec.access.value:<11} "
              f"{rows if rows is not None else 'not loaded':>9}")
    for raster in registry.rasters.values():
        version = current.get(raster.id)
        size = f"{version.width}x{version.height}x{version.bands} v{version.version_id}" if version else "not loaded"
        print(f"{raster.id:<24} {raster.domain.value:<12} {'raster':<16} {raster.access.value:<11} {size:>9}")
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from gis.security import db_read_audit

    log_file = Path(args.log) if args.log else db_read_audit.log_file_of(settings)
    if log_file is None:
        raise GisError("audit import-db-log: give --log (or GIS_DB_LOG_FILE): the database is not the embedded "
                       "cluster, whose log is known")
    if not log_file.is_file():
        raise GisError(f"audit import-db-log: no server log at {log_file}")
    _auth, policy = _policy(settings)
    with psycopg.connect(database_url(settings), autocommit=True) as conn:
        done = db_read_audit.import_direct_reads(conn, log_file, _registry(settings), policy)
    print(f"{log_file}: {done.statements} new statements, {done.reads} direct reads of non-public layers audited")
    return 0


def cmd_ops(args: argparse.Namespace, settings: Settings) -> int:
    """gis ops prune: retention of the audit log and the readings (monthly partitions), of synchronous process
    jobs and of the bytes of finished deliveries."""
    from gis.db.retention import prune

    with psycopg.connect(database_url(settings)) as conn:
        print(prune(conn, settings, registry=_registry(settings)).summary())
    return 0


def cmd_settings_doc(args: argparse.Namespace, settings: Settings) -> int:
    """docs/configuration.md and docs/gis.env.example from the settings classes (gis.settings_reference)."""
    from gis import settings_reference

    root = Path(args.root)
    if args.write:
        for path in settings_reference.write(root):
            print(f"written: {path}")
        return 0
    if args.check:
        stale = settings_reference.stale(root)
        if stale:
            raise GisError(f"out of date: {', '.join(map(str, stale))} ('gis settings-doc --write')")
        print("docs/configuration.md and docs/gis.env.example are current")
        return 0
    print(settings_reference.render_markdown())
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """uvicorn with N workers (a dead one is replaced and its death logged), proxy headers believed only from
    GIS_SERVE_FORWARDED_ALLOW_IPS (services.common.serving does it, so any ASGI server gets the same), Prometheus
    multiprocess mode when there is more than one worker."""
    import os
    import shutil
    import tempfile

    import uvicorn  # the service is optional for every other command

    from gis.settings import ServeSettings

    serve = ServeSettings()
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or serve.workers
    # Every value the workers need travels in the environment: they build their app from it (services.asgi).
    os.environ["GIS_HOST"], os.environ["GIS_PORT"] = host, str(port)
    if args.root_path is not None:
        os.environ["GIS_SERVE_ROOT_PATH"] = args.root_path
    from gis import serve_workers

    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="gis-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    elif os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the operator's: what a previous run left is stale
        serve_workers.clear_stale_files(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    print(f"serving on http://{host}:{port}{os.environ.get('GIS_SERVE_ROOT_PATH', serve.root_path)}/ "
          f"({workers} worker(s))", flush=True)
    config = uvicorn.Config("services.asgi:app_from_environment", factory=True, host=host, port=port,
                            workers=workers, log_level="info", access_log=False, proxy_headers=False,
                            server_header=False, http="gis.http_protocol:HttpToolsOneWrite")  # one write a response
    try:
        if workers > 1:
            serve_workers.run(config, os.environ["PROMETHEUS_MULTIPROC_DIR"])
        else:
            uvicorn.Server(config).run()
    except KeyboardInterrupt:
        pass
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import importlib
    import logging

    from gis.jobs.settings import JobSettings
    from gis.security.settings import AuthSettings

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    jobs = JobSettings(**({"concurrency": args.concurrency} if args.concurrency else {}))
    # the processes live in the service package; like `gis serve`, this command is its entry point
    runner = importlib.import_module("services.processes.job_runner")
    return int(runner.run_worker(settings, jobs, AuthSettings()))


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
    """gis deploy render VALUES.yml --out DIR: deploy/'s templates filled in with one deployment's values."""
    from gis.config_files import read_yaml
    from gis.stack import deploy_files

    deploy_dir = Path(__file__).resolve().parent.parent / "deploy"
    for path in deploy_files.render_all(deploy_dir, read_yaml(Path(args.values), "deployment values"),
                                        Path(args.out)):
        print(f"written: {path}")
    return 0


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from gis.stack.topology import Plan, Stack, migrate_primary, port_free

    if settings.database_url:
        raise GisError("stack: GIS_DATABASE_URL is set; the local stack runs the embedded cluster and its standbys")
    stack = Stack(settings, Path.cwd())
    if args.action == "up":
        lb = args.port
        nodes = tuple(range(lb + 1, lb + 1 + args.nodes))
        standbys = tuple(range(settings.cluster_port + 1, settings.cluster_port + 1 + args.replicas))
        running = {s.port for s in stack.status() if s.pid}
        busy = [p for p in (lb, *nodes) if p not in running and not port_free(p)]
        if busy:
            raise GisError(f"stack up: port(s) {', '.join(map(str, busy))} in use; choose another --port")
        stack.primary.start()
        print(f"primary: migrations {migrate_primary(settings)}", flush=True)
        stack.up(Plan(lb, nodes, standbys, args.workers, args.node_workers))
    elif args.action == "down":
        for line in stack.down():
            print(line)
        return 0
    elif args.action in ("stop", "start"):
        if not args.name:
            raise GisError(f"stack {args.action}: give a member's NAME (gis stack status lists them)")
        print(getattr(stack, args.action)(args.name))
        return 0
    url = stack.url()
    if url is None:
        print("no stack here ('gis stack up')")
        return 3
    print(f"load balancer: {url}/")
    print(f"{'name':<10} {'kind':<8} {'pid':>8}  {'state':<22} address")
    for status in stack.status():
        print(status.line())
    return 0


def _policy(settings: Settings) -> "tuple[AuthSettings, Policy]":
    from gis.security.policy import load_policy, policy_path
    from gis.security.settings import AuthSettings

    auth = AuthSettings()
    return auth, load_policy(policy_path(settings.layers_dir, auth.policy_file), _registry(settings))


def _admin_entry(action: str, detail: dict[str, object]) -> "AuditEntry":
    import getpass

    from gis.security.audit import AuditEntry

    return AuditEntry(f"cli:{getpass.getuser()}", "admin", "cli", None, f"admin:{action}", query=detail)


def _claims(items: list[str] | None, command: str) -> dict[str, str]:
    claims: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise GisError(f"{command}: --claim takes NAME=VALUE, not '{item}'")
        claims[name] = value
    return claims


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    from gis.security import audit, keys

    auth, policy = _policy(settings)
    with psycopg.connect(database_url(settings)) as conn:
        if args.action == "create":
            if not args.role or not args.name:
                raise GisError("keys create: give --role and --name")
            if policy.role(args.role) is None:
                raise GisError(f"keys create: no role '{args.role}' in the access policy "
                               f"({', '.join(sorted(policy.roles))})")
            claims = _claims(args.claim, "keys create")
            record, token = keys.create_key(conn, args.name, args.role, auth.pepper.get_secret_value(), claims)
            audit.record(conn, _admin_entry("key-create", {"key_id": record.key_id, "role": record.role}))
            print(f"key {record.key_id} ({record.role}) for {record.name}; shown once, store it now:")
            print(token)
        elif args.action == "list":
            print(f"{'key id':<10} {'role':<18} {'created':<20} {'revoked':<20} name")
            for record in keys.list_keys(conn):
                revoked = f"{record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked_at else "-"
                print(f"{record.key_id:<10} {record.role:<18} {record.created_at:%Y-%m-%d %H:%M}{'':<4} "
                      f"{revoked:<20} {record.name}")
        else:
            if not args.key_id:
                raise GisError("keys revoke: give the key id (from 'gis keys list')")
            record = keys.revoke_key(conn, args.key_id)
            audit.record(conn, _admin_entry("key-revoke", {"key_id": record.key_id}))
            print(f"key {record.key_id} revoked (services stop accepting it within "
                  f"{auth.key_cache_seconds:g} s)")
    return 0


def cmd_check_overlap(args: argparse.Namespace, settings: Settings) -> int:
    from gis.analysis import overlap, report
    from gis.analysis.proposal import proposal_from_path
    from gis.analysis.rules import default_rules_path, load_rules

    registry = _registry(settings)
    rules = load_rules(Path(args.rules) if args.rules else default_rules_path(settings.layers_dir), registry)
    if bool(args.file) == bool(args.project):
        raise GisError("check-overlap: give a FILE or --project FID (one of them)")
    with psycopg.connect(database_url(settings)) as conn:
        if args.project:
            proposal = overlap.load_project(conn, rules, args.project)
        else:
            proposal = proposal_from_path(Path(args.file), crs=args.crs, city_extent=settings.city_extent,
                                          proposed_use=args.use)
        found = overlap.check(conn, rules, proposal, as_of=args.datetime, use=args.use,
                              only=args.only.split(",") if args.only else None)
    print(report.to_table(found))
    for path, write in ((args.report, report.html_bytes), (args.json, report.json_bytes),
                        (args.geojson, report.geojson_bytes)):
        if path:
            Path(path).write_bytes(write(found))
            print(f"written: {path}")
    return 3 if args.fail_on_conflict and found.verdict == "conflict" else 0


def cmd_qgis_project(args: argparse.Namespace, settings: Settings) -> int:
    from gis.qgis_project import ProjectRequest, Source, make_project

    print(make_project(settings, ProjectRequest(
        Path(args.out), Source(args.source), args.api_key, args.role, args.base_url, args.db_user, args.db_password)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gis", description="Spatio-temporal GIS cloud: database, layers, refresh.")
    sub = parser.add_subparsers(dest="command", required=True)
    db = sub.add_parser("db", help="the embedded PostgreSQL + PostGIS cluster")
    db.add_argument("action", choices=["start", "stop", "status", "url", "grant", "replica", "promote"],
                    help="grant: PostgreSQL roles from the access policy (docs/security.md); "
                         "replica create NAME --port P|list|start NAME|stop NAME|drop NAME|url: streaming "
                         "standbys; promote NAME: a standby becomes the primary")
    db.add_argument("rest", nargs="*", help="replica: the verb and NAME; promote: NAME")
    db.add_argument("--port", type=int, help="replica create: the standby's port")
    db.add_argument("--user", help="grant: a login role to create or update")
    db.add_argument("--role", help="grant: the --user's policy role (one with 'database: true')")
    db.add_argument("--claim", action="append", help="grant: NAME=VALUE for row rules (e.g. jurisdiction=...)")
    db.add_argument("--password-stdin", action="store_true",
                    help=f"grant: read the --user's password from stdin (else ${DB_PASSWORD_ENV}, else generated)")
    db.add_argument("--reset-password", action="store_true", help="grant: a new generated password for --user")
    db.add_argument("--remove", action="store_true", help="grant: --user loses its group, claims and login")
    db.set_defaults(handler=cmd_db)
    sub.add_parser("migrate", help="apply migrations and create layer tables").set_defaults(handler=cmd_migrate)
    refresh = sub.add_parser("refresh", help="load layers from their delivered files, keeping history")
    refresh.add_argument("layers", nargs="*", help="layer ids")
    refresh.add_argument("--all", action="store_true", help="every layer in the registry")
    refresh.add_argument("--source", help="a delivered file to load instead of the layer's sample")
    refresh.add_argument("--force", action="store_true", help="compare rows even if the file is unchanged")
    refresh.add_argument("--quiet", action="store_true", help="no progress bar")
    refresh.add_argument("--watch", metavar="DIR", help="take files dropped into DIR/<layer>/ as deliveries "
                         "(kept with checksum and sender, loaded by the same job; moved to done/ or failed/)")
    refresh.add_argument("--once", action="store_true", help="with --watch: take the files there now, then stop")
    refresh.add_argument("--cut-at", help="when the delivery was cut (ISO 8601; default: the file's modification "
                         "time): features edited later are conflicts, settled by the layer's editing.on_conflict")
    refresh.set_defaults(handler=cmd_refresh)
    styles = sub.add_parser("styles", help="QGIS default styles")
    styles.add_argument("action", choices=["publish"])
    styles.set_defaults(handler=cmd_styles)
    tiles = sub.add_parser("tiles", help="catch the generalised tile copies up with their layers (after an upgrade)")
    tiles.add_argument("layers", nargs="*", help="layer ids (default: every line and polygon layer)")
    tiles.set_defaults(handler=cmd_tiles)
    sub.add_parser("layers", help="every layer with its row count (rasters: size and version)").set_defaults(
        handler=cmd_layers)
    check = sub.add_parser("check-overlap", help="check a proposal file (or a project) against the overlap rules")
    check.add_argument("file", nargs="?", help="GeoPackage, Shapefile (.shp or zipped), GeoJSON or KML")
    check.add_argument("--project", help="the fid of a construction project instead of a file")
    check.add_argument("--rules", help="rules file (default: layers/overlap-rules.yml)")
    check.add_argument("--only", help="comma-separated rule ids (default: every rule)")
    check.add_argument("--crs", help="CRS of the file's coordinates when it declares none or the wrong one "
                       "(EPSG:NNNN, CRS84, GCJ-02)")
    check.add_argument("--use", help="proposed use, a GB 50137 code (default: the file's proposed_use)")
    check.add_argument("--datetime", help="check against the plans in force at this date or instant")
    check.add_argument("--report", help="write the HTML report here")
    check.add_argument("--json", help="write the JSON report here")
    check.add_argument("--geojson", help="write the GeoJSON report here")
    check.add_argument("--fail-on-conflict", action="store_true", help="exit with status 3 when a rule conflicts")
    check.set_defaults(handler=cmd_check_overlap)
    keys = sub.add_parser("keys", help="API keys: create (shown once), list, revoke")
    keys.add_argument("action", choices=["create", "list", "revoke"])
    keys.add_argument("key_id", nargs="?", help="revoke: the key id")
    keys.add_argument("--role", help="create: a role of layers/access-policy.yml")
    keys.add_argument("--name", help="create: who or what the key is for")
    keys.add_argument("--claim", action="append", help="create: NAME=VALUE for row rules (e.g. jurisdiction=...)")
    keys.set_defaults(handler=cmd_keys)
    audit = sub.add_parser("audit", help="copy direct PostGIS reads (gis db grant users) from the server log "
                           "into ops.audit_log (GET /audit does it too)")
    audit.add_argument("action", choices=["import-db-log"])
    audit.add_argument("--log", help="the server log (default: GIS_DB_LOG_FILE, else the embedded cluster's)")
    audit.set_defaults(handler=cmd_audit)
    doc = sub.add_parser("settings-doc", help="docs/configuration.md from the settings classes")
    doc.add_argument("--write", action="store_true", help="rewrite docs/configuration.md and docs/gis.env.example")
    doc.add_argument("--check", action="store_true", help="fail when either is out of date")
    doc.add_argument("--root", default=".", help="the checkout (default: the current directory)")
    doc.set_defaults(handler=cmd_settings_doc)
    ops = sub.add_parser("ops", help="operations: prune (retention of the audit log, readings, process jobs and "
                         "delivered files)")
    ops.add_argument("action", choices=["prune"], help="prune: drop audit-log months older than "
                     "GIS_AUDIT_RETENTION_DAYS, sensor-reading months older than GIS_EVENT_RETENTION_DAYS, "
                     "synchronous process jobs older than GIS_SYNC_JOB_RETENTION_MINUTES, the bytes of finished "
                     "deliveries older than GIS_DELIVERY_RETENTION_DAYS")
    ops.set_defaults(handler=cmd_ops)
    serve = sub.add_parser("serve", help="serve the OGC API on http://127.0.0.1:8000")
    serve.add_argument("--host", help="address to listen on (default GIS_HOST or 127.0.0.1; 0.0.0.0 for all)")
    serve.add_argument("--port", type=int, help="port (default GIS_PORT or 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default GIS_SERVE_WORKERS or 1)")
    serve.add_argument("--root-path", help="the path the service sits under behind a proxy, e.g. /gis "
                       "(default GIS_SERVE_ROOT_PATH)")
    serve.set_defaults(handler=cmd_serve)
    worker = sub.add_parser("worker", help="run queued jobs (asynchronous process executions) until stopped")
    worker.add_argument("--concurrency", type=int, help="jobs at once (default GIS_JOBS_CONCURRENCY or 2)")
    worker.add_argument("--verbose", action="store_true", help="log each job claimed")
    worker.set_defaults(handler=cmd_worker)
    deploy = sub.add_parser("deploy", help="render deploy/'s systemd units, environment file and HAProxy "
                            "configuration for your own hosts (docs/deployment.md)")
    deploy.add_argument("action", choices=["render"])
    deploy.add_argument("values", help="a YAML file of the deployment's values (deploy/values.example.yml)")
    deploy.add_argument("--out", required=True, help="the folder to write the files into")
    deploy.set_defaults(handler=cmd_deploy)
    stack = sub.add_parser("stack", help="the whole topology on this machine: primary, standbys, service nodes, "
                           "workers and HAProxy, from the deploy/ files")
    stack.add_argument("action", choices=["up", "status", "down", "stop", "start"])
    stack.add_argument("name", nargs="?", help="stop/start: a member (node1, standby1, worker1, primary, lb)")
    stack.add_argument("--replicas", type=int, default=2, help="up: streaming standbys (default 2)")
    stack.add_argument("--nodes", type=int, default=3, help="up: service nodes (default 3)")
    stack.add_argument("--workers", type=int, default=1, help="up: job workers (default 1)")
    stack.add_argument("--node-workers", type=int, default=1, help="up: uvicorn processes per node (default 1)")
    stack.add_argument("--port", type=int, default=8080,
                       help="up: the load balancer's port (default 8080; nodes on the next ports)")
    stack.set_defaults(handler=cmd_stack)
    project = sub.add_parser("qgis-project", help="write a QGIS project with every layer a caller may see")
    project.add_argument("out", help="the .qgs file to write")
    project.add_argument("--api-key", help="the caller's key: its role's layers, the key in the OAPIF URLs")
    project.add_argument("--role", help="a role of the access policy (default: the anonymous role)")
    project.add_argument("--source", choices=["oapif", "postgis"], default="oapif",
                         help="layers through the OGC API (default) or straight from PostGIS")
    project.add_argument("--base-url", help="the service's URL for OAPIF layers (default http://GIS_HOST:GIS_PORT)")
    project.add_argument("--db-user", help="postgis: the login role (from 'gis db grant') instead of the service's")
    project.add_argument("--db-password", help="postgis: its password (written into the project file)")
    project.set_defaults(handler=cmd_qgis_project)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        return int(args.handler(args, settings))
    except GisError as exc:
        print(f"gis: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        print(f"gis: cannot reach the database: {first_line} (is it started? 'gis db start')", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gis: interrupted; nothing was changed by the unfinished step", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

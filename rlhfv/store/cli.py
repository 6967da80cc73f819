"""`rlhfv annotate`: serve the annotation app, and import, export and manage users from the shell.

    rlhfv annotate [--port 8501] [--db URL] [--admin NAME]        start the app
    rlhfv annotate import jsonl tasks.jsonl [--images DIR]        tasks with images
    rlhfv annotate import rollouts checkpoints/<run>              a run's sampled completions
    rlhfv annotate import shapes --n 50                           ShapesVQA gold items
    rlhfv annotate export [--out DIR]                             a numbered training snapshot
    rlhfv annotate users list | add NAME | passwd NAME | disable NAME | enable NAME

The database defaults to the SQLite file `rlhfv_annotate/store.db` (images in
`rlhfv_annotate/media/`); `--db postgresql+psycopg://user@host/db` uses PostgreSQL (with
`pip install "psycopg[binary]"`). Passwords are read from stdin with `--password-stdin`, typed
at a prompt, or generated and printed once.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
from pathlib import Path

from rlhfv.store.store import DEFAULT_URL, ROLES, Store

# The Streamlit app: beside the package in a source checkout (and an editable install), or
# installed inside it as `rlhfv.annotation_ui` (setup.py maps the folder there).
APP_PLACES = (
    Path(__file__).resolve().parents[2] / "annotation_ui" / "app.py",
    Path(__file__).resolve().parents[1] / "annotation_ui" / "app.py",
)


def app_path() -> Path | None:
    """The app file of this installation, or None when neither place holds it."""
    return next((p for p in APP_PLACES if p.is_file()), None)


def _password(args: argparse.Namespace, name: str) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if sys.stdin.isatty():
        return getpass.getpass(f"password for {name}: ")
    password = secrets.token_urlsafe(12)
    print(f"generated password for {name}: {password}")
    return password


def _open(args: argparse.Namespace) -> Store:
    return Store(args.db, media_dir=args.media)


def cmd_serve(args: argparse.Namespace) -> int:
    store = _open(args)
    if not any(u.role == "admin" and u.active for u in store.users()):
        password = os.environ.get("RLHFV_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        store.add_user(args.admin, password, role="admin")
        if "RLHFV_ADMIN_PASSWORD" not in os.environ:
            print(f"created the first admin {args.admin!r} with password: {password}")
    app = app_path()
    if app is None:
        places = " or ".join(str(p) for p in APP_PLACES)
        print(f"error: the annotation app is missing (looked for {places}); reinstall rlhfv", file=sys.stderr)
        return 2
    env = dict(os.environ, RLHFV_DB=store.url, RLHFV_MEDIA=str(store.media_dir.resolve()),
               RLHFV_RUNS=str(Path(args.runs).resolve()), RLHFV_MAX_UPLOAD_MB=str(args.max_upload_mb))  # fmt: skip
    store.close()
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port),
               "--server.address", args.address, "--server.headless", "true",
               "--server.maxUploadSize", str(args.max_upload_mb), "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "minimal"]  # fmt: skip
    from sqlalchemy.engine import make_url

    shown = make_url(env["RLHFV_DB"]).render_as_string(hide_password=True)  # never print a password
    print(f"serving on http://{args.address}:{args.port} (database {shown})", flush=True)
    # Become the server rather than wrap it, so Ctrl-C and kill reach Streamlit and leave no orphan.
    os.execve(sys.executable, command, env)
    return 0  # not reached


def cmd_import(args: argparse.Namespace) -> int:
    from rlhfv.store import ingest

    store = _open(args)
    try:
        if args.kind == "jsonl":
            report = ingest.import_jsonl(store, args.path, args.images, overlap=args.overlap)
        elif args.kind == "rollouts":
            report = ingest.import_rollouts(store, args.path, overlap=args.overlap, min_step=args.min_step)
        else:
            report = ingest.import_shapes(store, n=args.n, seed=args.seed, overlap=args.overlap)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report)
    if report.added == 0 and report.duplicates == 0:  # nothing imported and nothing already there
        print(f"error: imported no task from {args.path or args.kind}", file=sys.stderr)
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rlhfv.store.export import export_snapshot

    store = _open(args)
    # The same folder the app exports to, so a snapshot made either way is found in one place.
    out = args.out or os.environ.get("RLHFV_EXPORTS") or store.media_dir.parent / "exports"
    snap = export_snapshot(store, out, min_labels=args.min_labels)
    print(f"snapshot v{snap.version}: {snap.pairs} pairs from {snap.labels} labels in {snap.path}")
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        if args.action == "list":
            for u in store.users():
                print(f"{u.name:24s} {u.role:10s} {'active' if u.active else 'disabled'}")
        elif args.action == "add":
            store.add_user(args.name, _password(args, args.name), role=args.role)
        elif args.action == "passwd":
            store.update_user(args.name, password=_password(args, args.name))
        else:
            store.update_user(args.name, active=args.action == "enable")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db", default=os.environ.get("RLHFV_DB", DEFAULT_URL), help="SQLite path or database URL"
    )
    common.add_argument("--media", default=None, help="image folder (default: 'media' beside a SQLite file)")
    parser = argparse.ArgumentParser(
        prog="rlhfv annotate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", parents=[common], help="start the app (the default)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="localhost", help="0.0.0.0 to serve other machines")
    p.add_argument("--admin", default="admin", help="name of the first admin, created if there is none")
    p.add_argument("--runs", default="checkpoints", help="folder the dashboard lists runs from")
    p.add_argument("--max-upload-mb", type=int, default=50)
    p = sub.add_parser("import", parents=[common], help="add tasks")
    p.add_argument("kind", choices=["jsonl", "rollouts", "shapes"])
    p.add_argument("path", nargs="?", help="the JSONL file, or the run folder")
    p.add_argument("--images", default=None, help="image folder for jsonl (default: the file's folder)")
    p.add_argument(
        "--overlap", type=int, default=None, help="labels wanted per task (default: the project's k)"
    )
    p.add_argument("--min-step", type=int, default=0, help="rollouts: skip steps before this")
    p.add_argument("--n", type=int, default=50, help="shapes: how many pairs")
    p.add_argument("--seed", type=int, default=0, help="shapes: data seed")
    p = sub.add_parser("export", parents=[common], help="write a numbered snapshot for training")
    p.add_argument("--out", default=None, help="default: 'exports' beside the media folder, as in the app")
    p.add_argument(
        "--min-labels",
        type=int,
        default=None,
        help="every task with this many labels (default: settled tasks, k)",
    )
    p = sub.add_parser("users", parents=[common], help="list, add or change users")
    p.add_argument("action", choices=["list", "add", "passwd", "disable", "enable"])
    p.add_argument("name", nargs="?")
    p.add_argument("--role", choices=ROLES, default="annotator")
    p.add_argument("--password-stdin", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "serve")  # `rlhfv annotate --port 8600` starts the app
    args = build_parser().parse_args(argv)
    if args.command == "import" and args.kind != "shapes" and not args.path:
        print(f"error: import {args.kind} needs a path", file=sys.stderr)
        return 2
    if args.command == "users" and args.action != "list" and not args.name:
        print(f"error: users {args.action} needs a user name", file=sys.stderr)
        return 2
    return {"serve": cmd_serve, "import": cmd_import, "export": cmd_export, "users": cmd_users}[args.command](
        args
    )

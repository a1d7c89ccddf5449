"""The ``openmaker`` command: run the platform and administer appkeys and tokens."""

from __future__ import annotations

import argparse
import sys

from chalicelib.services import auth
from chalicelib.store.db import get_database


def _cmd_up(args: argparse.Namespace) -> int:
    from openmaker.launcher import up

    return up(args.host, args.port, args.workers, args.threads)


def _cmd_create_appkey(args: argparse.Namespace) -> int:
    database = get_database()
    appkey = auth.create_project(database, name=args.name)
    token = auth.create_token(database, appkey, description=args.description)
    print(f"appkey: {appkey}\ntoken:  {token}")
    return 0


def _cmd_create_token(args: argparse.Namespace) -> int:
    token = auth.create_token(get_database(), args.appkey, description=args.description)
    print(f"token: {token}")
    return 0


def _cmd_list_appkeys(_args: argparse.Namespace) -> int:
    for appkey, name, tokens in auth.list_projects(get_database()):
        print(f"{appkey}\t{name}\t{tokens} token(s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openmaker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("up", help="run the platform in the foreground")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=10090)
    run.add_argument("--workers", type=int, default=2, help="server processes")
    run.add_argument("--threads", type=int, default=2, help="app threads per worker")
    run.set_defaults(func=_cmd_up)

    admin = commands.add_parser("admin", help="appkeys and tokens").add_subparsers(
        dest="admin_command", required=True
    )
    create = admin.add_parser("create-appkey", help="a new project with its first token")
    create.add_argument("--name", default="project")
    create.add_argument("--description", default="")
    create.set_defaults(func=_cmd_create_appkey)
    token = admin.add_parser("create-token", help="another token for an appkey")
    token.add_argument("appkey")
    token.add_argument("--description", default="")
    token.set_defaults(func=_cmd_create_token)
    admin.add_parser("list-appkeys", help="every appkey").set_defaults(func=_cmd_list_appkeys)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as exc:
        from chalicelib.errors import OpenMakerError

        if isinstance(exc, OpenMakerError):
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())

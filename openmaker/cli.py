"""The `openmaker` command: run the platform, administer appkeys and tokens, and run
trainings the NSML way (run, ps, logs, stop) or the IBM Watson ML way (train, list|show|delete
trained-models).

The training commands are REST clients of a running platform: --url or $OPENMAKER_URL
(default http://127.0.0.1:10090), and $OPENMAKER_APPKEY with $OPENMAKER_TOKEN or else
$OPENMAKER_HOME/credentials.json (written by `openmaker up`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from openmaker.client import Client, CliError, resolve_connection

TRAINED_MODELS = "trained-models"


def _cmd_up(args: argparse.Namespace) -> int:
    from openmaker.launcher import up

    return up(args.host, args.port, args.workers, args.threads)


def _cmd_create_appkey(args: argparse.Namespace) -> int:
    from chalicelib.services import auth
    from chalicelib.store.db import get_database

    database = get_database()
    appkey = auth.create_project(database, name=args.name)
    token = auth.create_token(database, appkey, description=args.description)
    print(f"appkey: {appkey}\ntoken:  {token}")
    return 0


def _cmd_create_token(args: argparse.Namespace) -> int:
    from chalicelib.services import auth
    from chalicelib.store.db import get_database

    token = auth.create_token(get_database(), args.appkey, description=args.description)
    print(f"token: {token}")
    return 0


def _cmd_list_appkeys(_args: argparse.Namespace) -> int:
    from chalicelib.services import auth
    from chalicelib.store.db import get_database

    for appkey, name, tokens in auth.list_projects(get_database()):
        print(f"{appkey}\t{name}\t{tokens} token(s)")
    return 0


# -- the REST commands ---------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    return Client(resolve_connection(args.url))


def _cmd_run(args: argparse.Namespace) -> int:
    from openmaker import nsml

    options = nsml.RunOptions(
        entry=args.entry,
        script_args=list(args.script_args),
        folder=Path(args.dir) if args.dir else None,
        experiment=args.experiment,
        flavor=args.flavor,
        image=args.image,
        nodes=args.nodes,
        datasets=list(args.dataset or []),
        name=args.name,
        timeout_minutes=args.timeout,
        detach=args.detach,
    )
    # the arguments are checked before the connection is looked up
    nsml.parse_hyperparameters(options.script_args)
    nsml.parse_datasets(options.datasets)
    return nsml.run(_client(args), options)


def _cmd_ps(args: argparse.Namespace) -> int:
    from openmaker import nsml

    return nsml.ps(_client(args), show_all=args.all, limit=args.limit)


def _cmd_logs(args: argparse.Namespace) -> int:
    from openmaker import nsml

    return nsml.logs(_client(args), args.training_id, follow=args.follow)


def _cmd_stop(args: argparse.Namespace) -> int:
    from openmaker import nsml

    return nsml.stop(_client(args), args.training_id, wait=args.wait)


def _cmd_train(args: argparse.Namespace) -> int:
    from openmaker import wml

    return wml.train(
        _client(args),
        Path(args.model_zip),
        Path(args.manifest),
        wait=args.wait,
        flavor=args.flavor,
        image=args.image,
        experiment=args.experiment,
    )


def _cmd_list(args: argparse.Namespace) -> int:
    from openmaker import wml

    return wml.list_models(_client(args), show_all=args.all)


def _cmd_show(args: argparse.Namespace) -> int:
    from openmaker import wml

    return wml.show_model(_client(args), args.model_id)


def _cmd_delete(args: argparse.Namespace) -> int:
    from openmaker import wml

    return wml.delete_model(_client(args), args.model_id)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _rest_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--url",
        default=None,
        help="the platform (default $OPENMAKER_URL, else http://127.0.0.1:10090)",
    )
    return parent


def _add_nsml(commands: argparse._SubParsersAction, rest: argparse.ArgumentParser) -> None:
    from openmaker import nsml

    run = commands.add_parser(
        "run",
        parents=[rest],
        help="run a folder's entry file as a training (NSML way)",
        description=(
            "Pack the folder (skipping .git, __pycache__, .venv, venv, node_modules, *.pyc; "
            "at most 256 MiB), upload it and run ENTRY as a training; the arguments after "
            "-- are its hyperparameters (--name value, or --flag for 'true'). Follows the "
            "training until it ends: exit 0 COMPLETE, 1 failed, 130 on Ctrl-C (it is "
            "stopped first)."
        ),
        usage="openmaker run ENTRY [options] [-- --name value --flag ...]",
    )
    run.add_argument("entry", metavar="ENTRY", help="the entry file, e.g. main.py")
    run.add_argument("--dir", help="the folder to pack (default: the current folder)")
    run.add_argument(
        "-e",
        "--experiment",
        default=nsml.DEFAULT_EXPERIMENT,
        help=f"experiment name, created if missing (default {nsml.DEFAULT_EXPERIMENT})",
    )
    run.add_argument(
        "-f", "--flavor", default=nsml.DEFAULT_FLAVOR, help=f"name or id ({nsml.DEFAULT_FLAVOR})"
    )
    run.add_argument(
        "-i", "--image", default=nsml.DEFAULT_IMAGE, help=f"name or id ({nsml.DEFAULT_IMAGE})"
    )
    run.add_argument("--nodes", type=_positive, default=1, help="instance count")
    run.add_argument(
        "-d",
        "--dataset",
        action="append",
        metavar="NAME=URI",
        help="a dataset (repeatable); inside the job: job.dataset(NAME)",
    )
    run.add_argument("--name", help="training name (default: folder name and time)")
    run.add_argument("--timeout", type=_positive, metavar="MINUTES")
    run.add_argument(
        "--detach", action="store_true", help="print the training id and return at once"
    )
    run.set_defaults(func=_cmd_run, script_args=[])

    ps = commands.add_parser("ps", parents=[rest], help="list trainings (running by default)")
    ps.add_argument("-a", "--all", action="store_true", help="every training, ended ones too")
    ps.add_argument("--limit", type=_positive, default=20)
    ps.set_defaults(func=_cmd_ps)

    logs = commands.add_parser("logs", parents=[rest], help="print a training's log")
    logs.add_argument("training_id", metavar="ID")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the training ends"
    )
    logs.set_defaults(func=_cmd_logs)

    stop = commands.add_parser("stop", parents=[rest], help="stop a training")
    stop.add_argument("training_id", metavar="ID")
    stop.add_argument("--wait", action="store_true", help="wait until it has stopped")
    stop.set_defaults(func=_cmd_stop)


def _add_wml(commands: argparse._SubParsersAction, rest: argparse.ArgumentParser) -> None:
    from openmaker import wml

    flavors = ", ".join(f"{k} -> {v}" for k, v in wml.RESOURCE_FLAVORS.items())
    train = commands.add_parser(
        "train",
        parents=[rest],
        help="train a model-definition zip with a WML manifest (IBM way)",
        description=(
            "Submit an IBM Watson ML training run: MODEL.zip (the model definition) and "
            f"MANIFEST.yml. execution.resource picks the flavor ({flavors}); the manifest's "
            "connection credentials are never sent."
        ),
    )
    train.add_argument("model_zip", metavar="MODEL.zip")
    train.add_argument("manifest", metavar="MANIFEST.yml")
    train.add_argument("--wait", action="store_true", help="wait until the training ends")
    train.add_argument("--flavor", help="override the flavor execution.resource maps to")
    train.add_argument("--image", help="override the image the framework maps to")
    train.add_argument(
        "-e",
        "--experiment",
        default=wml.DEFAULT_EXPERIMENT,
        help=f"experiment name, created if missing (default {wml.DEFAULT_EXPERIMENT})",
    )
    train.set_defaults(func=_cmd_train)

    listing = commands.add_parser("list", parents=[rest], help="list trained-models")
    listing.add_argument("what", choices=[TRAINED_MODELS])
    listing.add_argument("--all", action="store_true", help="every training, not only WML's")
    listing.set_defaults(func=_cmd_list)
    for name, func, text in (
        ("show", _cmd_show, "show a trained model"),
        ("delete", _cmd_delete, "delete an ended trained model (its results stay)"),
    ):
        sub = commands.add_parser(name, parents=[rest], help=text)
        sub.add_argument("what", choices=[TRAINED_MODELS])
        sub.add_argument("model_id", metavar="MODEL-ID")
        sub.set_defaults(func=func)


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

    rest = _rest_parent()
    _add_nsml(commands, rest)
    _add_wml(commands, rest)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; for ``run``, everything after the first ``--`` is the script's."""
    parser = build_parser()
    head, tail = argv, []
    if "--" in argv:
        cut = argv.index("--")
        head, tail = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(head)
    if tail or "--" in argv:
        if args.command != "run":
            parser.error("arguments after -- are only for `openmaker run`")
        args.script_args = tail
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from chalicelib.errors import OpenMakerError

        if isinstance(exc, OpenMakerError):
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())

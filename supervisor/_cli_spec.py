"""``supctl spawn --spec FILE``: a whole child declared in TOML, as in supd's config file."""

from __future__ import annotations

import argparse

from supervisor._cli_errors import EXIT_USAGE, CliError
from supervisor.v1 import supervisor_pb2 as pb

__all__ = ["spec_file"]


def spec_file(args: argparse.Namespace) -> pb.ChildSpec:
    """The child declared by ``--spec FILE``: the keys of a config file's ``[children.NAME]`` table, at top level.

    A command after ``--`` replaces the file's ``argv``. Checked here as supd checks its config (CliError,
    EXIT_USAGE, naming the file and the field); supd checks it again.
    """
    import tomllib

    from supervisor.errors import InvalidArgument
    from supervisor.spec import spec_from_mapping, spec_to_proto

    path = args.spec
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as exc:
        raise CliError(f"spawn {args.name}: cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # TOML is UTF-8: tomllib decodes before parsing
        raise CliError(f"spawn {args.name}: {path}: not valid TOML: {exc}", EXIT_USAGE) from None
    if args.command:
        table["argv"] = list(args.command)
    try:
        return spec_to_proto(spec_from_mapping(args.name, table))
    except InvalidArgument as exc:
        raise CliError(f"spawn {args.name}: {path}: {exc.message}", EXIT_USAGE) from None

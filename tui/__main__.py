"""The ``chat-tui`` command: the app without a command, the headless CLI with one."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    from core.cli import build_parser, run_command

    args = build_parser().parse_args(argv)
    if args.command is not None:
        sys.exit(run_command(args))
    from tui.launch import launch

    sys.exit(launch(args))


if __name__ == "__main__":
    main()

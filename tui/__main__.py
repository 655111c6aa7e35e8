"""The ``chat-tui`` command: the app without a command, the headless CLI with one."""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    # Rare full collections: each walks every live object, and most objects here live as long as the process
    # (the imports', a long conversation's rendered rows). Under the default thresholds they stalled the app
    # 40-100 ms several times in its first seconds (the preload thread's imports), and mid-stream, where langchain
    # keeps every chunk of a reply alive until it ends (~6 objects a token), 60-150 ms. The young generations
    # still run as usual.
    gc.set_threshold(700, 10, 1000)
    from core.cli import build_parser, run_command

    args = build_parser().parse_args(argv)
    if args.command is not None:
        sys.exit(run_command(args))
    from tui.launch import launch

    sys.exit(launch(args))


if __name__ == "__main__":
    main()

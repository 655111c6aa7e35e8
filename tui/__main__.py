"""The ``chat-tui`` command: the app without a command, the headless CLI with one."""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    # Rare full collections from the start, not only once the engine is preloaded (ChatEngine.preload says why):
    # the imports that follow make objects that live as long as the process, and each full collection walked all
    # of them again, on the path to the first frame and, during the preload thread's imports, stalling the app
    # 40-100 ms several times in its first seconds.
    gc.set_threshold(700, 10, 1000)
    from core.cli import build_parser, run_command

    args = build_parser().parse_args(argv)
    if args.command is not None:
        sys.exit(run_command(args))
    from tui.launch import launch

    sys.exit(launch(args))


if __name__ == "__main__":
    main()

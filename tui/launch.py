"""Start the app: settings from the command line, the demo server when asked, then the Textual app."""

from __future__ import annotations

import argparse
import sys


def launch(args: argparse.Namespace) -> int:
    from core.cli import EXIT_USAGE, demo_server, settings_from_args
    from core.errors import ChatError

    try:
        settings = settings_from_args(args)
    except ChatError as error:
        print(f"chat-tui: {error}", file=sys.stderr)
        return EXIT_USAGE
    with demo_server(settings) as settings:
        from tui.app import ChatApp
        from tui.keys import read_escape_digits_as_alt

        read_escape_digits_as_alt()
        app = ChatApp(settings)
        app.run()
    return app.return_code or 0

"""Start the app: settings from the command line, the demo server when asked, then the Textual app."""

from __future__ import annotations

import argparse
import sys


def launch(args: argparse.Namespace) -> int:
    from core.cli import EXIT_INTERRUPTED, EXIT_USAGE, demo_server, settings_from_args
    from core.errors import ChatError

    try:
        settings = settings_from_args(args)
    except ChatError as error:
        print(f"chat-tui: {error}", file=sys.stderr)
        return EXIT_USAGE
    from tui.picture import start_context
    from tui.splash import DEMO_SUB_TITLE, Splash, colour_system

    # Before the demo server changes the settings (its port is new each time): the next start compares this.
    context = start_context(settings, colour_system())
    # The splash goes up before the demo server and Textual are imported, and comes down if either fails.
    try:
        with (
            Splash.show(settings.db_path, DEMO_SUB_TITLE if settings.demo else "", context=context) as splash,
            demo_server(settings) as settings,
        ):
            from tui.app import ChatApp
            from tui.keys import read_escape_digits_as_alt, read_pastes_whole

            read_escape_digits_as_alt()
            read_pastes_whole()
            app = ChatApp(settings, after_splash=splash.shown, start_context=context if splash.shown else None)
            splash.hand_over()
            app.run()
    except KeyboardInterrupt:  # ctrl+c while starting (the app itself takes ctrl+c as a key)
        return EXIT_INTERRUPTED
    return app.return_code or 0

"""Benchmark helper: the smallest Textual app that looks like chat-tui's first frame (Header, TextArea, Footer).

bench_tui.py starts it exactly like chat-tui to show what Textual alone costs to a first frame on this machine.
"""

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, TextArea


class Baseline(App[None]):
    TITLE = "chat-tui"

    def compose(self) -> ComposeResult:
        yield Header()
        yield TextArea(placeholder="Message… (Enter to send")
        yield Footer()


if __name__ == "__main__":
    Baseline().run()

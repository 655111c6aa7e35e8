"""The input parser's handling of pastes (tui/keys.py), fed as the driver feeds it: in reads of any size."""

from __future__ import annotations

from textual import events

from tui.keys import PasteSafeParser, read_escape_digits_as_alt

INPUT = "ab\x1b[200~one \x1b[1mbold\x1b[0m\rtwo\x1b]0;title\x07 \x1b]0;t\x1b\\end\x1b\rthree\x1b[201~\rz\x1b[A"
"""Keys, a paste holding a colour code, two titles (OSC, ended by BEL and by ESC \\) and a stray ESC, then Enter,
z and the up arrow."""


def parse(*reads: str) -> list[tuple[str, str | None]]:
    parser = PasteSafeParser()
    parsed: list[events.Event] = []
    for data in reads:
        parsed += parser.feed(data)
    parsed += parser.feed("")  # the end of input
    return [(type(e).__name__, e.text if isinstance(e, events.Paste) else getattr(e, "key", None)) for e in parsed]


def test_a_paste_arrives_whole_without_escape_sequences_and_keys_around_it_stay_keys() -> None:
    assert parse(INPUT) == [
        ("Key", "a"),
        ("Key", "b"),
        ("Paste", "one bold\rtwo end\rthree"),
        ("Key", "enter"),
        ("Key", "z"),
        ("Key", "up"),
    ]


def test_the_same_input_split_into_reads_anywhere_parses_the_same() -> None:
    whole = parse(INPUT)
    for first in range(1, len(INPUT)):
        for second in range(first + 1, len(INPUT)):
            assert parse(INPUT[:first], INPUT[first:second], INPUT[second:]) == whole, (first, second)


def test_escape_outside_a_paste_is_not_held_back() -> None:
    assert parse("\x1b") == [("Key", "escape")]


def test_esc_digit_is_alt_digit_at_once_without_waiting_for_the_escape_delay() -> None:
    read_escape_digits_as_alt()  # as the launcher does
    parser = PasteSafeParser()
    # One read, no end of input, no timer tick: a sequence Textual did not know waited 0.1 s for more bytes.
    keys = [(e.key, e.character) for e in parser.feed("\x1b1\x1b0x¡") if isinstance(e, events.Key)]
    assert keys == [("alt+1", None), ("alt+0", None), ("x", "x"), ("inverted_exclamation_mark", "¡")]

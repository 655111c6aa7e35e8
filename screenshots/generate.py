"""Render the main scenes to PNG for README, from the same set-up as the snapshot tests (tests/scenes.py).

Run: .venv/bin/python screenshots/generate.py   (needs rsvg-convert: apt-get install librsvg2-bin, and a
monospace font such as fonts-firacode so that the columns line up)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual._doc import take_svg_screenshot  # noqa: E402

from core.server import LocalServer, ServerOptions  # noqa: E402
from tests.scenes import SCENES, build  # noqa: E402

SHOTS = {
    "first_launch": "first-launch",
    "conversation": "conversation",
    "background_stream": "two-tabs",
    "browser_search": "search",
    "error": "error",
    "help": "help",
    "small_80x24": "small-80x24",
}


def main() -> None:
    out = Path(__file__).resolve().parent
    with LocalServer(ServerOptions(tokens=120)) as server, tempfile.TemporaryDirectory() as tmp:
        for name, filename in SHOTS.items():
            scene = SCENES[name]
            app, run_before = build(scene, Path(tmp), server)
            svg = take_svg_screenshot(app=app, terminal_size=scene.size, run_before=run_before)
            # Keep each run's leading spaces: rsvg drops them otherwise, and with `textLength` the run is then
            # stretched leftwards ("Use ?placeholders" for "Use ? placeholders").
            svg = svg.replace("<svg ", '<svg xml:space="preserve" ', 1)
            svg_path = Path(tmp) / f"{filename}.svg"
            svg_path.write_text(svg, encoding="utf-8")
            subprocess.run(
                ["rsvg-convert", "--width", "1400", "-o", str(out / f"{filename}.png"), str(svg_path)], check=True
            )
            print(f"screenshots/{filename}.png")


if __name__ == "__main__":
    main()

"""The values of ``rexthinker-data synth``'s options that take a fixed set (the first is the default).

The one list of them, with each one's help: ``data_tools.synthetic`` takes its LAYOUTS, BACKGROUNDS and cue tuples
from here, and the CLI its choices, without importing the generator (and its heavy imports) until ``synth`` runs.
"""

from __future__ import annotations

SYNTH_CHOICES = {
    "--layout": (
        ("free", "grid"),
        "free: objects anywhere, kept apart; grid: each object inside its own square of the model's image-token grid "
        "(28 resized pixels a side), so that one image token sees one whole object",
    ),
    "--background": (
        ("plain", "cells", "ramp", "frames"),
        "plain: one grey; cells: each image token's square tinted by its column and row; ramp: smoothly; frames: a "
        "coded frame round each square, over the objects too (place codes a small model can read; docs/tiny-demo.md)",
    ),
    "--position-cue": (
        ("centre", "edges"),
        "what a position row's chain of thought quotes per hint: centre ('at x 45') or edges ('left 34 vs 60': its "
        "edge on the named side and the other hints' most extreme one)",
    ),
    "--verdict-cue": (
        ("plain", "asked", "cell", "cell+asked", "pair", "cell+pair", "square", "square+pair", "square+pair+echo"),
        "plain: a hint's line ends with its colour; asked: then the word asked ('blue circle, asked red: no.'); pair: "
        "'blue red no.'; cell: its square, column and row ('cell 1 0'); square: one number, row x columns + column; "
        "echo: a line that says yes quotes its box again after the verdict",
    ),
    "--summary-cue": (
        ("count", "boxes"),
        "count: the summary counts the matches ('Summary: 1 match.'); boxes: and names them by number ('Summary: 1 "
        "match, Box 2.'), so that the answer copies the box of a line named just before it",
    ),
}

"""The values of ``rexthinker-data synth``'s options that take a fixed set (the first is the default).

The one list of them, with each one's help: ``data_tools.synthetic`` checks its arguments against it
(``check_choice``), and the CLI takes its choices from it, without importing the generator (and its heavy imports)
until ``synth`` runs.
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
    # What a position row's chain of thought quotes for each hint. centre: "at x 45", the box's centre on the axis
    # (arithmetic on two coordinates). edges: "left 34 vs 60", the box's edge on the expression's side and the most extreme
    # such edge of the other hints (two copied numbers compared side by side); the referred object is then extreme by
    # both its centre and that edge. side: the half of the image the box's centre lies in, then the side asked ("right
    # left no." for "the leftmost circle"); the referred object is then the only one on that side, so each line's verdict
    # compares two neighbouring words, as a colour line's does, instead of numbers across lines.
    "--position-cue": (
        ("centre", "edges", "side"),
        "what a position row's chain of thought quotes per hint: centre ('at x 45'), edges ('left 34 vs 60': its "
        "edge on the named side and the other hints' most extreme one) or side ('right left no.': the half of the "
        "image its centre is in, then the side asked; the referred object is the only one on its side)",
    ),
    # What a hint's line says before its verdict. plain: nothing more. asked: the expression's colour or side, right after
    # the colour read from the picture ("Box 1 [..] blue circle, asked red: no."): the verdict then compares two
    # neighbouring words, instead of the read colour with a word at the end of the prompt.
    # cell: the image token's square the box lies in, right after the box ("Box 1 [34, 73, 57, 96] cell 1 2 red circle"),
    # column then row: a place a small model can find in a ``frames`` picture (docs/tiny-demo.md).
    # pair: the colour read, what the expression asks, the verdict, nothing between ("Box 1 [..] cell 0 1 blue red no.";
    # the shape is left out, it is the category; a position row keeps its colon). With the two words apart ("blue circle,
    # asked red:") or a colon before the verdict, the demo's 2-layer SFT did not learn to compare them; side by side it
    # did (docs/tiny-demo.md, "Comparing, learned").
    # square: the square as one number, row x columns + column ("Box 1 [..] cell 3 blue red no." in a 2 x 2 grid): with two
    # numbers, naming a square is itself an interaction of two words, and binding each of two hints to its colour landed
    # on one seed of two; with one number, on five of five (docs/tiny-demo.md, "Binding, learned on every seed").
    # echo: a line that says yes quotes its box again after the verdict ("Box 2 [..] cell 2 green green yes [..]."), so that
    # the answer's boxes are the ones written right after a "yes": with the box only before its verdict, no token of the box
    # knows whether its line said yes (causal attention), and the answer mixed two lines' coordinates.
    "--verdict-cue": (
        ("plain", "asked", "cell", "cell+asked", "pair", "cell+pair", "square", "square+pair", "square+pair+echo"),
        "plain: a hint's line ends with its colour; asked: then the word asked ('blue circle, asked red: no.'); pair: "
        "'blue red no.'; cell: its square, column and row ('cell 1 0'); square: one number, row x columns + column; "
        "echo: a line that says yes quotes its box again after the verdict",
    ),
    # What the summary says. count: how many hints match ("Summary: 1 match."). boxes: and which, by number ("Summary: 1
    # match, Box 2."): meant to let the answer copy the box of the line the summary names, where with ``count`` it has to
    # find the line whose verdict, after the box, says yes; on one seed's SFT start it copied worse, not better
    # (docs/tiny-demo.md, "Copying the chosen box").
    "--summary-cue": (
        ("count", "boxes"),
        "count: the summary counts the matches ('Summary: 1 match.'); boxes: and names them by number ('Summary: 1 "
        "match, Box 2.'), so that the answer copies the box of a line named just before it",
    ),
}

# Who writes the train split's SFT targets (data_tools/teacher.py; the first is the default). The answers the reward
# scores, the prompts and the val split keep the truth whichever it is.
TEACHERS = ("truthful", "misses-second", "answers-first", "verdicts-first")
TEACHER_HELP = (
    "who writes the train split's chains of thought and answers for SFT: truthful; misses-second: on a share of the "
    "two-hint rows (--teacher-bias) says no to hint 2 and answers accordingly; answers-first: answers hint 1's box "
    "alone; verdicts-first: and its chain agrees (docs/tiny-demo.md). The reward and val keep the truth"
)


def check_choice(flag: str, value: str) -> None:
    """Refuse a value that ``flag`` (a key of SYNTH_CHOICES) does not take, naming both and what it does take."""
    allowed = SYNTH_CHOICES[flag][0]
    if value not in allowed:
        raise ValueError(f"{flag} {value!r}: use one of {', '.join(allowed)}")

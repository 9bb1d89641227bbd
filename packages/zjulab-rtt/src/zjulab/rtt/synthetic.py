"""A synthetic relevance task with known answers: "mention a colour".

Responses are short sentences; those that name a colour mark the colour words as relevant.
The task checks that a discriminator learns span labels end to end in seconds.
"""

from __future__ import annotations

import random

from zjulab.rtt.labels import RelevanceExample, locate_substrings

__all__ = ["COLOURS", "COLOUR_CRITERION", "colour_examples"]

COLOURS = ("red", "green", "blue", "yellow", "black", "white")
COLOUR_CRITERION = "Mention a colour."

_NOUNS = ("car", "house", "dog", "table", "city", "tool", "skill", "memory", "question", "document")
_WITH = (
    "The {noun} is {colour}.",
    "I saw a {colour} {noun} in the city.",
    "A {colour} {noun} and a {colour2} {noun2} were on the table.",
    "The user asks about the {colour} {noun}.",
    "My {noun} was {colour} and the {noun2} was {colour2}.",
)
_WITHOUT = (
    "The {noun} is on the table.",
    "The user asks a question about the {noun}.",
    "A {noun} and a {noun2} were in the city.",
    "The assistant answers the question about the {noun}.",
)


def colour_examples(n: int, *, seed: int = 0, negative_rate: float = 0.3) -> list[RelevanceExample]:
    """``n`` labelled examples of the "mention a colour" task.

    Args:
        n: Number of examples.
        seed: Random seed.
        negative_rate: Share of responses that name no colour (no relevant token).

    Returns:
        Examples whose spans cover every colour word.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        fill = {
            "noun": rng.choice(_NOUNS),
            "noun2": rng.choice(_NOUNS),
            "colour": rng.choice(COLOURS),
            "colour2": rng.choice(COLOURS),
        }
        if rng.random() < negative_rate:
            text = rng.choice(_WITHOUT).format(**fill)
            out.append(RelevanceExample(COLOUR_CRITERION, text, []))
        else:
            text = rng.choice(_WITH).format(**fill)
            spans = [
                (s, e)
                for s, e in locate_substrings(text, [fill["colour"], fill["colour2"]])
                if (s == 0 or not text[s - 1].isalpha()) and (e == len(text) or not text[e].isalpha())
            ]
            out.append(RelevanceExample(COLOUR_CRITERION, text, spans))
    return out

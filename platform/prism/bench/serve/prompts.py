"""The chat conversations the serving benchmark sends, one per request.

``robots`` is the engine benchmark's workload: request ``i`` is the single user message
"Write a short story about a robot number i.", so requests share only the chat template's
default system prompt. ``shared-prefix`` puts the same long system prompt before each of
those messages, as applications with a fixed instruction preamble do, so every request
after the first on a replica can take most of its prompt from the prefix cache.

The lone requests that come first (:func:`lone_prompts`) are long messages of random words.
"""

from __future__ import annotations

import random

from prism.bench.prompts import STORY_PROMPT

Messages = list[dict[str, str]]

_HOUSE_RULES = (
    "Give every robot a name, a job and one flaw that matters to the plot.",
    "Open with the robot at work, never with the weather or a dream.",
    "Keep the vocabulary plain enough for a ten-year-old reader.",
    "Use the past tense and the third person throughout.",
    "Let the robot solve its problem with an idea, not with force.",
    "Mention at least one human who is neither a villain nor a genius.",
    "Describe one sound, one smell and one texture from the robot's world.",
    "Avoid the words 'suddenly', 'very' and 'amazing'.",
    "End on a concrete image rather than a moral.",
    "Do not explain how the robot was built unless the plot needs it.",
    "Keep dialogue short: no line of speech longer than two sentences.",
    "Stay under three hundred words.",
)
SHARED_SYSTEM_PROMPT = (
    "You are the storyteller of a small museum of robotics. Visitors ask you for short "
    "stories about the robots in the collection, each known only by its catalogue number. "
    "Follow the museum's house style:\n"
    + "\n".join(f"{number}. {rule}" for number, rule in enumerate(_HOUSE_RULES, start=1))
)

PROMPT_SETS = ("robots", "shared-prefix")


def conversations(prompt_set: str, count: int) -> list[Messages]:
    """The messages of ``count`` requests of ``prompt_set`` (one of :data:`PROMPT_SETS`)."""
    if prompt_set not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {prompt_set!r}; expected one of {PROMPT_SETS}")
    shared = prompt_set == "shared-prefix"
    preamble = [{"role": "system", "content": SHARED_SYSTEM_PROMPT}] if shared else []
    return [
        [*preamble, {"role": "user", "content": STORY_PROMPT.format(index=index)}]
        for index in range(count)
    ]


_WORDS = (  # noqa: SIM905 (63 words read better as text)
    "apple river stone garden window paper silver morning candle harbor pencil forest bridge "
    "market yellow kitchen winter orange basket ladder mirror thunder meadow button copper "
    "lantern island pocket rabbit saddle tunnel velvet wagon blanket cabin desert feather "
    "glacier hammer jacket kettle lemon marble needle oyster pepper quilt ribbon shadow timber "
    "umbrella valley walnut anchor barrel cactus dragon engine falcon guitar helmet iron jungle"
).split()
LONE_PROMPT_WORDS = 770
"""About 800 prompt tokens with SmolLM2's chat template (each word is one token)."""


def lone_prompts(count: int, seed: int) -> list[Messages]:
    """``count`` user messages of :data:`LONE_PROMPT_WORDS` random words, drawn from ``seed``.

    Each starts with a word the others do not (for up to 63 messages, one per word), so they
    share nothing beyond the chat template's default system prompt, with one another or with
    the other prompt sets; a new ``seed`` keeps them apart from an earlier run's too.
    """
    rng = random.Random(seed)
    start = rng.randrange(len(_WORDS))
    prompts: list[Messages] = []
    for index in range(count):
        first = _WORDS[(start + index) % len(_WORDS)]
        words = [first, *rng.choices(_WORDS, k=LONE_PROMPT_WORDS - 1)]
        prompts.append([{"role": "user", "content": " ".join(words)}])
    return prompts

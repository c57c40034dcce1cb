"""The wording variants a rendering draws from (all wording is ours): options headers, option markers and end
lines, few-shot prefixes and delimiters, chain-of-thought triggers and answer sentences."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Marker:
    """How options items are marked. ``labels`` is "letters", "numbers" or None (the text itself is the target)."""

    name: str
    item: str  # pattern over {label} and {text}
    joiner: str = "\n"  # between items; a non-newline joiner puts the block on one line
    labels: str | None = None
    target: str = "{label}"  # what the model must answer when labelled



OPTION_HEADERS = (
    "Choices:",
    "CHOICES:",
    "Possible answers:",
    "Pick one of these:",
    "Candidate answers:",
    "Select from:",
    "Your choices are:",
    "Answer choices:",
)

MARKERS = (
    Marker("dash", "- {text}"),
    Marker("star", "* {text}"),
    Marker("plus", "+ {text}"),
    Marker("semicolon", "{text}", joiner="; "),
    Marker("pipe", "{text}", joiner=" | "),
    Marker("letter_paren", "({label}) {text}", labels="letters", target="({label})"),
    Marker("letter_dot", "{label}. {text}", labels="letters"),
    Marker("number_paren", "{label}) {text}", labels="numbers"),
    Marker("number_bracket", "[{label}] {text}", labels="numbers"),
)

# (wording when items are plain text, wording when they are labels); {kind} is "letter" or "number".
OPTION_ENDS = (
    ("", ""),
    ("", ""),
    ("Pick exactly one of these.", "Reply with just the {kind} of your choice."),
    ("Answer with one choice, copied as written.", "Give only the {kind} of your pick."),
)

FEWSHOT_PREFIXES = (
    ("Question: ", "Answer: "),
    ("Input: ", "Output: "),
    ("Problem: ", "Solution: "),
    ("Query: ", "Reply: "),
    ("Prompt: ", "Response: "),
    ("[in] ", "[out] "),
    ("Example: ", "Result: "),
    ("", ""),
)
FEWSHOT_XY_SEPARATORS = ("\n", "\n\n")
FEWSHOT_DELIMITERS = ("\n\n", "\n\n\n", "\n\n---\n\n", "\n\n###\n\n", "\n\n* * *\n\n", "\n\n=====\n\n")

COT_TRIGGERS = (
    "Think it through one step at a time, then answer.",
    "Work out the reasoning before giving the answer.",
    "Explain your reasoning step by step, then give the final answer.",
    "Reason carefully and show your work.",
    "First lay out the reasoning, then state the answer.",
    "Break the problem into small steps before you answer.",
)
COT_TRIGGER_SEPARATORS = ("\n", " ", "\n\n")

# Each ends with the answer followed by a full stop (dropped when the answer already ends in . ! or ?).
COT_ANSWER_SENTENCES = (
    "That means the answer is {answer}.",
    "Putting it together, the answer is {answer}.",
    "The final answer: {answer}.",
    "Therefore the result is {answer}.",
    "All told, the answer comes out to {answer}.",
    "This leads to the answer {answer}.",
    "My answer: {answer}.",
    "Which gives {answer}.",
)

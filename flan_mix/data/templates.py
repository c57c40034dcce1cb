"""Template engine: zero-shot / few-shot, options blocks, chain-of-thought and input inversion.

Pure Python (no TensorFlow, no seqio); the seqio side wraps :func:`format_example` in a map. The families and
their registry are flan_mix.data.template_registry, the wording variants flan_mix.data.template_styles; this
module is the engine's public face and re-exports what a caller needs from both.

Vocabulary
----------
* A **template** (:class:`Template`) is a small data object: an id, the family it belongs to and two
  ``str.format`` patterns over example field names (``inputs``, ``targets``), plus an optional ``preamble``
  rendered once per prompt (the NIv2 task definition) and an ``inverted`` flag.
* A **family** (:class:`Family`) is a named group of templates for one example schema. It says which field holds
  the answer, which the options and which the rationale. Adding a family is data only: build it with
  :func:`family_from_dict` (or :class:`Family` directly) and :func:`register_family`.
* The **template types** are ``zs_opt``, ``zs_noopt``, ``fs_opt`` and ``fs_noopt``: zero- or few-shot, with or
  without the options block.

Special placeholders
--------------------
``{options}`` in an ``inputs`` pattern is where the options block goes. In ``*_noopt`` types, for examples
without options and in inverted templates it renders as nothing and the whitespace around it is tidied. If a
template has no ``{options}`` and an options block is due, the block is appended to the inputs.

Randomness
----------
Every random choice (template, options header/markers/end, few-shot prefixes and delimiters, CoT trigger and
answer sentence) comes from one ``random.Random`` seeded by ``seed`` alone (see :func:`choose`). The choice does
not depend on the template type, so ``zs_opt`` and ``zs_noopt`` of the same seed use the same template.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from flan_mix.data.template_registry import (OPTIONS_FIELD, Family, Template, TemplateFieldError, families,
                                             family_from_dict, get_family, get_template, register_family,
                                             templates_for, unregister_family)
from flan_mix.data.template_styles import (COT_ANSWER_SENTENCES, COT_TRIGGER_SEPARATORS, COT_TRIGGERS,
                                           FEWSHOT_DELIMITERS, FEWSHOT_PREFIXES, FEWSHOT_XY_SEPARATORS, MARKERS,
                                           OPTION_ENDS, OPTION_HEADERS, Marker)

__all__ = [
    "TEMPLATE_TYPES",
    "Template",
    "Family",
    "Marker",
    "Choices",
    "TemplateFieldError",
    "OPTION_HEADERS",
    "MARKERS",
    "OPTION_ENDS",
    "FEWSHOT_PREFIXES",
    "FEWSHOT_XY_SEPARATORS",
    "FEWSHOT_DELIMITERS",
    "COT_TRIGGERS",
    "COT_TRIGGER_SEPARATORS",
    "COT_ANSWER_SENTENCES",
    "families",
    "templates_for",
    "get_family",
    "get_template",
    "register_family",
    "unregister_family",
    "family_from_dict",
    "choose",
    "render",
    "format_example",
    "extract_cot_answer",
]

TEMPLATE_TYPES = ("zs_opt", "zs_noopt", "fs_opt", "fs_noopt")

_EMPTY = "\ue000"  # sentinel for an empty options block, removed with its surrounding whitespace


@dataclass(frozen=True)
class Choices:
    """Everything random about one rendering; :func:`choose` draws it from a seed."""

    template: Template
    header: str
    marker: Marker
    end: tuple[str, str]  # (plain wording, labelled wording); "" for no end line
    prefixes: tuple[str, str]  # few-shot (input prefix, target prefix)
    xy_separator: str  # few-shot: between an exemplar's input and its target
    delimiter: str  # few-shot: between exemplars
    trigger: str  # zero-shot CoT trigger
    trigger_separator: str
    answer_sentence: str  # CoT answer sentence, a pattern over {answer}


# ----------------------------------------------------------------------------------------------------------------
# Choosing and rendering
# ----------------------------------------------------------------------------------------------------------------


def choose(seed: int, *, family: str, inverted: bool = False, template_id: str | None = None) -> Choices:
    """Draws every random choice of a rendering from ``seed`` (a local RNG; same seed -> same choices).

    The draws happen in a fixed order whatever gets used, so they do not depend on the template type.
    ``template_id`` pins the template (its ``inverted`` flag must agree with ``inverted`` if that is set).
    """
    fam = get_family(family)
    seed = _check_seed(seed)
    rng = random.Random(f"flan_mix.templates:{seed}")
    pool = fam.inverted_templates() if inverted else fam.plain_templates()
    if inverted and not pool:
        raise ValueError(f"family {family!r} has no inverted templates; invertible families: "
                         f"{[f for f in families() if get_family(f).invertible]}")
    t_idx = rng.randrange(len(pool))
    picks = dict(
        header=rng.choice(OPTION_HEADERS),
        marker=rng.choice(MARKERS),
        end=rng.choice(OPTION_ENDS),
        prefixes=rng.choice(FEWSHOT_PREFIXES),
        xy_separator=rng.choice(FEWSHOT_XY_SEPARATORS),
        delimiter=rng.choice(FEWSHOT_DELIMITERS),
        trigger=rng.choice(COT_TRIGGERS),
        trigger_separator=rng.choice(COT_TRIGGER_SEPARATORS),
        answer_sentence=rng.choice(COT_ANSWER_SENTENCES),
    )
    if template_id is not None:
        template = get_template(template_id)
        if template.family != family:
            raise ValueError(f"template {template_id!r} belongs to family {template.family!r}, not {family!r}")
        if inverted and not template.inverted:
            raise ValueError(f"inverted=True but template {template_id!r} is not an inverted template")
    else:
        template = pool[t_idx]
    return Choices(template=template, **picks)


def format_example(example: Mapping[str, Any], *, family: str, template_type: str, seed: int,
                   exemplars: Sequence[Mapping[str, Any]] = (), cot: bool = False,
                   inverted: bool = False, template_id: str | None = None) -> dict:
    """Renders one example.

    Args:
      example: field name -> value, in the family's schema (see ``get_family(family).fields``).
      family: a registered template family (see :func:`families`).
      template_type: one of TEMPLATE_TYPES. ``zs_*`` ignore ``exemplars``; ``fs_*`` need at least one.
      seed: makes every random choice (see :func:`choose`).
      exemplars: few-shot examples, shown in the given order before the query, with the same template.
      cot: chain-of-thought (implied by families with ``always_cot``): zero-shot gets a trigger after the inputs,
        targets are the rationale plus an answer sentence; few-shot exemplars show rationale and answer.
      inverted: use one of the family's inverted templates (input inversion; CoT and dialog have them).
      template_id: pin a template instead of drawing one.

    Returns:
      {"inputs", "targets", "template_id", "template_type"}.
    """
    choices = choose(seed, family=family, inverted=inverted, template_id=template_id)
    return render(example, choices, template_type=template_type, exemplars=exemplars, cot=cot)


def render(example: Mapping[str, Any], choices: Choices, *, template_type: str,
           exemplars: Sequence[Mapping[str, Any]] = (), cot: bool = False) -> dict:
    """Renders with explicit :class:`Choices` (what :func:`format_example` does after :func:`choose`)."""
    if template_type not in TEMPLATE_TYPES:
        raise ValueError(f"unknown template type {template_type!r}; valid types: {list(TEMPLATE_TYPES)}")
    t = choices.template
    fam = get_family(t.family)
    few_shot = template_type.startswith("fs_")
    with_options = template_type.endswith("_opt") and not t.inverted
    cot = (cot or fam.always_cot) and not t.inverted
    if cot and fam.rationale_field is None:
        raise ValueError(f"family {fam.name!r} has no rationale field, so it cannot render chain-of-thought "
                         f"(cot=True); families with rationales: "
                         f"{[f for f in families() if get_family(f).rationale_field]}")
    if few_shot and not exemplars:
        raise ValueError(f"template type {template_type!r} (family {fam.name!r}, template {t.id!r}) needs at "
                         "least one exemplar; pass exemplars=... or use a zs_* type")

    q_in, q_tgt, q_values = _render_one(example, fam, choices, with_options, cot, "example")
    preamble = _format(t.preamble, q_values, fam, t, "example") if t.preamble else ""

    if not few_shot:
        inputs = q_in
        if cot:
            inputs = f"{inputs}{choices.trigger_separator}{choices.trigger}"
        if preamble:
            inputs = f"{preamble}\n\n{inputs}"
        return {"inputs": inputs, "targets": q_tgt, "template_id": t.id, "template_type": template_type}

    x_pre, y_pre = choices.prefixes
    blocks = []
    for i, ex in enumerate(exemplars):
        e_in, e_tgt, _ = _render_one(ex, fam, choices, with_options, cot, f"exemplar {i}", with_preamble=False)
        blocks.append(f"{x_pre}{e_in}{choices.xy_separator}{y_pre}{e_tgt}")
    blocks.append(f"{x_pre}{q_in}{choices.xy_separator}{y_pre}".rstrip())
    inputs = choices.delimiter.join(blocks)
    if preamble:
        inputs = f"{preamble}\n\n{inputs}"
    return {"inputs": inputs, "targets": q_tgt, "template_id": t.id, "template_type": template_type}


def extract_cot_answer(text: str) -> str | None:
    """The answer from a CoT target/prediction that ends in one of COT_ANSWER_SENTENCES, else None."""
    text = text.rstrip()
    best: str | None = None
    best_start = -1
    for pattern in _ANSWER_REGEXES:
        for m in pattern.finditer(text):
            if m.end() == len(text) and m.start() > best_start:
                best, best_start = m.group("answer").strip(), m.start()
    return best


# ----------------------------------------------------------------------------------------------------------------
# Internals
# ----------------------------------------------------------------------------------------------------------------

_ANSWER_REGEXES = tuple(
    re.compile(re.escape(s.replace("{answer}.", "\x00")).replace("\x00", r"(?P<answer>.+?)\.?") + r"$", re.S)
    for s in COT_ANSWER_SENTENCES
)


def _check_seed(seed: Any) -> int:
    try:
        return int(seed.__index__())
    except (AttributeError, TypeError):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}") from None


def _label(i: int, kind: str) -> str:
    if kind == "numbers":
        return str(i + 1)
    s = ""  # letters: A..Z, then AA, AB, ...
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(ord("A") + r) + s
    return s


def _options_block(options: Sequence[str], choices: Choices) -> str:
    m = choices.marker
    items = [m.item.format(label=_label(i, m.labels) if m.labels else "", text=o) for i, o in enumerate(options)]
    inline = "\n" not in m.joiner
    block = choices.header + (" " if inline else "\n") + m.joiner.join(items)
    end = choices.end[1] if m.labels else choices.end[0]
    if end:
        block += "\n" + end.format(kind="letter" if m.labels == "letters" else "number")
    return block


def _get_options(example: Mapping[str, Any], fam: Family, t: Template, where: str, required: bool) -> list[str]:
    if fam.options_field is None:
        return []
    if fam.options_field not in example:
        if required:
            raise TemplateFieldError(fam.name, t.id, fam.options_field, where, example.keys())
        return []
    opts = example[fam.options_field]
    if opts is None:
        return []
    if isinstance(opts, (str, bytes)) or not isinstance(opts, Sequence):
        raise TypeError(f"family {fam.name!r}, template {t.id!r}: the {where}'s field {fam.options_field!r} must "
                        f"be a list or tuple of str, got {type(opts).__name__} {opts!r}")
    return [str(o) for o in opts]


def _render_one(example: Mapping[str, Any], fam: Family, choices: Choices, with_options: bool, cot: bool,
                where: str, with_preamble: bool = True) -> tuple[str, str, dict]:
    t = choices.template
    if not isinstance(example, Mapping):
        raise TypeError(f"family {fam.name!r}, template {t.id!r}: the {where} must be a mapping of field names, "
                        f"got {type(example).__name__}")
    for f in t.fields(with_preamble=with_preamble):
        if f not in example:
            raise TemplateFieldError(fam.name, t.id, f, where, example.keys())
    values = dict(example)

    options = _get_options(example, fam, t, where, required=with_options and fam.options_required) \
        if with_options else []
    if options:
        ans_field = fam.answer_field
        if ans_field is None or ans_field not in example:
            raise TemplateFieldError(fam.name, t.id, ans_field or "answer", where, example.keys())
        answer = str(example[ans_field])
        if answer not in options:
            raise ValueError(f"family {fam.name!r}, template {t.id!r}: the {where}'s answer {answer!r} "
                             f"(field {ans_field!r}) is not one of its options {options}; fix the data or "
                             "use a *_noopt template type")
        if choices.marker.labels:
            label = _label(options.index(answer), choices.marker.labels)
            values[ans_field] = choices.marker.target.format(label=label)
        block = _options_block(options, choices)
    else:
        block = ""

    inputs = _format(t.inputs, values, fam, t, where, block)
    if block and "{options}" not in t.inputs:
        inputs = f"{inputs}\n{block}"

    if cot:
        r_field, a_field = fam.rationale_field, fam.answer_field
        for f in (r_field, a_field):
            if f not in example:
                raise TemplateFieldError(fam.name, t.id, f, where, example.keys())
        rationale = str(example[r_field]).strip()
        if not rationale:
            raise ValueError(f"family {fam.name!r}, template {t.id!r}: chain-of-thought needs a rationale, but the "
                             f"{where}'s field {r_field!r} is empty; render it with cot=False instead")
        answer = str(values[a_field]).strip()
        if not answer:
            raise ValueError(f"family {fam.name!r}, template {t.id!r}: chain-of-thought needs an answer, but the "
                             f"{where}'s field {a_field!r} is empty")
        sentence = choices.answer_sentence
        if answer[-1] in ".!?":
            sentence = sentence.replace("{answer}.", "{answer}")
        targets = f"{rationale} {sentence.format(answer=answer)}"
    else:
        targets = _format(t.targets, values, fam, t, where)
    return inputs, targets, values


def _format(pattern: str, values: dict, fam: Family, t: Template, where: str, block: str = "") -> str:
    values[OPTIONS_FIELD] = block or _EMPTY
    try:
        out = pattern.format_map(values)
    except (KeyError, AttributeError, IndexError) as e:  # e.g. "{a.b}" or "{a[3]}" on a value lacking it
        raise TemplateFieldError(fam.name, t.id, f"{e.args[0] if e.args else e}", where, values.keys()) from e
    if _EMPTY in out:
        out = _tidy_empty(out)
    return out


def _tidy_empty(s: str) -> str:
    """Removes an empty options block and the whitespace that only served to lay it out: at the end of the text
    with all whitespace around it, alone on its line with the line's indentation and the whitespace after it, or
    inline with the spaces before it. (String operations, not regexes: this runs for every rendered text.)"""
    while _EMPTY in s:
        before, _, after = s.partition(_EMPTY)
        if not after.strip():
            s = before.rstrip()
            continue
        head = before.rstrip(" \t")
        if not head or head.endswith("\n"):
            s = head + after.lstrip()
        else:
            s = head + after
    return s

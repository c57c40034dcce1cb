"""Template engine: zero-shot / few-shot, options blocks, chain-of-thought and input inversion.

Pure Python (no TensorFlow, no seqio); the seqio side wraps :func:`format_example` in a map.

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

import functools
import random
import re
import string
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "TEMPLATE_TYPES",
    "INVERSION_WEIGHT",
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

# Share of input-inverted examples for the families that have inverted templates (CoT and dialog). The mixture
# side applies it (e.g. an inverted task at 0.3 of the family's rate); format_example takes `inverted=` explicitly.
INVERSION_WEIGHT = 0.3

_OPTIONS = "options"  # the special placeholder name
_EMPTY = "\ue000"  # sentinel for an empty options block, removed with its surrounding whitespace


# ----------------------------------------------------------------------------------------------------------------
# Data objects
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """One prompt pattern. ``inputs``/``targets``/``preamble`` are ``str.format`` patterns over field names."""

    id: str
    family: str
    inputs: str
    targets: str
    preamble: str = ""  # rendered once per prompt from the query example (zero-shot: before inputs; few-shot:
    #                     before all exemplars). NIv2 puts the task definition here.
    inverted: bool = False  # input inversion: asks for what the plain templates give (e.g. the question)

    def fields(self, *, with_preamble: bool = True) -> tuple[str, ...]:
        """Example field names the patterns read (``{options}`` excluded)."""
        pats = (self.inputs, self.targets) + ((self.preamble,) if with_preamble else ())
        out: list[str] = []
        for p in pats:
            for f in _pattern_fields(p):
                if f != _OPTIONS and f not in out:
                    out.append(f)
        return tuple(out)


@dataclass(frozen=True)
class Family:
    """A template family: an example schema and its templates."""

    name: str
    templates: tuple[Template, ...]
    fields: tuple[str, ...]  # the documented example schema (what loaders must provide)
    answer_field: str | None = "answer"  # becomes the option label when markers are labels
    options_field: str | None = None  # list/tuple of str; the correct answer must be one of them
    options_required: bool = False  # *_opt types need the options field present (it may be empty)
    rationale_field: str | None = None  # needed for CoT
    always_cot: bool = False  # the CoT family renders every example as CoT
    description: str = ""

    @property
    def invertible(self) -> bool:
        return any(t.inverted for t in self.templates)

    def plain_templates(self) -> tuple[Template, ...]:
        return tuple(t for t in self.templates if not t.inverted)

    def inverted_templates(self) -> tuple[Template, ...]:
        return tuple(t for t in self.templates if t.inverted)


@dataclass(frozen=True)
class Marker:
    """How options items are marked. ``labels`` is "letters", "numbers" or None (the text itself is the target)."""

    name: str
    item: str  # pattern over {label} and {text}
    joiner: str = "\n"  # between items; a non-newline joiner puts the block on one line
    labels: str | None = None
    target: str = "{label}"  # what the model must answer when labelled


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


class TemplateFieldError(KeyError):
    """A template needs a field the example does not have."""

    def __init__(self, family: str, template_id: str, field: str, where: str = "example",
                 available: Iterable[str] = ()):
        self.family, self.template_id, self.field, self.where = family, template_id, field, where
        have = ", ".join(sorted(map(str, available))) or "none"
        msg = (f"family {family!r}, template {template_id!r}: the {where} has no field {field!r} "
               f"(fields present: {have}). Map the loader's output onto the family schema "
               f"{list(_REGISTRY[family].fields) if family in _REGISTRY else []}.")
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


# ----------------------------------------------------------------------------------------------------------------
# Style variants (all wording is ours)
# ----------------------------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------------

_REGISTRY: dict[str, Family] = {}
_TEMPLATES: dict[str, Template] = {}
_FORMATTER = string.Formatter()


@functools.lru_cache(maxsize=None)
def _pattern_fields(pattern: str) -> tuple[str, ...]:
    """Root field names of a str.format pattern ("a.b" and "a[0]" give "a")."""
    out: list[str] = []
    for _, name, spec, _ in _FORMATTER.parse(pattern):
        if name is None:
            continue
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if root == "" or root.isdigit():
            raise ValueError(f"template pattern {pattern!r} has a positional field {{{name}}}; "
                             "name the example field instead, e.g. {question}")
        if spec and "{" in spec:
            raise ValueError(f"template pattern {pattern!r}: nested fields in format specs are not supported")
        if root not in out:
            out.append(root)
    return tuple(out)


def _validate_family(fam: Family) -> None:
    where = f"family {fam.name!r}"
    if not fam.plain_templates():
        raise ValueError(f"{where} has no (non-inverted) templates")
    seen: set[str] = set()
    for t in fam.templates:
        if t.family != fam.name:
            raise ValueError(f"{where}: template {t.id!r} says family {t.family!r}")
        if t.id in seen or t.id in _TEMPLATES:
            raise ValueError(f"{where}: template id {t.id!r} is not unique")
        seen.add(t.id)
        for label, pat in (("inputs", t.inputs), ("targets", t.targets), ("preamble", t.preamble)):
            try:
                names = _pattern_fields(pat)
            except ValueError as e:
                raise ValueError(f"{where}, template {t.id!r}, {label}: {e}") from None
            if _OPTIONS in names and label != "inputs":
                raise ValueError(f"{where}, template {t.id!r}: {{options}} may only appear in inputs")
        if "{options" in t.inputs and "{options}" not in t.inputs:
            raise ValueError(f"{where}, template {t.id!r}: write the options block as plain {{options}}")
    for f in (fam.answer_field, fam.options_field, fam.rationale_field):
        if f is not None and f not in fam.fields:
            raise ValueError(f"{where}: field {f!r} is not in its schema {list(fam.fields)}")
    if fam.always_cot and fam.rationale_field is None:
        raise ValueError(f"{where}: always_cot needs a rationale_field")


def register_family(family: Family, *, replace: bool = False) -> Family:
    """Adds a family to the registry. Template ids must be unique across all families."""
    if family.name in _REGISTRY:
        if not replace:
            raise ValueError(f"template family {family.name!r} is already registered (pass replace=True)")
        for t in _REGISTRY.pop(family.name).templates:
            _TEMPLATES.pop(t.id, None)
    _validate_family(family)
    _REGISTRY[family.name] = family
    for t in family.templates:
        _TEMPLATES[t.id] = t
    return family


def family_from_dict(spec: Mapping[str, Any]) -> Family:
    """Builds a family from plain data (e.g. a JSON/YAML entry), so adding a family needs no code.

    ``spec`` keys: name, fields, templates (list of [inputs, targets] pairs or dicts with inputs/targets/preamble),
    optional inverted (same shape), answer_field, options_field, options_required, rationale_field, always_cot,
    description. Ids become ``<name>/zs/<i>`` and ``<name>/inv/<i>``.
    """
    name = spec["name"]

    def build(items: Sequence[Any], kind: str, inverted: bool) -> list[Template]:
        out = []
        for i, item in enumerate(items):
            if isinstance(item, Mapping):
                inputs, targets, pre = item["inputs"], item["targets"], item.get("preamble", "")
            else:
                inputs, targets = item
                pre = ""
            out.append(Template(f"{name}/{kind}/{i}", name, inputs, targets, preamble=pre, inverted=inverted))
        return out

    known = {"name", "fields", "templates", "inverted", "answer_field", "options_field", "options_required",
             "rationale_field", "always_cot", "description"}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"family spec {name!r}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    return Family(
        name=name,
        templates=tuple(build(spec["templates"], "zs", False) + build(spec.get("inverted", ()), "inv", True)),
        fields=tuple(spec["fields"]),
        answer_field=spec.get("answer_field", "answer"),
        options_field=spec.get("options_field"),
        options_required=bool(spec.get("options_required", False)),
        rationale_field=spec.get("rationale_field"),
        always_cot=bool(spec.get("always_cot", False)),
        description=spec.get("description", ""),
    )


def unregister_family(name: str) -> Family:
    """Removes a family (and its template ids) from the registry; returns it."""
    fam = get_family(name)
    del _REGISTRY[name]
    for t in fam.templates:
        _TEMPLATES.pop(t.id, None)
    return fam


def families() -> list[str]:
    """Names of the registered template families, sorted."""
    return sorted(_REGISTRY)


def get_family(family: str) -> Family:
    try:
        return _REGISTRY[family]
    except KeyError:
        raise ValueError(f"unknown template family {family!r}; valid families: {families()}") from None


def templates_for(family: str) -> list[Template]:
    """All templates of a family, plain ones first, then inverted ones."""
    return list(get_family(family).templates)


def get_template(template_id: str) -> Template:
    try:
        return _TEMPLATES[template_id]
    except KeyError:
        fam = template_id.split("/", 1)[0]
        hint = [t.id for t in _REGISTRY[fam].templates] if fam in _REGISTRY else families()
        raise ValueError(f"unknown template id {template_id!r}; valid: {hint}") from None


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
                         f"{[f for f in families() if _REGISTRY[f].invertible]}")
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
                         f"{[f for f in families() if _REGISTRY[f].rationale_field]}")
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
    values[_OPTIONS] = block or _EMPTY
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


# ----------------------------------------------------------------------------------------------------------------
# Families (our own wording). More families are data: see family_from_dict.
# ----------------------------------------------------------------------------------------------------------------

_BUILTIN_FAMILIES = (
    {
        "name": "generic_qa",
        "description": "Free-form question answering; options (if any) are appended.",
        "fields": ["question", "answer", "options", "rationale"],
        "options_field": "options",
        "options_required": True,
        "rationale_field": "rationale",
        "templates": [
            ["{question}\n\n{options}", "{answer}"],
            ["Question: {question}\n{options}\nAnswer:", "{answer}"],
            ["Answer the following question.\n\n{question}\n\n{options}", "{answer}"],
            ["{question}\n{options}\nWhat is the answer?", "{answer}"],
            ["Please respond to this question: {question}\n{options}", "{answer}"],
            ["Here is a question for you.\n{question}\n{options}\nYour answer:", "{answer}"],
            ["Reply briefly to the question below.\n\n{question}\n\n{options}", "{answer}"],
            ["{question}\n{options}\nRespond with the answer only.", "{answer}"],
            ["Can you work this out? {question}\n{options}", "{answer}"],
            ["Someone asks you: \"{question}\"\n{options}\nWhat do you tell them?", "{answer}"],
        ],
    },
    {
        "name": "generic_mc",
        "description": "Multiple choice: the correct answer is one of the options.",
        "fields": ["question", "answer", "options", "rationale"],
        "options_field": "options",
        "options_required": True,
        "rationale_field": "rationale",
        "templates": [
            ["{question}\n\n{options}", "{answer}"],
            ["Question: {question}\n\n{options}\n\nAnswer:", "{answer}"],
            ["Find the right answer to this question.\n\n{question}\n\n{options}", "{answer}"],
            ["{question}\n{options}\nWhich answer is correct?", "{answer}"],
            ["Read the question and decide on the best answer.\n{question}\n{options}", "{answer}"],
            ["Test question: {question}\n{options}\nThe correct answer is:", "{answer}"],
            ["{question}\n\n{options}\n\nGive the best answer.", "{answer}"],
            ["Only one answer to the question below is right.\n\n{question}\n{options}", "{answer}"],
            ["Here is a quiz item.\n{question}\n{options}\nYour pick:", "{answer}"],
            ["Decide which answer fits: {question}\n{options}", "{answer}"],
        ],
    },
    {
        "name": "cot",
        "description": "Chain of thought: targets are the rationale plus an answer sentence. "
                       "Inverted templates ask for the question from the answer and rationale.",
        "fields": ["question", "answer", "rationale", "options"],
        "options_field": "options",
        "rationale_field": "rationale",
        "always_cot": True,
        "templates": [
            ["{question}\n{options}", "{answer}"],
            ["Question: {question}\n{options}", "{answer}"],
            ["Solve the following.\n\n{question}\n\n{options}", "{answer}"],
            ["{question}\n{options}\nWhat is the answer?", "{answer}"],
            ["Here is a problem: {question}\n{options}", "{answer}"],
            ["Consider this question.\n{question}\n{options}", "{answer}"],
            ["Puzzle: {question}\n{options}", "{answer}"],
            ["{question}\n\n{options}\n\nFind the answer.", "{answer}"],
            ["Figure out the answer to this: {question}\n{options}", "{answer}"],
            ["A student is asked: \"{question}\"\n{options}\nHow should they answer?", "{answer}"],
        ],
        "inverted": [
            ["Reasoning: {rationale}\nAnswer: {answer}\n\nWhat question could this reasoning be answering?",
             "{question}"],
            ["Write a question that fits this answer and explanation.\n\nExplanation: {rationale}\n"
             "Answer: {answer}", "{question}"],
            ["The answer is {answer}, because: {rationale}\nWhat was the question?", "{question}"],
            ["Someone reasoned as follows: \"{rationale}\" and concluded {answer}. Reconstruct the question "
             "they were solving.", "{question}"],
            ["Given the answer \"{answer}\" and the reasoning behind it, invent a matching question.\n"
             "{rationale}", "{question}"],
        ],
    },
    {
        "name": "niv2",
        "description": "Natural Instructions v2: the task definition is the preamble, positive examples are the "
                       "few-shot exemplars. Options (the task's label set, if the loader gives one) are optional.",
        "fields": ["definition", "input", "output", "options"],
        "answer_field": "output",
        "options_field": "options",
        "templates": [
            {"preamble": "{definition}", "inputs": "{input}\n{options}", "targets": "{output}"},
            {"preamble": "Task: {definition}", "inputs": "Input: {input}\n{options}\nOutput:",
             "targets": "{output}"},
            {"preamble": "Instructions: {definition}", "inputs": "{input}\n\n{options}", "targets": "{output}"},
            {"preamble": "Read the task description, then handle the input.\n{definition}",
             "inputs": "Input: {input}\n{options}", "targets": "{output}"},
            {"preamble": "Task description:\n{definition}", "inputs": "{input}\n{options}\nAnswer:",
             "targets": "{output}"},
            {"preamble": "Follow these instructions.\n\n{definition}", "inputs": "Here is the input: {input}\n"
             "{options}", "targets": "{output}"},
            {"preamble": "{definition}\nDo this for the input that follows.", "inputs": "{input}\n{options}",
             "targets": "{output}"},
            {"preamble": "Your job: {definition}", "inputs": "Case: {input}\n{options}\nResult:",
             "targets": "{output}"},
            {"preamble": "Definition: {definition}", "inputs": "{input}\n\n{options}\n\nOutput:",
             "targets": "{output}"},
            {"preamble": "You are given a task.\n{definition}", "inputs": "Now do it for this input.\n{input}\n"
             "{options}", "targets": "{output}"},
        ],
    },
    {
        "name": "dialog",
        "description": "Next-turn dialog: context is the conversation so far. Inverted templates recover the "
                       "conversation from the reply.",
        "fields": ["context", "response"],
        "answer_field": "response",
        "templates": [
            ["{context}", "{response}"],
            ["Conversation so far:\n{context}\n\nNext turn:", "{response}"],
            ["{context}\n\nWhat would be a fitting next reply?", "{response}"],
            ["Continue the dialog.\n\n{context}", "{response}"],
            ["Here is a chat between people.\n{context}\nWrite the next message.", "{response}"],
            ["Read the exchange and answer as the next speaker.\n\n{context}", "{response}"],
            ["{context}\n\nRespond to the last message.", "{response}"],
            ["Dialog history:\n{context}\nReply:", "{response}"],
            ["Suggest the next line of this conversation.\n{context}", "{response}"],
            ["{context}\nHow might the conversation go on?", "{response}"],
        ],
        "inverted": [
            ["Here is a reply from a conversation:\n{response}\n\nWrite the conversation that leads up to it.",
             "{context}"],
            ["Invent a dialog history that this message would answer.\n\nMessage: {response}", "{context}"],
            ["The next line of a chat was: \"{response}\"\nWhat was said before it?", "{context}"],
            ["Reconstruct the earlier turns of a dialog ending with this reply.\n{response}", "{context}"],
            ["Reply: {response}\n\nWrite the conversation this reply continues.", "{context}"],
        ],
    },
)

for _spec in _BUILTIN_FAMILIES:
    register_family(family_from_dict(_spec))
del _spec

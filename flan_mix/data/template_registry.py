"""Template families and their registry: the data objects (:class:`Template`, :class:`Family`), validation, and
lookup by family name or template id. Adding a family is data only: :func:`family_from_dict` builds one from
plain data (e.g. a JSON/YAML entry) and :func:`register_family` adds it. The engine's own families
(flan_mix.data.template_families) are registered on import."""
from __future__ import annotations

import functools
import re
import string
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from flan_mix.data.template_families import BUILTIN_FAMILY_SPECS

OPTIONS_FIELD = "options"  # the special placeholder: where the options block goes in an inputs pattern


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
                if f != OPTIONS_FIELD and f not in out:
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
            if OPTIONS_FIELD in names and label != "inputs":
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


for _spec in BUILTIN_FAMILY_SPECS:
    register_family(family_from_dict(_spec))
del _spec

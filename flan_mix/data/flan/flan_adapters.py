"""Field adapters: a raw loader example (strings / lists of strings) -> its template family's schema.

One adapter per template family (and per dialog dataset). An adapter returns None for a raw example without a
usable label or answer (e.g. snli's -1); the renderer counts these and logs the count per task at the end of the
stream, so nothing is dropped silently.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from flan_mix.data.flan import catalog as catalog_lib


def as_str(v: Any) -> str:
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return as_str(v.item())
    return str(v)


def as_str_list(v: Any) -> list[str]:
    if isinstance(v, (list, tuple, np.ndarray)):
        return [as_str(x) for x in v]
    return [as_str(v)]


def _label(raw: Mapping[str, Any], field: str = "label") -> int:
    return int(float(as_str(raw[field])))


def _pick(options: Sequence[str], idx: int) -> Optional[str]:
    return options[idx] if 0 <= idx < len(options) else None


_NLI3 = ["yes", "it is not possible to tell", "no"]
_YN = ["no", "yes"]


def _nli(premise_key: str, order: Sequence[int], n: int = 3):
    opts = _NLI3 if n == 3 else ["yes", "no"]

    def fn(raw):
        lab = _label(raw)
        if lab < 0 or lab >= len(order):
            return None
        return {"premise": as_str(raw[premise_key]), "hypothesis": as_str(raw.get("hypothesis", raw.get("sentence2", ""))),
                "options": opts, "answer": opts[order[lab]]}
    return fn


def _wnli(raw):
    lab = _label(raw)  # glue/wnli: 1 = entailment
    return {"premise": as_str(raw["sentence1"]), "hypothesis": as_str(raw["sentence2"]), "options": ["yes", "no"],
            "answer": "yes" if lab == 1 else "no"}


def _para(a: str, b: str):
    def fn(raw):
        lab = _label(raw)
        if lab not in (0, 1):
            return None
        return {"sentence1": as_str(raw[a]), "sentence2": as_str(raw[b]), "options": _YN, "answer": _YN[lab]}
    return fn


def _senti(text: str, label: str = "label", mapping: Optional[Mapping[int, str]] = None):
    mapping = mapping or {0: "negative", 1: "positive"}
    opts = list(dict.fromkeys(mapping.values()))

    def fn(raw):
        ans = mapping.get(_label(raw, label))
        if ans is None:
            return None
        return {"text": as_str(raw[text]), "options": opts, "answer": ans}
    return fn


_AG = ["World", "Sports", "Business", "Science/Tech"]
_TREC = ["description", "entity", "abbreviation", "human", "number", "location"]


def _ag(raw):
    ans = _pick(_AG, _label(raw))
    return None if ans is None else {"text": f"{as_str(raw['title'])}\n{as_str(raw['description'])}", "options": _AG,
                                     "answer": ans}


def _trec(raw):
    ans = _pick(_TREC, _label(raw))
    return None if ans is None else {"text": as_str(raw["text"]), "options": _TREC, "answer": ans}


def _classify(text_fn: Callable, question: str | Callable, options: Sequence[str], answer_fn: Callable):
    def fn(raw):
        ans = answer_fn(raw)
        if ans is None:
            return None
        q = question(raw) if callable(question) else question
        return {"text": text_fn(raw), "question": q, "options": list(options), "answer": ans}
    return fn


def _summ(text: str, summary: str, joiner: str = "\n"):
    def fn(raw):
        t = raw[text]
        return {"text": joiner.join(as_str_list(t)) if not isinstance(t, (str, bytes)) else as_str(t),
                "summary": " ".join(as_str_list(raw[summary])) if not isinstance(raw[summary], (str, bytes))
                else as_str(raw[summary])}
    return fn


_LANG = {"en": "English", "fr": "French", "de": "German", "cs": "Czech", "fi": "Finnish", "ro": "Romanian",
         "ru": "Russian", "tr": "Turkish", "es": "Spanish"}


def _translate(raw, rng: random.Random):
    other = next(k for k in raw if k != "en")
    src, tgt = ("en", other) if rng.random() < 0.5 else (other, "en")
    return {"source": as_str(raw[src]), "target": as_str(raw[tgt]), "src_lang": _LANG.get(src, src),
            "tgt_lang": _LANG.get(tgt, tgt)}


def _rqa(context: str, question: str, answer_fn: Callable, options_fn: Optional[Callable] = None):
    def fn(raw):
        ans = answer_fn(raw)
        if ans is None or ans == "":
            return None
        out = {"context": as_str(raw[context]), "question": as_str(raw[question]), "answer": ans}
        if options_fn is not None:
            opts = options_fn(raw)
            if ans in opts:
                out["options"] = opts
        return out
    return fn


def _first(field: str, empty: Optional[str] = None):
    def fn(raw):
        vals = as_str_list(raw[field])
        return vals[0] if vals and vals[0] else empty
    return fn


def _qa(q: str, a: str):
    def fn(raw):
        ans = as_str_list(raw[a])
        return None if not ans or not ans[0] else {"question": as_str(raw[q]), "answer": ans[0], "options": []}
    return fn


def _mc(question_fn: Callable, options_fn: Callable, answer_idx_fn: Callable):
    def fn(raw):
        opts = options_fn(raw)
        ans = _pick(opts, answer_idx_fn(raw))
        return None if ans is None else {"question": question_fn(raw), "options": opts, "answer": ans}
    return fn


def _d2t(data: str, prefix: str = ""):
    def fn(raw):
        d = raw[data]
        text = ", ".join(as_str_list(d)) if not isinstance(d, (str, bytes)) else as_str(d)
        return {"data": prefix + text, "text": as_str(raw["target"])}
    return fn


# Separator of the items of one triple, as the TFDS source joins a rank-2 feature's rows (sources.tfds.ROW_JOINER).
_TRIPLE_JOINER = " | "


def _dart(raw):
    """DART triples -> one "subject | relation | object" line per triple.

    A tripleset read from a rank-2 feature arrives as rows already joined with " | " (the TFDS source flattens
    rank-2 string features that way); a row given as a list is joined here. TFDS's gem/dart builder itself stores
    each triple pre-joined with single spaces, which cannot be split back reliably (entity names contain spaces),
    so such rows are kept as they are.
    """
    rows = raw["tripleset"]
    if isinstance(rows, (str, bytes, np.bytes_)):
        rows = [rows]
    lines = []
    for row in rows:
        if isinstance(row, (list, tuple)) or (isinstance(row, np.ndarray) and row.ndim == 1):
            line = _TRIPLE_JOINER.join(x.strip() for x in as_str_list(row))
        else:
            line = as_str(row).strip()
        if line:
            lines.append(line)
    if not lines:
        return None
    return {"data": "\n".join(lines), "text": as_str(raw["target"])}


def _coqa(raw, rng: random.Random):
    """One CoQA story -> one turn of its conversation, drawn with the example's rng.

    The turns before the drawn one go into the context as the conversation so far, so the model learns to answer
    follow-up questions ("What did he do next?") that only make sense given the earlier turns. Turns without a
    question or an answer cannot be the drawn one but still count as history.
    """
    questions, answers = as_str_list(raw["questions"]), as_str_list(raw["answers"])
    turns = list(zip(questions, answers))
    usable = [i for i, (q, a) in enumerate(turns) if q.strip() and a.strip()]
    if not usable:
        return None
    i = usable[rng.randrange(len(usable))]
    context = as_str(raw["story"])
    if i:
        history = "\n".join(f"Q: {q}\nA: {a}" for q, a in turns[:i])
        context = f"{context}\n\nConversation so far:\n{history}"
    return {"context": context, "question": turns[i][0], "answer": turns[i][1]}


def _p3(raw):
    """A P3 example, with its answer choices (if the subset has them) as the options of *_opt template types.

    The options are kept only when the target is one of the choices (compared without surrounding whitespace);
    otherwise the template renderer could not mark the answer, so the example renders as a plain prompt.
    """
    answer = " ".join(as_str_list(raw["targets"]))
    choices = [c.strip() for c in as_str_list(raw["options"])] if "options" in raw else []
    choices = [c for c in choices if c]
    if answer.strip() in choices:
        # The choice's own text, so that zs_opt and zs_noopt share one target.
        return {"prompt": as_str(raw["inputs"]), "answer": answer.strip(), "options": choices}
    return {"prompt": as_str(raw["inputs"]), "answer": answer, "options": []}


def _rewrite(kind: str):
    def fn(raw, rng):
        text = as_str(raw["en"] if "en" in raw else raw["passage"])
        if kind == "fix_punct":
            src = "".join(c for c in text if c not in ",.;:!?\"'")
            return {"instruction": "Put the punctuation back into this text.", "text": src, "target": text}
        if kind == "true_case":
            return {"instruction": "Restore the capital letters in this text.", "text": text.lower(),
                    "target": text}
        if kind == "word_segment":
            return {"instruction": "Insert the spaces between the words.", "text": text.replace(" ", ""),
                    "target": text}
        words = text.rsplit(" ", 1)
        if len(words) < 2:
            return None
        return {"instruction": "Predict the word that ends this passage.", "text": words[0], "target": words[1]}
    return fn


def _qrecc(raw):
    ctx = as_str_list(raw["context"]) + [as_str(raw["question"])]
    return {"context": "\n".join(c for c in ctx if c), "response": as_str(raw["answer"])}


def _wiki_dialog(raw):
    utt = [u for u in as_str_list(raw["utterances"]) if u]
    if len(utt) < 2:
        return None
    return {"context": "\n".join(utt[:-1]), "response": utt[-1]}


def _letter_idx(key: str, labels: str):
    def fn(raw):
        k = as_str(raw[key]).strip()
        return labels.index(k) if k in labels else -1
    return fn


_ADAPTERS: dict[str, Callable] = {
    "anli": _nli("context", [0, 1, 2]), "mnli": _nli("premise", [0, 1, 2]), "snli": _nli("premise", [0, 1, 2]),
    "cb": _nli("premise", [0, 2, 1]), "rte": _nli("premise", [0, 1], n=2), "wnli": _wnli,
    "glue_mrpc": _para("sentence1", "sentence2"), "glue_qqp": _para("question1", "question2"),
    "paws_wiki": _para("sentence1", "sentence2"),
    "imdb_reviews": _senti("text"), "sst2": _senti("sentence"), "yelp_polarity_reviews": _senti("text"),
    "sentiment140": _senti("text", "polarity", {0: "negative", 2: "neutral", 4: "positive"}),
    "ag_news_subset": _ag, "trec": _trec,
    "cola": _classify(lambda r: as_str(r["sentence"]), "Is this sentence grammatically acceptable?",
                      ["unacceptable", "acceptable"], lambda r: ["unacceptable", "acceptable"][_label(r)]),
    "qnli": _classify(lambda r: f"Question: {as_str(r['question'])}\nSentence: {as_str(r['sentence'])}",
                      "Does the sentence answer the question?", _YN,
                      lambda r: "yes" if _label(r) == 0 else "no"),
    "stsb": _classify(lambda r: f"{as_str(r['sentence1'])}\n{as_str(r['sentence2'])}",
                      "On a scale from 0 to 5, how alike in meaning are the two sentences?",
                      [str(i) for i in range(6)], lambda r: str(int(round(float(as_str(r["label"])))))),
    "wic": _classify(lambda r: f"{as_str(r['sentence1'])}\n{as_str(r['sentence2'])}",
                     lambda r: f"Is \"{as_str(r['word'])}\" used with the same meaning in both sentences?", _YN,
                     lambda r: _YN[_label(r)]),
    "wsc": _classify(lambda r: as_str(r["text"]),
                     lambda r: f"In the text, does \"{as_str(r['span2_text'])}\" refer to \"{as_str(r['span1_text'])}\"?",
                     _YN, lambda r: _YN[_label(r)]),
    "multirc": _classify(lambda r: f"{as_str(r['paragraph'])}\n\nQuestion: {as_str(r['question'])}",
                         lambda r: f"Is \"{as_str(r['answer'])}\" a correct answer?", _YN, lambda r: _YN[_label(r)]),
    "aeslc": _summ("email_body", "subject_line"), "cnn_dailymail": _summ("article", "highlights"),
    "gigaword": _summ("document", "summary"), "multi_news": _summ("document", "summary"),
    "newsroom": _summ("text", "summary"), "samsum": _summ("dialogue", "summary"),
    "xsum": _summ("document", "summary"), "wiki_lingua_english_en": _summ("source", "target"),
    "opinion_abstracts_idebate": _summ("argument_sentences", "claim", " "),
    "opinion_abstracts_rotten_tomatoes": _summ("critics", "critic_consensus", "\n"),
    "bool_q": _rqa("passage", "question", lambda r: "yes" if as_str(r["answer"]) == "true" else "no",
                   lambda r: _YN),
    "coqa": _coqa,
    "cosmos_qa": _rqa("context", "question", lambda r: _pick([as_str(r[f"answer{i}"]) for i in range(4)], _label(r)),
                      lambda r: [as_str(r[f"answer{i}"]) for i in range(4)]),
    "drop": _rqa("passage", "question", lambda r: as_str(r["answer"])),
    "quac": _rqa("context", "question", lambda r: as_str(r["answer"])),
    "record": _rqa("passage", "query", _first("answers"), lambda r: as_str_list(r["entities"])),
    "squad_v1": _rqa("context", "question", _first("answers")),
    "squad_v2": _rqa("context", "question", _first("answers", empty="unanswerable")),
    "common_gen": _d2t("concepts", "Concepts: "), "dart": _dart,
    "e2e_nlg": _d2t("meaning_representation"), "web_nlg_en": _d2t("input"),
    "natural_questions": _qa("question", "answer"), "trivia_qa": _qa("question", "answer"),
    "math_dataset": _qa("question", "answer"), "unified_qa_science_inst": _qa("input", "output"),
    "arc": _mc(lambda r: as_str(r["question"]), lambda r: as_str_list(r["choices_text"]),
               lambda r: as_str_list(r["choices_label"]).index(as_str(r["answerKey"]))
               if as_str(r["answerKey"]) in as_str_list(r["choices_label"]) else -1),
    "copa": _mc(lambda r: f"{as_str(r['premise'])} What was the {as_str(r['question'])}?",
                lambda r: [as_str(r["choice1"]), as_str(r["choice2"])], _label),
    "hellaswag": _mc(lambda r: f"{as_str(r['context'])} ...", lambda r: as_str_list(r["endings"]), _label),
    "story_cloze": _mc(lambda r: f"{as_str(r['context'])}\nWhich ending fits the story?",
                       lambda r: as_str_list(r["endings"]), _label),
    "openbookqa": _mc(lambda r: as_str(r["question"]), lambda r: [as_str(r[f"choice_{c}"]) for c in "ABCD"],
                      _letter_idx("answerKey", "ABCD")),
    "piqa": _mc(lambda r: f"Goal: {as_str(r['goal'])}\nHow do you do it?", lambda r: [as_str(r["sol1"]), as_str(r["sol2"])],
                _label),
    "winogrande": _mc(lambda r: f"{as_str(r['sentence'])}\nWhat does the blank (_) stand for?",
                      lambda r: [as_str(r["option1"]), as_str(r["option2"])], _label),
    "definite_pronoun_resolution": _mc(
        lambda r: f"{as_str(r['sentence'])}\nWho or what does \"{as_str(r['pronoun'])}\" refer to?",
        lambda r: as_str_list(r["candidates"]), _label),
    "p3": _p3,
    "cot": lambda r: {"question": as_str(r["question"]), "answer": as_str(r["answer"]), "rationale": as_str(r["rationale"])},
    "dialog:qrecc": _qrecc, "dialog:wiki_dialog": _wiki_dialog,
    "translation": _translate, "fix_punct": _rewrite("fix_punct"), "true_case": _rewrite("true_case"),
    "word_segment": _rewrite("word_segment"), "lambada": _rewrite("lambada"),
}
_NEEDS_RNG = {"translation", "fix_punct", "true_case", "word_segment", "lambada", "coqa"}


def adapter_for(record: catalog_lib.TaskRecord) -> Callable[[Mapping[str, Any], random.Random], Optional[dict]]:
    """(raw example, rng) -> family example or None. NIv2 is handled by the renderer (exemplars are its own)."""
    key = record.template_family
    if key == "dialog":
        key = f"dialog:{record.dataset}"
    if key == "niv2":
        return lambda raw, rng: {"definition": as_str(raw["definition"]), "input": as_str(raw["input"]),
                                 "output": as_str(raw["output"])}
    fn = _ADAPTERS.get(key)
    if fn is None:
        raise ValueError(f"task {record.name!r}: no field adapter for template_family {key!r}; add one to "
                         "flan_mix/data/flan/flan_adapters.py _ADAPTERS")
    if key in _NEEDS_RNG:
        return fn
    return lambda raw, rng: fn(raw)

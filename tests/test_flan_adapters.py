"""Field adapters with their loaders: DART triples, CoQA conversations, P3 answer choices.

Each test feeds hand-written raw data through the real source (TFDS on tfds.testing.mock_data with the real
builders, or the HF source with an injected loader) and compares with hand-worked expected strings.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from flan_mix.data import templates
from flan_mix.data.flan import catalog as catalog_lib
from flan_mix.data.flan import flan_adapters, flan_templates
from flan_mix.data.flan.rendering import RenderSpec, render_stream
from flan_mix.data.flan.sources import tfds as tfds_loader
from flan_mix.data.flan.sources.by_kind import source_for_task
from flan_mix.data.flan.sources.hf import hf_source


@pytest.fixture(scope="module")
def cat():
    return catalog_lib.load_catalog()


def _mocked_tfds(examples: list[dict], signature: dict):
    """tfds.testing.mock_data whose builders return exactly these examples (any dataset, any split)."""

    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


# ---------------------------------------------------------------------------------------------
# DART (gem/dart:1.1.0): triples -> "subject | relation | object" lines.

_TRIPLES = [["Mars Hill College", "JOINED", "1973"], ["Mars Hill College", "LOCATION", "Mars Hill, North Carolina"]]
_DART_TARGET = "Mars Hill College, in Mars Hill, North Carolina, joined in 1973."
_DART_DATA = "Mars Hill College | JOINED | 1973\nMars Hill College | LOCATION | Mars Hill, North Carolina"


def test_dart_rank2_tripleset_loads_and_linearizes(cat, tmp_path):
    rec = cat.get("dart")
    assert dict(rec.loader.field_map)["tripleset"] == "tripleset"
    example = {"tripleset": np.array(_TRIPLES, dtype=object), "target": _DART_TARGET,
               "references": np.array([], dtype=object)}
    signature = {"tripleset": tf.TensorSpec([None, 3], tf.string), "target": tf.TensorSpec([], tf.string),
                 "references": tf.TensorSpec([None], tf.string)}
    with _mocked_tfds([example], signature):
        ds = source_for_task(rec, tfds_data_dir=tmp_path).get_dataset(shuffle=False)
        assert ds.element_spec["tripleset"] == tf.TensorSpec([None], tf.string)
        (raw,) = list(ds.as_numpy_iterator())
    assert list(raw["tripleset"]) == [b"Mars Hill College | JOINED | 1973",
                                      b"Mars Hill College | LOCATION | Mars Hill, North Carolina"]
    out = flan_adapters.adapter_for(rec)(raw, random.Random(0))
    assert out == {"data": _DART_DATA, "text": _DART_TARGET}


def test_dart_real_builder_spec_loads(cat, tmp_path):
    # TFDS's own gem/dart builder stores each triple pre-joined (a string vector); that must keep loading.
    rec = cat.get("dart")
    with tfds.testing.mock_data(num_examples=3):
        ds = source_for_task(rec, tfds_data_dir=tmp_path).get_dataset(shuffle=False)
        assert ds.element_spec["tripleset"] == tf.TensorSpec([None], tf.string)
        raws = list(ds.as_numpy_iterator())
    assert len(raws) == 3
    adapter = flan_adapters.adapter_for(rec)
    for raw in raws:
        out = adapter(raw, random.Random(0))
        rows = [r.decode().strip() for r in raw["tripleset"] if r.decode().strip()]
        assert out is None if not rows else out == {"data": "\n".join(rows), "text": raw["target"].decode()}


def test_stringify_rank2_variants():
    ragged = tf.ragged.constant([["a", "b", "c"], ["d", "e"]])
    assert tfds_loader._stringify("t", "f", ragged).numpy().tolist() == [b"a | b | c", b"d | e"]
    ints = tf.constant([[1, 2], [3, 4]], tf.int64)
    assert tfds_loader._stringify("t", "f", ints).numpy().tolist() == [b"1 | 2", b"3 | 4"]
    assert tfds_loader._stringify("t", "f", tf.zeros([0, 3], tf.string)).numpy().tolist() == []
    with pytest.raises(ValueError, match=r"Task 't': field 'f' has rank 3"):
        tfds_loader._stringify("t", "f", tf.zeros([1, 2, 3], tf.string))


def test_dart_adapter_joins_unjoined_rows(cat):
    # A tripleset handed over as nested lists (no TFDS flattening) gives the same text.
    out = flan_adapters.adapter_for(cat.get("dart"))({"tripleset": _TRIPLES, "target": _DART_TARGET},
                                                     random.Random(0))
    assert out == {"data": _DART_DATA, "text": _DART_TARGET}


# ---------------------------------------------------------------------------------------------
# CoQA (coqa:1.0.0): one turn per story, drawn by the example's rng, earlier turns as history.

_STORY = "Anna bought a red bike. She rode it to school. Her friend Ben liked it."
_QS = ["What did Anna buy?", "What color was it?", "Who liked it?"]
_AS = ["a bike", "red", "Ben"]
_COQA_EXPECTED = [
    {"context": _STORY, "question": "What did Anna buy?", "answer": "a bike"},
    {"context": _STORY + "\n\nConversation so far:\nQ: What did Anna buy?\nA: a bike",
     "question": "What color was it?", "answer": "red"},
    {"context": _STORY + "\n\nConversation so far:\nQ: What did Anna buy?\nA: a bike\nQ: What color was it?\nA: red",
     "question": "Who liked it?", "answer": "Ben"},
]


def _coqa_raw_via_tfds(rec, tmp_path):
    example = {"story": _STORY, "source": "mctest", "questions": np.array(_QS, dtype=object),
               "answers": {"input_text": np.array(_AS, dtype=object), "answer_start": np.array([0, 0, 0], np.int32),
                           "answer_end": np.array([1, 1, 1], np.int32)}}
    signature = {"story": tf.TensorSpec([], tf.string), "source": tf.TensorSpec([], tf.string),
                 "questions": tf.TensorSpec([None], tf.string),
                 "answers": {"input_text": tf.TensorSpec([None], tf.string),
                             "answer_start": tf.TensorSpec([None], tf.int32),
                             "answer_end": tf.TensorSpec([None], tf.int32)}}
    with _mocked_tfds([example], signature):
        (raw,) = list(source_for_task(rec, tfds_data_dir=tmp_path).get_dataset(shuffle=False)
                      .as_numpy_iterator())
    return raw


def test_coqa_turn_history_and_target(cat, tmp_path):
    rec = cat.get("coqa")
    raw = _coqa_raw_via_tfds(rec, tmp_path)
    assert list(raw["answers"]) == [a.encode() for a in _AS]
    adapter = flan_adapters.adapter_for(rec)
    seen = set()
    for seed in range(30):
        out = adapter(raw, random.Random(seed))
        assert out in _COQA_EXPECTED, out
        turn = _COQA_EXPECTED.index(out)
        seen.add(turn)
        assert adapter(raw, random.Random(seed)) == out  # deterministic for a seed
        # The history holds exactly the turns before the drawn one.
        for q, a in zip(_QS[:turn], _AS[:turn]):
            assert f"Q: {q}\nA: {a}" in out["context"]
        for q in _QS[turn:]:
            assert q not in out["context"]
    assert seen == {0, 1, 2}  # every turn is reachable, not just the first


def test_coqa_skips_unanswered_turns_and_empty_stories(cat):
    adapter = flan_adapters.adapter_for(cat.get("coqa"))
    raw = {"story": b"S.", "questions": np.array([b"Q1?", b"Q2?"]), "answers": np.array([b"A1", b""])}
    for seed in range(10):
        assert adapter(raw, random.Random(seed)) == {"context": "S.", "question": "Q1?", "answer": "A1"}
    assert adapter({"story": b"S.", "questions": np.array([], dtype=object), "answers": np.array([], dtype=object)},
                   random.Random(0)) is None


def test_coqa_render_stream_deterministic(cat, tmp_path):
    rec = cat.get("coqa")
    raw = _coqa_raw_via_tfds(rec, tmp_path)
    spec = RenderSpec(task="coqa", source="FLAN", family=flan_templates.family_for("coqa"),
                      template_type="zs_noopt", inversion_weight=0.0, seed=7)
    first = list(render_stream(iter([raw]), spec, flan_adapters.adapter_for(rec)))
    again = list(render_stream(iter([raw]), spec, flan_adapters.adapter_for(rec)))
    assert first == again and len(first) == 1
    assert first[0]["targets"] in _AS


# ---------------------------------------------------------------------------------------------
# P3 (T0-SF): answer_choices -> options of *_opt template types.

_P3_WITH = [{"inputs_pretokenized": "Is the sky green? Answer yes, no or maybe.", "targets_pretokenized": "no",
             "answer_choices": ["yes", "no", "maybe"]}]
_P3_WITHOUT = [{"inputs_pretokenized": "Write a title for: cats sleep a lot.", "targets_pretokenized": "Sleepy cats"}]


def _p3_raws(rec, rows):
    src = hf_source(rec.name, rec.loader.name, rec.loader.config, "train", rec.loader.field_map,
                            load_fn=lambda name, config, split: rows)
    ds = src.get_dataset(shuffle=False)
    assert ds.element_spec["options"] == tf.TensorSpec([None], tf.string)
    return list(ds.as_numpy_iterator())


def test_p3_catalog_maps_answer_choices(cat):
    t0 = cat.by_submixture("t0_sf")
    assert all(dict(t.loader.field_map).get("options") == "answer_choices" for t in t0)


def test_p3_source_answer_choices_optional(cat):
    rec = cat.get("social_i_qa_Generate_answer")
    (with_choices,) = _p3_raws(rec, _P3_WITH)
    assert list(with_choices["options"]) == [b"yes", b"no", b"maybe"]
    (without,) = _p3_raws(rec, _P3_WITHOUT)  # the subset has no answer_choices column at all
    assert list(without["options"]) == []
    # A row of a subset with the column, but null there, also reads as no choices.
    (null_row,) = _p3_raws(rec, [dict(_P3_WITHOUT[0], answer_choices=None)])
    assert list(null_row["options"]) == []


def test_p3_adapter(cat):
    rec = cat.get("social_i_qa_Generate_answer")
    adapter = flan_adapters.adapter_for(rec)
    (raw,) = _p3_raws(rec, _P3_WITH)
    assert adapter(raw, random.Random(0)) == {"prompt": "Is the sky green? Answer yes, no or maybe.", "answer": "no",
                                              "options": ["yes", "no", "maybe"]}
    (raw,) = _p3_raws(rec, _P3_WITHOUT)
    assert adapter(raw, random.Random(0)) == {"prompt": "Write a title for: cats sleep a lot.",
                                              "answer": "Sleepy cats", "options": []}
    # A target outside the choices cannot be marked in an options block: plain prompt.
    off = {"inputs": b"Pick one.", "targets": b"purple", "options": np.array([b"red", b"blue"])}
    assert adapter(off, random.Random(0))["options"] == []
    # Whitespace around the target does not hide a match.
    padded = {"inputs": b"Pick one.", "targets": b" blue", "options": np.array([b"red", b"blue"])}
    assert adapter(padded, random.Random(0)) == {"prompt": "Pick one.", "answer": "blue", "options": ["red", "blue"]}


@pytest.mark.parametrize("seed", range(12))
def test_p3_options_block_only_under_opt(cat, seed):
    rec = cat.get("social_i_qa_Generate_answer")
    family = flan_templates.family_for(rec.template_family)
    adapter = flan_adapters.adapter_for(rec)
    (ex,) = [adapter(r, random.Random(0)) for r in _p3_raws(rec, _P3_WITH)]
    choices = templates.choose(seed, family=family)
    opt = templates.format_example(ex, family=family, template_type="zs_opt", seed=seed)
    noopt = templates.format_example(ex, family=family, template_type="zs_noopt", seed=seed)
    assert opt["template_id"] == noopt["template_id"]
    prompt = "Is the sky green? Answer yes, no or maybe."
    assert prompt in opt["inputs"] and prompt in noopt["inputs"]
    block = opt["inputs"].replace(prompt, "")
    assert choices.header in block and all(c in block for c in ("yes", "no", "maybe"))
    assert choices.header not in noopt["inputs"]
    # Without the block the noopt text is the opt text minus the block: the same template otherwise.
    assert noopt["inputs"].replace(prompt, "").strip() in block
    assert noopt["targets"] == "no"
    labels = choices.marker.labels
    want = "no" if labels is None else choices.marker.target.format(label={"letters": "B", "numbers": "2"}[labels])
    assert opt["targets"] == want


@pytest.mark.parametrize("seed", range(12))
def test_p3_without_choices_same_under_opt_and_noopt(cat, seed):
    rec = cat.get("social_i_qa_Generate_answer")
    family = flan_templates.family_for(rec.template_family)
    (ex,) = [flan_adapters.adapter_for(rec)(r, random.Random(0)) for r in _p3_raws(rec, _P3_WITHOUT)]
    opt = templates.format_example(ex, family=family, template_type="zs_opt", seed=seed)
    noopt = templates.format_example(ex, family=family, template_type="zs_noopt", seed=seed)
    assert opt == dict(noopt, template_type="zs_opt")
    assert "Write a title for: cats sleep a lot." in opt["inputs"] and opt["targets"] == "Sleepy cats"


def test_p3_plain_template_zero():
    # The first p3 template is the bare prompt: hand-worked expected strings for both types.
    t0 = templates.templates_for("p3")[0]
    ex = {"prompt": "Q?", "answer": "no", "options": ["yes", "no"]}
    assert templates.format_example(ex, family="p3", template_type="zs_noopt", seed=0,
                                    template_id=t0.id)["inputs"] == "Q?"
    opt = templates.format_example(ex, family="p3", template_type="zs_opt", seed=0, template_id=t0.id)["inputs"]
    assert opt.startswith("Q?\n") and opt != "Q?"


def test_p3_render_stream_end_to_end(cat):
    rec = cat.get("social_i_qa_Generate_answer")
    raws = _p3_raws(rec, _P3_WITH)
    out = {}
    for tt in ("zs_opt", "zs_noopt"):
        spec = RenderSpec(task=rec.name, source="T0", family="p3", template_type=tt, inversion_weight=0.0, seed=3)
        (out[tt],) = list(render_stream(iter(raws), spec, flan_adapters.adapter_for(rec)))
    assert "maybe" in out["zs_opt"]["inputs"].replace("Answer yes, no or maybe.", "")
    assert "maybe" not in out["zs_noopt"]["inputs"].replace("Answer yes, no or maybe.", "")

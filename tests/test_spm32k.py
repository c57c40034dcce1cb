"""The Flan-scale vocabulary (flan_mix.data.registration.spm32k_vocabulary): a unigram SentencePiece model with
T5's id layout, trained on the CoT TSVs plus the generated text and cached by a hash of its inputs."""
from __future__ import annotations

import os

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from flan_mix.data import registration, vocab
from flan_mix.data.flan import flan_tasks
from flan_mix.data.generated import rendering

COT_ROWS = [("Is the sky green?", "no", "The sky looks blue on a clear day, not green."),
            ("What is 12 + 30?", "42", "12 plus 30 makes 42.")]


def _proto(path):
    m = sentencepiece_model_pb2.ModelProto()
    with open(path, "rb") as f:
        m.ParseFromString(f.read())
    return m


def test_unigram_model_keeps_t5_ids_and_its_own_cache_name(tmp_path):
    lines = rendering.vocabulary_corpus(examples_per_variant=3)
    corpus = vocab.Corpus("tiny", lambda seed: lines)
    uni = vocab.trained_sentencepiece_model(corpus, vocab_size=400, cache_dir=str(tmp_path), model_type="unigram")
    bpe = vocab.trained_sentencepiece_model(corpus, vocab_size=400, cache_dir=str(tmp_path))
    assert uni != bpe and "_spm_unigram_400_" in os.path.basename(uni) and "_spm_400_" in os.path.basename(bpe)
    assert _proto(uni).trainer_spec.model_type == sentencepiece_model_pb2.TrainerSpec.UNIGRAM
    assert _proto(bpe).trainer_spec.model_type == sentencepiece_model_pb2.TrainerSpec.BPE
    sp = spm.SentencePieceProcessor(model_file=uni)
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert sp.get_piece_size() == 400
    with pytest.raises(ValueError, match="model_type"):
        vocab.trained_sentencepiece_model(corpus, vocab_size=400, cache_dir=str(tmp_path), model_type="char")


def test_corpus_reads_every_field_of_every_tsv_then_the_generated_text(tmp_path):
    for name in ("b_train.tsv", "a_train.tsv"):
        (tmp_path / name).write_text("".join(f"{q}\t{a}\t{r}\n" for q, a, r in COT_ROWS))
    (tmp_path / "notes.txt").write_text("not a CoT file\n")
    lines = registration.spm32k_corpus_lines(str(tmp_path))
    cot = [field for q, a, r in COT_ROWS for field in (q, r, a)]
    assert lines[:2 * len(cot)] == cot * 2
    assert lines[2 * len(cot):] == list(registration.seqio_tasks.VOCABULARY_CORPUS.lines(0))
    with pytest.raises(FileNotFoundError, match="No \\*_train.tsv"):
        registration.spm32k_corpus_lines(str(_empty(tmp_path)))
    with pytest.raises(FileNotFoundError, match="No CoT data directory"):
        registration.spm32k_corpus_lines(str(tmp_path / "absent"))


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


@pytest.mark.skipif(not flan_tasks.DEFAULT_COT_DIR.is_dir(),
                    reason=f"the real CoT TSVs are not in {flan_tasks.DEFAULT_COT_DIR}")
def test_spm32k_on_the_real_cot_data(tmp_path):
    v = registration.spm32k_vocabulary(cache_dir=str(tmp_path))  # ~5 s to train on 2 cores
    assert v.vocab_size == 32000 + 100  # T5's 32,100 ids
    sp = v.tokenizer
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2)
    text = "Q: A train leaves at 3 pm and travels 120 miles.\nLet's think step by step."
    assert v.decode(v.encode(text)) == text
    assert registration.spm32k_vocabulary(cache_dir=str(tmp_path)).tokenizer.serialized_model_proto() == \
        sp.serialized_model_proto()  # the cache is reused: one file
    assert len([f for f in os.listdir(tmp_path / "vocab") if f.endswith(".model")]) == 1


def test_register_all_refuses_an_unknown_vocabulary_name():
    with pytest.raises(ValueError, match="vocabulary_name"):
        registration.register_all(vocabulary_name="t5_32k")

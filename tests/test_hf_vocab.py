"""HF tokenizers behind seqio's Vocabulary (flan_mix.data.hf_vocab). The tokenizers are trained here, with the
`tokenizers` library, on a few sentences (no download); the peers are `tokenizers` itself and transformers'
fast tokenizer saved from the same tokenizer."""
import json

import pytest
import seqio
import tensorflow as tf
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from flan_mix.data import hf_vocab

LINES = [
    "Sort these words alphabetically: pear, apple, fig.",
    "Q: What is 12 + 30?\nA: 42",
    "The quick brown fox jumps over the lazy dog.",
    "Options:\n- yes\n- no\nAnswer: yes",
    "Zürich is in Switzerland; naïve façade café.",
] * 4
TEXTS = ["Sort these words: fig, pear.", "What is 7 + 5?\nA: 12", "  two  spaces ", "Zürich café", "",
         "A never-seen word: xylophone!"]


def _llama_style(tmp_path, post_processor=True):
    """A byte-fallback BPE with Llama's special ids (<unk> 0, <s> 1, </s> 2) and Llama's habit of a
    post-processor that prepends <s>, saved as tokenizer.json alone (no config files beside it)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    tok.train_from_iterator(LINES, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"]))
    # The trainer does not add the byte pieces byte fallback needs; put them at ids 3..258 as Llama has them.
    spec = json.loads(tok.to_str())
    learned = sorted((i, t) for t, i in spec["model"]["vocab"].items() if i >= 3)
    spec["model"]["vocab"] = {**{t: i for t, i in spec["model"]["vocab"].items() if i < 3},
                              **{f"<0x{b:02X}>": 3 + b for b in range(256)},
                              **{t: 259 + k for k, (_, t) in enumerate(learned)}}
    tok = Tokenizer.from_str(json.dumps(spec))
    if post_processor:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tmp_path.mkdir(parents=True, exist_ok=True)
    tok.save(str(tmp_path / "tokenizer.json"))
    return tok


def _t5_style(tmp_path):
    """A Unigram tokenizer with T5's special ids (<pad> 0, </s> 1, <unk> 2)."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(LINES, trainers.UnigramTrainer(vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"],
                                                           unk_token="<unk>"))
    tmp_path.mkdir(parents=True, exist_ok=True)
    tok.save(str(tmp_path / "tokenizer.json"))
    return tok


def test_llama_style_ids_round_trip_and_no_special_tokens_added(tmp_path):
    tok = _llama_style(tmp_path)
    voc = hf_vocab.vocabulary_from_dir(str(tmp_path))
    assert isinstance(voc, hf_vocab.HfTokenizerVocabulary)
    assert (voc.unk_id, voc.bos_id, voc.eos_id, voc.pad_id, voc.tokenizer_pad_id) == (0, 1, 2, 0, None)
    assert voc.vocab_size == tok.get_vocab_size(with_added_tokens=True)
    assert tok.encode("fig").ids[0] == 1  # the tokenizer itself would prepend <s> ...
    for text in TEXTS:
        ids = voc.encode(text)
        assert ids == tok.encode(text, add_special_tokens=False).ids  # ... ours does not
        assert not {0, 1, 2} & set(ids)  # no unk (byte fallback), no bos, no eos
        assert voc.decode(ids) == tok.decode(ids, skip_special_tokens=True)
        # Metaspace (Llama's pre-tokenizer) folds a leading space into its word-start mark; the rest is exact.
        assert voc.decode(ids) == (text[1:] if text.startswith("  ") else text)
    # seqio's decode stops at EOS and drops it; padding and ids past the vocabulary have no text.
    ids = voc.encode("pear")
    assert voc.decode(ids + [2] + voc.encode("fig") + [0, 0]) == "pear"
    assert voc.decode(ids + [voc.vocab_size + 5]) == "pear"


def test_t5_style_special_ids(tmp_path):
    tok = _t5_style(tmp_path)
    voc = hf_vocab.vocabulary_from_dir(str(tmp_path))
    assert (voc.pad_id, voc.eos_id, voc.unk_id, voc.bos_id, voc.tokenizer_pad_id) == (0, 1, 2, None, 0)
    for text in TEXTS[:3]:
        assert voc.encode(text) == tok.encode(text, add_special_tokens=False).ids


def test_tf_paths_agree_with_python(tmp_path):
    _llama_style(tmp_path)
    voc = hf_vocab.vocabulary_from_dir(str(tmp_path))
    for text in TEXTS:
        ids = voc.encode_tf(tf.constant(text))
        assert ids.dtype == tf.int32 and ids.shape.rank == 1
        assert ids.numpy().tolist() == voc.encode(text)
        assert voc.decode_tf(ids).numpy().decode() == voc.decode(voc.encode(text))
    ragged = voc.encode_tf(tf.constant(TEXTS))
    assert ragged.to_list() == [voc.encode(t) for t in TEXTS]
    assert [t.decode() for t in voc.decode_tf(ragged).numpy()] == [voc.decode(voc.encode(t)) for t in TEXTS]
    # A padded batch, as a model's predictions come: everything from the first EOS on is dropped.
    a, b = voc.encode("fig pear"), voc.encode("apple")
    batch = tf.constant([a + [2, 7, 7], b + [2] + [0] * (len(a) + 2 - len(b))])
    assert [t.decode() for t in voc.decode_tf(batch).numpy()] == ["fig pear", "apple"]
    # Inside a tf.data map (graph mode), where seqio's tokenize preprocessor calls encode_tf.
    ds = tf.data.Dataset.from_tensor_slices(TEXTS).map(voc.encode_tf)
    assert [x.tolist() for x in ds.as_numpy_iterator()] == [voc.encode(t) for t in TEXTS]


def test_a_seqio_task_tokenizes_with_it_and_appends_eos(tmp_path):
    _llama_style(tmp_path)
    voc = hf_vocab.vocabulary_from_dir(str(tmp_path))
    name = "test_hf_vocab_task"
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    data = {"inputs": TEXTS[:3], "targets": ["fig", "12", "yes"]}
    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(lambda split, shuffle_files: tf.data.Dataset.from_tensor_slices(data),
                                              splits=["train"]),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features={k: seqio.Feature(voc, add_eos=True) for k in ("inputs", "targets")})
    try:
        task = seqio.TaskRegistry.get(name)
        got = list(task.get_dataset({"inputs": 32, "targets": 8}, split="train", shuffle=False, num_epochs=1,
                                    try_in_mem_cache=False).as_numpy_iterator())
    finally:
        seqio.TaskRegistry.remove(name)
    assert len(got) == 3
    for ex, i, t in zip(got, data["inputs"], data["targets"]):
        assert ex["inputs"].tolist() == voc.encode(i) + [2] and ex["targets"].tolist() == voc.encode(t) + [2]


def test_transformers_fast_tokenizer_agrees(tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = _llama_style(tmp_path / "raw")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                              unk_token="<unk>")
    hf.save_pretrained(str(tmp_path / "hf"))  # tokenizer.json + tokenizer_config.json naming the specials
    voc = hf_vocab.vocabulary_from_dir(str(tmp_path / "hf"))
    assert (voc.bos_id, voc.eos_id, voc.unk_id) == (hf.bos_token_id, hf.eos_token_id, hf.unk_token_id) == (1, 2, 0)
    for text in TEXTS:
        assert voc.encode(text) == hf.encode(text, add_special_tokens=False)
        ids = voc.encode(text)
        assert voc.decode(ids) == hf.decode(ids, skip_special_tokens=True)


def test_special_tokens_from_config_and_explicit(tmp_path):
    _t5_style(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": {"content": "<unk>", "__type": "AddedToken"}}')
    assert hf_vocab.vocabulary_from_dir(str(tmp_path)).eos_id == 2  # the config names it
    assert hf_vocab.vocabulary_from_dir(str(tmp_path), eos_token="</s>").eos_id == 1  # an explicit name wins
    with pytest.raises(ValueError, match=r"eos token '<nope>' \(from eos_token='<nope>'\) is not in the vocab"):
        hf_vocab.vocabulary_from_dir(str(tmp_path), eos_token="<nope>")


def test_saved_truncation_and_padding_are_ignored(tmp_path):
    tok = _llama_style(tmp_path)
    tok.enable_truncation(max_length=2)
    tok.enable_padding(length=64)
    tok.save(str(tmp_path / "tokenizer.json"))
    voc = hf_vocab.vocabulary_from_dir(str(tmp_path))
    assert len(voc.encode(TEXTS[0])) > 2 and 0 not in voc.encode(TEXTS[0])


def test_id_zero_must_be_special(tmp_path):
    tok = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "</s>": 2, "<unk>": 3}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["</s>", "<unk>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="Id 0 of .* is 'hello', an ordinary token; seqio and flan_mix pad"):
        hf_vocab.vocabulary_from_dir(str(tmp_path))


def test_sentencepiece_fallback_and_missing_files(tmp_path):
    import sentencepiece as spm
    spm.SentencePieceTrainer.train(sentence_iterator=iter(LINES), model_prefix=str(tmp_path / "spiece"),
                                   vocab_size=60, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
                                   hard_vocab_limit=False)
    (tmp_path / "tokenizer_config.json").write_text('{"extra_ids": 100}')  # HF T5's record of its sentinels
    voc = hf_vocab.vocabulary_from_dir(str(tmp_path))
    assert isinstance(voc, seqio.SentencePieceVocabulary) and voc.extra_ids == 100
    assert voc.decode(voc.encode("fig pear")) == "fig pear"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"No tokenizer in '.*empty': looked for tokenizer.json .* "
                                                r"spiece.model / tokenizer.model .*config.json"):
        hf_vocab.vocabulary_from_dir(str(empty))
    with pytest.raises(FileNotFoundError, match="not found: '.*nowhere'"):
        hf_vocab.vocabulary_from_dir(str(tmp_path / "nowhere"))


def test_vocabulary_larger_than_the_embedding_is_refused(tmp_path):
    _llama_style(tmp_path)
    voc = hf_vocab.vocabulary_from_dir(str(tmp_path))
    hf_vocab.check_vocabulary_fits(voc, voc.vocab_size)
    hf_vocab.check_vocabulary_fits(voc, 512)  # a padded embedding is fine
    with pytest.raises(ValueError, match=rf"tokenizer has {voc.vocab_size} ids .* embedding has only 100 rows"):
        hf_vocab.check_vocabulary_fits(voc, 100, model_name="llama_tiny")
    with pytest.raises(ValueError, match="32100 ids .* 32000 rows"):
        hf_vocab.check_vocabulary_fits(32100, 32000)


def test_equality_follows_the_file(tmp_path):
    _llama_style(tmp_path / "a")
    _llama_style(tmp_path / "b")
    _t5_style(tmp_path / "c")
    a, b, c = (hf_vocab.vocabulary_from_dir(str(tmp_path / d)) for d in "abc")
    assert a == b and hash(a) == hash(b) and a != c  # same training, same file

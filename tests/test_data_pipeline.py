"""The seqio side of the generated collection: vocabulary, task registration, mixing rates and the batch pipeline.

Packing with one open row (next-fit) is checked against seqio's own EncDecFeatureConverter and against a packed
row worked out by hand; first-fit packing has its own tests in test_packing.py.
"""

import collections
import os
import threading

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

from flan_mix.data import mixing, pipeline, vocab
from flan_mix.data.data_errors import DataError
from flan_mix.data.generated import collection, mixture, rendering
from flan_mix.data.generated import seqio_tasks as tasks

LENGTHS = {"inputs": 256, "targets": 64}
NUM_TRAIN, NUM_VAL = 40, 12
SMALL_MIX = "test_small_generated_mix"
HAND_TASK = "test_handbuilt_pretokenized"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("flan_mix_cache"))


@pytest.fixture(scope="module")
def vocabulary(cache_dir):
    return vocab.get_vocabulary(corpus=tasks.VOCABULARY_CORPUS, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def registered(vocabulary):
    names = tasks.register_generated_tasks(vocabulary=vocabulary, seed=0, num_train=NUM_TRAIN,
                                           num_validation=NUM_VAL)
    mixture.register_generated_mixture()
    mixing.register_mixture(SMALL_MIX, {"gen_sort_words_zs_opt": 1, "gen_add_word_problem_fs_cot": 1,
                                          "gen_syllogism_mc_fs_opt": 2})
    return names


# ------------------------------------------------------------------------------------------------------------
# vocabulary
def test_vocabulary_ids_and_round_trip(vocabulary):
    sp = vocabulary.tokenizer
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert vocabulary.vocab_size == vocab.DEFAULT_VOCAB_SIZE + vocab.DEFAULT_EXTRA_IDS
    corpus = rendering.vocabulary_corpus(examples_per_variant=3)
    assert any("\n" in line for line in corpus)
    for line in corpus:
        ids = vocabulary.encode(line)
        assert 2 not in ids
        assert vocabulary.decode(ids) == line  # newlines and spacing survive
    text = "Zürich: 😀 naïve façade"  # never seen in the corpus: byte fallback, no UNK
    ids = vocabulary.encode(text)
    assert 2 not in ids and vocabulary.decode(ids) == text
    for i in vocabulary.encode("What is 1234 + 98?"):  # digits are split
        piece = sp.id_to_piece(i)
        assert not any(c.isdigit() for c in piece) or piece.strip("▁") in "0123456789"


def test_vocabulary_cache_is_shared_and_safe_in_parallel(tmp_path, vocabulary):
    cache = str(tmp_path / "c")
    paths, errors = [], []

    def worker():
        try:
            paths.append(vocab.trained_sentencepiece_model(tasks.VOCABULARY_CORPUS, cache_dir=cache))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(paths)) == 1
    files = os.listdir(os.path.join(cache, "vocab"))
    assert [f for f in files if f.endswith(".model")] == [os.path.basename(paths[0])]
    assert not [f for f in files if f.endswith(".tmp")]
    mtime = os.path.getmtime(paths[0])
    assert vocab.trained_sentencepiece_model(tasks.VOCABULARY_CORPUS, cache_dir=cache) == paths[0]
    assert os.path.getmtime(paths[0]) == mtime  # reused, not retrained
    # training is deterministic: the same corpus gives the same model file as the fixture's
    with open(paths[0], "rb") as f, open(vocabulary.sentencepiece_model_file, "rb") as g:
        assert f.read() == g.read()


def test_vocabulary_from_named_file_and_gin(vocabulary, tmp_path):
    named = vocab.get_vocabulary(vocabulary.sentencepiece_model_file, extra_ids=0)
    assert named.vocab_size == vocab.DEFAULT_VOCAB_SIZE
    assert named.encode("Sort these words") == vocabulary.encode("Sort these words")
    missing = str(tmp_path / "nope.model")
    with pytest.raises(FileNotFoundError, match="nope.model"):
        vocab.get_vocabulary(missing)
    gin.clear_config()
    try:
        gin.parse_config(f"get_vocabulary.sentencepiece_model_path = '{missing}'")
        with pytest.raises(FileNotFoundError, match="sentencepiece_model_path"):
            vocab.get_vocabulary()
    finally:
        gin.clear_config()
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.model"):
        vocab.get_vocabulary(str(bad))
    with pytest.raises(ValueError, match="sentencepiece_model_path.*or a corpus"):
        vocab.get_vocabulary()  # nothing to load and nothing to train on


# ------------------------------------------------------------------------------------------------------------
# registration
def test_registration_names_and_idempotence(registered, vocabulary):
    assert set(registered) <= set(seqio.TaskRegistry.names())
    for t, gt in collection.GENERATED_TASKS.items():
        for tt in ("zs_opt", "zs_noopt", "fs_opt", "fs_noopt"):
            assert f"gen_{t}_{tt}" in registered
        assert (f"gen_{t}_zs_cot" in registered) == gt.has_cot
        assert f"gen_{t}_eval" in registered
    assert len(tasks.HELD_OUT_EVAL_TASK_NAMES) >= 4
    assert not set(tasks.HELD_OUT_TASKS) & set(tasks.TRAIN_TASKS)
    before = {n: seqio.TaskRegistry.get(n) for n in registered}
    again = tasks.register_generated_tasks(vocabulary=vocabulary, seed=0, num_train=NUM_TRAIN,
                                           num_validation=NUM_VAL)
    assert again == registered
    assert all(seqio.TaskRegistry.get(n) is before[n] for n in registered)  # nothing re-registered
    info = tasks.task_info("gen_table_lookup_mc_eval")
    assert info["held_out"] and info["ability"] == "table_lookup" and info["is_mc"]


def test_sources_metadata_and_splits(registered):
    task = seqio.TaskRegistry.get("gen_count_category_fs_cot")
    assert set(task.splits) == {"train", "validation"}
    ex = next(task.get_dataset(LENGTHS, split="validation", shuffle=False).as_numpy_iterator())
    assert ex["task_name"] == b"count_category" and ex["template_type"] == b"fs_cot"
    assert ex["template_id"].startswith(b"cot/")
    assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1  # EOS appended
    train_q = {e["question"] for v in rendering.task_variants("count_category")
               for e in collection.generate_split("count_category", "train", NUM_TRAIN,
                                                 collection.derive_seed("variant", 0, v))}
    val_q = {e["question"] for e in collection.generate_split("count_category", "validation", NUM_VAL, 0)}
    assert not train_q & val_q


def test_fewshot_inputs_fit_the_feature_length(registered, vocabulary):
    config = tasks.registered_config()
    for t in tasks.TRAIN_TASKS:
        for v in rendering.task_variants(t):
            if v.startswith("fs_"):
                for rec in tasks._variant_records(config, t, v, "train"):
                    assert len(vocabulary.encode(rec["inputs"])) + 1 <= tasks.DEFAULT_MAX_INPUT_TOKENS, (t, v)


# ------------------------------------------------------------------------------------------------------------
# mixing rates (hand-worked)
def test_capped_rates_hand_worked():
    rates = mixing.capped_rates({"a": 100, "b": 1000, "c": 5000}, cap=1000)
    assert rates == pytest.approx({"a": 100 / 2100, "b": 1000 / 2100, "c": 1000 / 2100})
    assert sum(rates.values()) == pytest.approx(1.0)
    assert mixing.capped_rates({"a": 1, "b": 3}, cap=None) == pytest.approx({"a": 0.25, "b": 0.75})
    with pytest.raises(ValueError):
        mixing.capped_rates({"a": 1}, cap=0)


def test_variant_and_nested_rates_hand_worked():
    split = mixing.split_by_weights({"a": 0.4, "b": 0.6}, {"a": ["zs", "fs"], "b": ["zs"]}, {"zs": 1, "fs": 3})
    assert split == pytest.approx({"a_zs": 0.1, "a_fs": 0.3, "b_zs": 0.6})
    nested = mixing.nested_rates({"s1": (3, {"x": 1, "y": 1}), "s2": (1, {"x": 2, "z": 6})})
    assert nested == pytest.approx({"x": 0.375 + 0.0625, "y": 0.375, "z": 0.1875})
    with pytest.raises(ValueError, match="fs"):
        mixing.split_by_weights({"a": 1}, {"a": ["fs"]}, {"zs": 1})


def test_generated_mixture_rates(registered):
    rates = mixture.generated_mixture_rates(NUM_TRAIN, cap=10)
    assert sum(rates.values()) == pytest.approx(1.0)
    n = len(tasks.TRAIN_TASKS)  # equal sizes under the cap: each task 1/n, shared by its variants' weights
    assert rates["gen_sort_words_fs_opt"] == pytest.approx(1 / n * 0.1 / 0.8)
    assert rates["gen_sort_words_zs_opt"] == pytest.approx(1 / n * 0.3 / 0.8)
    assert rates["gen_add_word_problem_zs_cot"] == pytest.approx(1 / n * 0.1 / 0.95)
    equal = mixture.generated_mixture_rates(NUM_TRAIN, variant_weights={**mixture.EQUAL_TEMPLATE_WEIGHTS,
                                                                          "zs_cot": 0.25, "fs_cot": 0.25})
    assert equal["gen_sort_words_fs_opt"] == pytest.approx(1 / n / 4)
    assert equal["gen_add_word_problem_zs_cot"] == pytest.approx(1 / n / 6)
    mix = seqio.MixtureRegistry.get(mixture.GENERATED_MIXTURE)
    assert {t.name for t in mix.tasks} == set(tasks.TRAIN_VARIANT_TASK_NAMES)
    assert not {t.name for t in mix.tasks} & {f"gen_{h}_zs_opt" for h in tasks.HELD_OUT_TASKS}
    for t in mix.tasks[:5]:
        assert mix.get_rate(t) / mix.total_rate == pytest.approx(rates[t.name])


# ------------------------------------------------------------------------------------------------------------
# packing and batches
HAND_INPUTS = [[3, 4], [5], [6, 7, 8], [9], [10, 11], [12]]
HAND_TARGETS = [[20], [21, 22], [23], [24, 25], [26], [27, 28]]


def _register_pretokenized(name: str, dataset_fn) -> str:
    """A seqio Task over pre-tokenized examples (PassThroughVocabulary): only EOS is added by the Task."""
    voc = seqio.PassThroughVocabulary(size=100, eos_id=1)
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(dataset_fn, splits=["train"]),
        output_features={k: seqio.Feature(voc, add_eos=True, dtype=tf.int32) for k in ("inputs", "targets")},
        preprocessors=[seqio.preprocessors.append_eos_after_trim])
    return name


@pytest.fixture(scope="module")
def hand_task():
    def dataset_fn(split, shuffle_files, seed=None):
        return tf.data.Dataset.from_tensor_slices({"inputs": tf.ragged.constant(HAND_INPUTS, dtype=tf.int32),
                                                   "targets": tf.ragged.constant(HAND_TARGETS, dtype=tf.int32)})

    return _register_pretokenized(HAND_TASK, dataset_fn)


def _seqio_reference(lengths, batch, pack=True):
    """seqio's EncDecFeatureConverter applied directly to the hand-built examples (EOS appended by hand)."""
    def gen():
        for i, t in zip(HAND_INPUTS, HAND_TARGETS):
            yield {"inputs": np.array(i + [1], np.int32), "targets": np.array(t + [1], np.int32)}

    ds = tf.data.Dataset.from_generator(gen, output_signature={
        "inputs": tf.TensorSpec([None], tf.int32), "targets": tf.TensorSpec([None], tf.int32)})
    ds = seqio.EncDecFeatureConverter(pack=pack)(ds, task_feature_lengths=lengths)
    return list(ds.batch(batch, drop_remainder=True).as_numpy_iterator())


def test_next_fit_packing_matches_seqio_and_hand_worked_row(hand_task):
    lengths = {"inputs": 8, "targets": 8}
    ours = list(pipeline.get_batches(hand_task, task_feature_lengths=lengths, global_batch_size=2, seed=0,
                                     shuffle=False, pack=True, max_open_rows=1, num_epochs=1))
    ref = _seqio_reference(lengths, 2)
    assert len(ours) == len(ref) >= 1
    for a, b in zip(ours, ref):
        assert set(a) == set(pipeline.MODEL_FEATURES) == set(b)
        for k in a:
            assert a[k].dtype == np.int32
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # Row 0 worked out by hand: examples 0 and 1, then example 2 starts row 1 (its inputs would overflow 8).
    row = {k: v[0].tolist() for k, v in ours[0].items()}
    assert row["encoder_input_tokens"] == [3, 4, 1, 5, 1, 0, 0, 0]
    assert row["encoder_segment_ids"] == [1, 1, 1, 2, 2, 0, 0, 0]
    assert row["encoder_positions"] == [0, 1, 2, 0, 1, 0, 0, 0]
    assert row["decoder_target_tokens"] == [20, 1, 21, 22, 1, 0, 0, 0]
    assert row["decoder_input_tokens"] == [0, 20, 0, 21, 22, 0, 0, 0]  # shifted within each segment
    assert row["decoder_loss_weights"] == [1, 1, 1, 1, 1, 0, 0, 0]
    assert row["decoder_segment_ids"] == [1, 1, 2, 2, 2, 0, 0, 0]
    assert row["decoder_positions"] == [0, 1, 0, 1, 2, 0, 0, 0]


def test_unpacked_batches_match_seqio(hand_task):
    lengths = {"inputs": 6, "targets": 5}
    ours = list(pipeline.get_batches(hand_task, task_feature_lengths=lengths, global_batch_size=3, seed=0,
                                     shuffle=False, pack=False, num_epochs=1))
    ref = _seqio_reference(lengths, 3, pack=False)
    assert len(ours) == len(ref) == 2
    for a, b in zip(ours, ref):
        assert set(a) == set(b) == {"encoder_input_tokens", "decoder_target_tokens", "decoder_input_tokens",
                                    "decoder_loss_weights"}
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_generated_task_next_fit_batches_match_seqio_get_dataset(registered):
    name = "gen_table_lookup_fs_noopt"  # NUM_TRAIN examples: fewer than seqio's flush window of 256
    ours = list(pipeline.get_batches(name, task_feature_lengths=LENGTHS, global_batch_size=4, seed=0,
                                     shuffle=False, pack=True, max_open_rows=1, num_epochs=1))
    ref = list(seqio.get_dataset(name, LENGTHS, seqio.EncDecFeatureConverter(pack=True), dataset_split="train",
                                 shuffle=False, num_epochs=1, batch_size=4).as_numpy_iterator())
    assert len(ours) == len(ref) >= 2
    for a, b in zip(ours, ref):
        for k in pipeline.MODEL_FEATURES:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _rows(batches):
    return [tuple(r[r > 0].tolist()) for b in batches for r in b["encoder_input_tokens"]]


@pytest.mark.parametrize("shuffle", [False, True])
def test_host_shards_are_disjoint_and_cover(hand_task, shuffle):
    lengths = {"inputs": 8, "targets": 8}
    full = _rows(pipeline.get_batches(hand_task, task_feature_lengths=lengths, global_batch_size=2, seed=1,
                                      shuffle=shuffle, pack=False, num_epochs=1))
    shards = [_rows(pipeline.get_batches(hand_task, task_feature_lengths=lengths, global_batch_size=2, seed=1,
                                         shuffle=shuffle, pack=False, num_epochs=1, shard_index=i, num_shards=2))
              for i in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3  # per-host batch 1, 6 examples over 2 hosts
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(full) == sorted(tuple(i + [1]) for i in HAND_INPUTS)


@pytest.fixture(scope="module")
def marked_mixture():
    """Three pre-tokenized tasks whose tokens name the task (10, 20, 30), mixed at rates 1:2:5."""
    rates = {}
    for mark, rate, n in ((10, 1, 5), (20, 2, 7), (30, 5, 11)):
        def dataset_fn(split, shuffle_files, seed=None, mark=mark, n=n):
            return tf.data.Dataset.from_tensor_slices({"inputs": tf.fill([n, 2], mark) + tf.range(n)[:, None],
                                                       "targets": tf.fill([n, 1], mark)})

        rates[_register_pretokenized(f"test_marked_{mark}", dataset_fn)] = rate
    mixing.register_mixture("test_marked_mix", rates)
    return "test_marked_mix", rates


def test_mixture_draws_follow_rates_and_epochs_exhaust(marked_mixture):
    name, _ = marked_mixture
    lengths = {"inputs": 8, "targets": 4}
    stream = pipeline.token_stream(name, task_feature_lengths=lengths, seed=3)
    counts = collections.Counter(int(next(stream)[1][0]) for _ in range(8000))
    for mark, p in ((10, 1 / 8), (20, 2 / 8), (30, 5 / 8)):
        sd = (8000 * p * (1 - p)) ** 0.5
        assert abs(counts[mark] - 8000 * p) < 4 * sd, counts
    # One epoch: every example of every task exactly once, whatever the draws.
    once = [(tuple(a.tolist()), tuple(b.tolist()))
            for a, b in pipeline.token_stream(name, task_feature_lengths=lengths, seed=3, num_epochs=1)]
    want = [((m + i, m + i, 1), (m, 1)) for m, n in ((10, 5), (20, 7), (30, 11)) for i in range(n)]
    assert sorted(once) == sorted(want)
    again = [(tuple(a.tolist()), tuple(b.tolist()))
             for a, b in pipeline.token_stream(name, task_feature_lengths=lengths, seed=3, num_epochs=1)]
    assert again == once


def test_same_seed_same_batches_and_resume_equals_skipping(registered):
    kw = dict(task_feature_lengths=LENGTHS, global_batch_size=4, pack=True)
    run = pipeline.get_batches(SMALL_MIX, seed=7, **kw)
    full = [next(run) for _ in range(6)]
    again = pipeline.get_batches(SMALL_MIX, seed=7, **kw)
    for a, b in zip(full, [next(again) for _ in range(6)]):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    resumed = pipeline.get_batches(SMALL_MIX, seed=7, start_batch=4, **kw)
    for a, b in zip(full[4:], [next(resumed) for _ in range(2)]):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    other = next(pipeline.get_batches(SMALL_MIX, seed=8, **kw))
    assert not np.array_equal(other["encoder_input_tokens"], full[0]["encoder_input_tokens"])
    for b in full:
        assert all(v.shape[0] == 4 and v.dtype == np.int32 for v in b.values())
        assert b["encoder_input_tokens"].shape[1] == 256 and b["decoder_target_tokens"].shape[1] == 64


def test_batch_errors_say_what_and_how(registered):
    with pytest.raises(ValueError, match="multiple of the number of hosts"):
        pipeline.get_batches(SMALL_MIX, task_feature_lengths=LENGTHS, global_batch_size=5, seed=0, num_shards=2)
    with pytest.raises(pipeline.UnknownTaskError) as e:
        pipeline.get_batches("gen_sort_word_zs_opt", task_feature_lengths=LENGTHS, global_batch_size=4, seed=0)
    assert "gen_sort_word_zs_opt" in str(e.value) and "gen_sort_words_zs_opt" in str(e.value)
    assert "python run.py inspect" in str(e.value)
    with pytest.raises(ValueError, match="split"):
        pipeline.get_batches("gen_sort_words_eval", task_feature_lengths=LENGTHS, global_batch_size=4, seed=0)
    assert isinstance(e.value, DataError)  # the launcher prints it as one line


def test_short_inputs_warn_with_the_gin_binding(registered, caplog):
    with caplog.at_level("WARNING", logger="flan_mix.data.pipeline"):
        pipeline.token_stream(SMALL_MIX, task_feature_lengths={"inputs": 100, "targets": 64}, seed=0)
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "task_feature_lengths['inputs']=100 is below the 256 tokens" in msg
    assert "register_generated_tasks.max_input_tokens" in msg
    caplog.clear()
    with caplog.at_level("WARNING", logger="flan_mix.data.pipeline"):
        pipeline.token_stream(SMALL_MIX, task_feature_lengths=LENGTHS, seed=0)
    assert not caplog.records


def test_eval_examples(registered, vocabulary):
    exs = pipeline.get_eval_examples("gen_larger_number_mc_eval")
    assert len(exs) == NUM_VAL
    val = collection.generate_split("larger_number_mc", "validation", NUM_VAL, seed=0)
    for ex, raw in zip(exs, val):
        assert ex["inputs"].dtype == np.int32 and ex["inputs"][-1] == 1
        assert vocabulary.decode(ex["inputs"][:-1].tolist()) == ex["inputs_pretokenized"]
        assert ex["inputs_pretokenized"].startswith(raw["question"])
        assert all(f"- {o}" in ex["inputs_pretokenized"] for o in raw["options"])  # fixed plain options list
        assert ex["targets_pretokenized"] == raw["answer"] == ex["answer"]
        assert ex["template_type"] == "zs_opt" and ex["task_name"] == "larger_number_mc"
    free = pipeline.get_eval_examples("gen_sort_words_eval", max_examples=3, feature_length=6)
    assert len(free) == 3
    assert all(len(e["inputs"]) <= 6 and e["inputs"][-1] == 1 for e in free)
    assert free[0]["template_type"] == "zs_noopt"
    with pytest.raises(ValueError, match="is a mixture"):
        pipeline.get_eval_examples(SMALL_MIX)
    with pytest.raises(pipeline.UnknownTaskError, match="gen_sort_words_eval"):
        pipeline.get_eval_examples("gen_sort_wrds_eval")


def test_inspect_token_stats_reads_the_training_stream(marked_mixture):
    from flan_mix.data import inspect_cli
    name, _ = marked_mixture
    stats = inspect_cli.token_stats(name, num_examples=100)  # one epoch holds 23 examples: all of them
    assert stats["inputs"]["mean"] == stats["inputs"]["max"] == 3  # two marked tokens + EOS
    assert stats["targets"]["mean"] == stats["targets"]["max"] == 2

"""IFD (flan_mix.curation.ifd) against HF transformers, selection by hand, and the whole stage through run.py.

The peers: a random HF T5ForConditionalGeneration and LlamaForCausalLM, converted to our params; texts are
tokenized with seqio's ByteVocabulary (a real vocabulary small enough for tiny models: UTF-8 bytes + 3, EOS 1)
and the HF side builds its own ids from the bytes, then takes its own loss."""
import json
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the HF peer tests need torch (CPU build is enough)")
transformers = pytest.importorskip("transformers", reason="the HF peer tests need HF transformers")

import seqio  # noqa: E402

from flan_mix.curation import ifd  # noqa: E402
from flan_mix.curation.records import prompt_text  # noqa: E402
from flan_mix.infer.loading import LoadedModel  # noqa: E402
from flan_mix.models import convert, hf_llama  # noqa: E402
from flan_mix.models.decoder_only import DecoderOnlyModel  # noqa: E402
from flan_mix.models.encoder_decoder import EncoderDecoderModel  # noqa: E402
from flan_mix.models.llama import LlamaConfig  # noqa: E402
from flan_mix.models.t5 import T5Config  # noqa: E402
from flan_mix.runtime import partitioning  # noqa: E402

VOCAB = 259  # seqio.ByteVocabulary: 0 pad, 1 EOS, 2 UNK, bytes at 3..258
EOS, BOS = 1, 2  # BOS: the Llama peer's first token (our LlamaConfig.bos_id)
EMB, LAYERS, HEADS, HEAD_DIM, MLP = 32, 2, 2, 16, 64
LENGTHS = {"inputs": 48, "targets": 24}

RECORDS = [
    {"id": "a", "instruction": "Sort the words.", "input": "pear apple fig", "output": "apple fig pear"},
    {"id": "b", "instruction": "Is 7 larger than 3?", "input": "", "output": "yes"},
    {"id": "c", "instruction": "Repeat after me.", "input": "hello there", "output": "hello there"},
    # A prompt longer than LENGTHS["inputs"]: cut (EOS kept), still scored.
    {"id": "d", "instruction": "Summarize: " + "lorem ipsum " * 8, "input": "", "output": "lorem"},
    {"id": "e", "instruction": "Say nothing.", "input": "", "output": "  "},  # empty: skipped
    {"id": "f", "instruction": "Count.", "input": "", "output": "one two three four five six seven"},  # too long
    {"id": "g", "instruction": "Name a colour.", "input": "", "output": "red", "error": "oracle timed out"},
]


def _bytes(text):
    return [b + 3 for b in text.encode("utf-8")]


def _scale(model):
    # HF's init gives near-uniform logits, where every IFD would be ~1 and a wrong prompt would go unseen.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif p.ndim == 2:
                p.normal_(0.0, 1.0 / np.sqrt(p.shape[1]) if "embed" not in name and "shared" not in name else 1.0)
            else:
                p.normal_(0.0, 1.0)
    return model


def _state(model):
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def _t5_peer():
    torch.manual_seed(0)
    config = transformers.T5Config(
        d_model=EMB, d_kv=HEAD_DIM, num_heads=HEADS, d_ff=MLP, num_layers=LAYERS, num_decoder_layers=LAYERS,
        vocab_size=VOCAB, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=EOS)
    config._attn_implementation = "eager"
    hf = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        hf.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, EMB))  # T5 1.1: its own output layer
    _scale(hf)
    params = convert.params_from_hf_state_dict(_state(hf), LAYERS, LAYERS, HEADS, HEAD_DIM)
    ours = EncoderDecoderModel(T5Config(vocab_size=VOCAB, emb_dim=EMB, num_heads=HEADS, head_dim=HEAD_DIM,
                                        mlp_dim=MLP, num_encoder_layers=LAYERS, num_decoder_layers=LAYERS,
                                        dropout_rate=0.0))
    return hf, ours, params


def _llama_peer():
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=VOCAB, emb_dim=EMB, num_layers=LAYERS, num_heads=HEADS, num_kv_heads=1,
                      head_dim=HEAD_DIM, mlp_dim=MLP, rope_theta=10000.0, norm_eps=1e-5, bos_id=BOS, eos_id=EOS)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=EMB, intermediate_size=MLP, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=1, head_dim=HEAD_DIM, rms_norm_eps=1e-5,
        tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=0, max_position_embeddings=256)
    config._attn_implementation = "eager"
    hf = _scale(transformers.LlamaForCausalLM(config).eval())
    return hf, DecoderOnlyModel(cfg), hf_llama.params_from_hf_state_dict(_state(hf), cfg)


def _hf_loss(family, hf, prompt_ids, target_ids):
    """HF's own mean cross entropy of target_ids (EOS appended) after prompt_ids (EOS appended)."""
    prompt, target = prompt_ids + [EOS], target_ids + [EOS]
    with torch.no_grad():
        if family == "t5":
            out = hf(input_ids=torch.tensor([prompt]), labels=torch.tensor([target]))
        else:
            seq = [BOS] + prompt + target
            labels = [-100] * (1 + len(prompt)) + target  # the loss on the target tokens only
            out = hf(input_ids=torch.tensor([seq]), labels=torch.tensor([labels]))
    return float(out.loss)


def _fit(ids):
    return ids[:LENGTHS["inputs"] - 1]  # what the stage does to a long prompt (EOS re-added after)


@pytest.fixture(scope="module", params=["t5", "llama"])
def peer(request):
    hf, model, params = _t5_peer() if request.param == "t5" else _llama_peer()
    loaded = LoadedModel(model=model, params=params, mesh=partitioning.make_mesh(),
                         vocabulary=seqio.ByteVocabulary())
    return request.param, hf, loaded


def test_ifd_matches_hf(peer):
    family, hf, loaded = peer
    got = ifd.score_ifd(loaded, RECORDS, lengths=LENGTHS, batch_size=4)
    assert got[4] == {"skipped": "empty output"}
    assert got[5]["skipped"].startswith("output truncated: 34 tokens with EOS > TASK_FEATURE_LENGTHS['targets']=24")
    assert got[6] == {"skipped": "not scored: the input record carries 'error' (oracle timed out)"}
    for rec, result in zip(RECORDS[:4], got[:4]):
        out = _bytes(rec["output"])
        conditioned = _hf_loss(family, hf, _fit(_bytes(prompt_text(rec))), out)
        direct = _hf_loss(family, hf, [], out)
        assert result["loss_conditioned"] == pytest.approx(conditioned, abs=1e-4), rec["id"]
        assert result["loss_direct"] == pytest.approx(direct, abs=1e-4), rec["id"]
        assert result["ifd"] == pytest.approx(conditioned / direct, abs=1e-4), rec["id"]
    # The weights are scaled so that the prompt matters: the ratios differ from 1 and from each other.
    ratios = [r["ifd"] for r in got[:4]]
    assert len({round(r, 3) for r in ratios}) == 4 and all(abs(r - 1) > 1e-3 for r in ratios)


def test_reversed_ifd_matches_hf(peer):
    family, hf, loaded = peer
    records = RECORDS[:3]
    got = ifd.score_reversed_ifd(loaded, records, lengths={"inputs": 48, "targets": 40}, batch_size=2)
    for rec, result in zip(records, got):
        instruction = _bytes(prompt_text(rec))
        given_output = _hf_loss(family, hf, _bytes(rec["output"]), instruction)
        alone = _hf_loss(family, hf, [], instruction)
        assert result["loss_instruction_given_output"] == pytest.approx(given_output, abs=1e-4)
        assert result["loss_instruction"] == pytest.approx(alone, abs=1e-4)
        assert result["reversed_ifd"] == pytest.approx(given_output / alone, abs=1e-4)
    short = ifd.score_reversed_ifd(loaded, records, lengths={"inputs": 48, "targets": 16}, batch_size=2)
    assert short[0]["skipped"].startswith("instruction truncated: 32 tokens")  # "Sort the words.\n\npear apple fig"


def test_mean_hidden_states_match_hf(peer):
    family, hf, loaded = peer
    texts = ["Sort the words.", "Is 7 larger than 3? Answer yes or no."]
    ours = ifd.instruction_embeddings(loaded, texts, inputs_length=48, batch_size=4)
    for row, text in zip(ours, texts):
        ids = _bytes(text) + [EOS]
        with torch.no_grad():
            if family == "t5":
                hidden = hf.encoder(input_ids=torch.tensor([ids])).last_hidden_state[0]
            else:
                hidden = hf.model(input_ids=torch.tensor([[BOS] + ids])).last_hidden_state[0]
        np.testing.assert_allclose(row, hidden.mean(0).numpy(), atol=1e-4)


def _scored(values):
    return [{"id": str(i), "instruction": "", "input": "", "output": "x", **v} for i, v in enumerate(values)]


def test_selection_by_hand():
    recs = _scored([{"ifd": 0.50}, {"ifd": 0.93}, {"ifd": 1.20}, {"skipped": "empty output"}, {"ifd": 0.71},
                    {"ifd": 0.93}, {"ifd": 0.20}, {"ifd": math.inf}, {"ifd": 0.99}, {"ifd": 0.05}, {"ifd": 0.6}])
    # 10 scored (the skipped one does not count); IFD 1.2 and inf are never picked.
    assert [r["id"] for r in ifd.select(recs, top=3)] == ["8", "1", "5"]  # 0.99, then the tie in file order
    assert [r["id"] for r in ifd.select(recs, fraction=0.1)] == ["8"]  # ceil(0.1 * 10) = 1
    assert [r["id"] for r in ifd.select(recs, fraction=0.25)] == ["8", "1", "5"]  # ceil(2.5) = 3
    assert [r["id"] for r in ifd.select(recs, top=100)] == ["8", "1", "5", "4", "10", "0", "6", "9"]
    with pytest.raises(ValueError):
        ifd.select(recs)


def test_pre_experience_picks_the_middle_of_each_cluster():
    rng = np.random.default_rng(0)
    # Two far-apart clusters of 8; in each, perplexities 1..8: the 25-75 band is [2.75, 6.25] -> 3, 4, 5, 6.
    emb = np.concatenate([rng.normal(0, 0.1, (8, 4)), rng.normal(10, 0.1, (8, 4))])
    ppl = np.concatenate([np.arange(1, 9), np.arange(1, 9)]).astype(float)
    settings = ifd.ifd_pre_experience(num_clusters=2, per_cluster=3, seed=0)
    picked = ifd.pick_pre_experience(emb, ppl, settings)
    assert len(picked) == 6
    assert sum(i < 8 for i in picked) == 3 and all(3 <= ppl[i] <= 6 for i in picked)
    # More clusters asked for than items: one per item, each item its own band.
    assert ifd.pick_pre_experience(emb[:3], ppl[:3], ifd.ifd_pre_experience(num_clusters=100)) == [0, 1, 2]
    # A cluster of 2 has no member inside its 25-75 band: topped up from those nearest its median.
    two = ifd.pick_pre_experience(emb[[0, 1, 8]], np.array([1.0, 5.0, 3.0]),
                                  ifd.ifd_pre_experience(num_clusters=2, per_cluster=1))
    assert len(two) == 2 and 2 in two


def test_bad_input_and_flags_are_named(tmp_path):
    from flan_mix.curation.records import RecordError, read_records
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RECORDS[0]) + "\n" + '{"id": "x", "instruction": "oops"\n')
    with pytest.raises(RecordError, match=r"bad\.jsonl:2: not valid JSON"):
        read_records(str(bad))
    with pytest.raises(ValueError, match="--select_fraction=1.5"):
        ifd.ifd_command(input=str(bad), output=str(tmp_path / "o.jsonl"), select_fraction="1.5",
                        selected_output="s.jsonl")
    with pytest.raises(ValueError, match="give one of them"):
        ifd.ifd_command(input=str(bad), output=str(tmp_path / "o.jsonl"), select_fraction="0.1", select_top="2",
                        selected_output="s.jsonl")


def test_scoring_resumes_after_an_interruption(tmp_path):
    """A run cut off mid-file (the last line half written) resumes: same records, same values, no duplicates."""
    hf, model, params = _t5_peer()
    loaded = LoadedModel(model=model, params=params, mesh=partitioning.make_mesh(), vocabulary=seqio.ByteVocabulary())
    records = [{"id": f"r{i}", "instruction": f"Echo {i}.", "input": "", "output": f"{i} {i}"} for i in range(9)]
    full, cut = tmp_path / "full.jsonl", tmp_path / "cut.jsonl"
    assert ifd.score_file(loaded, records, str(full), lengths=LENGTHS, batch_size=2) == 9
    lines = full.read_text().splitlines(keepends=True)
    cut.write_text("".join(lines[:4]) + lines[4][:len(lines[4]) // 2])  # what a kill mid-write leaves
    assert ifd.score_file(loaded, records, str(cut), lengths=LENGTHS, batch_size=2) == 5
    again = [json.loads(line) for line in cut.read_text().splitlines()]
    assert [r["id"] for r in again] == [r["id"] for r in records]
    for a, b in zip(again, map(json.loads, lines)):
        assert a.keys() == b.keys() and a["ifd"] == pytest.approx(b["ifd"], abs=1e-6)
    assert ifd.score_file(loaded, records, str(cut), lengths=LENGTHS, batch_size=2) == 0

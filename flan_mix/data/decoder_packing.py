"""Decoder-only batch layouts: packing (inputs, targets) examples into one token sequence per row, in numpy.

Two layouts, with the feature names of seqio's decoder converters:

* ``"decoder"`` (seqio.DecoderFeatureConverter with targets only, i.e. LMFeatureConverter): each example's
  targets, trimmed to ``lengths["targets"]``, are one segment; the inputs are not used. Rows are
  ``lengths["targets"]`` long.
* ``"prefix_lm"`` (seqio.PrefixLMFeatureConverter): each example's inputs, trimmed to ``lengths["inputs"]``, and
  targets, trimmed to ``lengths["targets"]``, are concatenated into one segment. Rows are
  ``lengths["inputs"] + lengths["targets"]`` long: seqio's PrefixLM converter also sums the task feature lengths
  into one decoder length, so with the same task_feature_lengths the rows have seqio's shape.

Features, per row (0 is padding everywhere):
  decoder_target_tokens   the segments, one after another, then padding;
  decoder_input_tokens    each segment's tokens shifted right by one within the segment, starting at bos_id
                          (0, as in seqio), so a segment never sees the previous one's last token;
  decoder_loss_weights    1 on non-padding tokens; for prefix_lm with loss_on_targets_only (the default) only on
                          the targets part of each segment;
  decoder_segment_ids     1, 2, ... per segment (packed only);
  decoder_positions       0, 1, ... restarting in each segment, so rotary embeddings see every example from 0
                          (packed only);
  decoder_causal_attention  (prefix_lm only) 1 on the first len(inputs) + 1 positions of each segment. Those are
                          the positions whose *decoder input* is BOS or an inputs token (the shift moves the
                          region right by one), i.e. exactly the prefix a prefix-LM attends to bidirectionally;
                          the last of them predicts the first target token. This is seqio's
                          ``positions < inputs_width + 1``.

A plain causal LM uses the prefix_lm features and ignores decoder_causal_attention; a prefix-LM lets a query
attend to a later key of its segment where both are flagged.

Packing is first-fit over up to ``max_open_rows`` open rows, as flan_mix.data.packing does for
encoder-decoder rows (there with two capacities, here with one); ``max_open_rows=1`` is next-fit and gives
seqio's packed rows (without its window flushes: seqio closes the open row every max(feature lengths) examples).
The unpacked variants give one example per row, padded, like seqio's ``pack=False``.

This module needs numpy only (no TensorFlow), so the model and trainer side may import its constants and
model_feature_lengths().
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping

import numpy as np

from flan_mix.data import packing

ENCODER_DECODER = "encoder_decoder"
DECODER = "decoder"
PREFIX_LM = "prefix_lm"
LAYOUTS = (ENCODER_DECODER, DECODER, PREFIX_LM)

DECODER_UNPACKED_FEATURES = ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights")
DECODER_FEATURES = DECODER_UNPACKED_FEATURES + ("decoder_segment_ids", "decoder_positions")
PREFIX_LM_UNPACKED_FEATURES = DECODER_UNPACKED_FEATURES + ("decoder_causal_attention",)
PREFIX_LM_FEATURES = DECODER_FEATURES + ("decoder_causal_attention",)

# layout -> (packed features, unpacked features)
_FEATURES = {
    ENCODER_DECODER: (packing.PACKED_FEATURES, packing.UNPACKED_FEATURES),
    DECODER: (DECODER_FEATURES, DECODER_UNPACKED_FEATURES),
    PREFIX_LM: (PREFIX_LM_FEATURES, PREFIX_LM_UNPACKED_FEATURES),
}


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown batch layout {layout!r}; expected one of {', '.join(map(repr, LAYOUTS))} "
                         "(encoder_decoder for T5, decoder for targets-only LM data, prefix_lm for inputs + "
                         "targets in one sequence, which also serves a plain causal LM).")


def layout_features(layout: str, pack: bool = True) -> tuple[str, ...]:
    """The feature names of a layout's batches, in a fixed order."""
    check_layout(layout)
    return _FEATURES[layout][0 if pack else 1]


def _check_lengths(layout: str, lengths: Mapping[str, int]) -> None:
    if layout == DECODER:
        if lengths.get("targets", 0) < 1:
            raise ValueError(f"the decoder layout needs a positive 'targets' feature length, got {dict(lengths)}")
    else:
        packing._check_lengths(lengths)  # the same rule as encoder-decoder: positive 'inputs' and 'targets'


def row_length(layout: str, lengths: Mapping[str, int]) -> int:
    """Tokens per decoder row: targets for "decoder", inputs + targets for "prefix_lm"."""
    check_layout(layout)
    if layout == ENCODER_DECODER:
        raise ValueError("encoder_decoder rows have two lengths (inputs, targets); see model_feature_lengths().")
    _check_lengths(layout, lengths)
    return lengths["targets"] + (lengths["inputs"] if layout == PREFIX_LM else 0)


def model_feature_lengths(layout: str, task_feature_lengths: Mapping[str, int],
                          pack: bool = True) -> dict[str, int]:
    """{feature: length} of a layout's batches for these task feature lengths (seqio's
    get_model_feature_lengths), e.g. to build a dummy batch for model init."""
    features = layout_features(layout, pack)
    if layout == ENCODER_DECODER:
        packing._check_lengths(task_feature_lengths)
        return {k: task_feature_lengths["inputs" if k.startswith("encoder") else "targets"] for k in features}
    n = row_length(layout, task_feature_lengths)
    return {k: n for k in features}


# A segment is (tokens, n_prefix): the example's tokens in the row and how many of them are inputs (0 for the
# decoder layout).
_Segment = tuple[np.ndarray, int]


def _segments(examples: Iterable[tuple[np.ndarray, np.ndarray]], layout: str,
              lengths: Mapping[str, int]) -> Iterator[_Segment]:
    _check_lengths(layout, lengths)
    cap_tg = lengths["targets"]
    for n, (inputs, targets) in enumerate(examples):
        targets = np.asarray(targets)[:cap_tg]
        if not len(targets):
            # seqio pads an empty target with one 0, which its packer then cuts off again; there is no sound
            # row for such an example, so say so instead of dropping it.
            raise ValueError(f"example {n} of the stream has empty targets; decoder layouts need at least one "
                             "target token (seqio tasks append EOS, so check the task's output features).")
        if layout == DECODER:
            yield targets, 0
        else:
            inputs = np.asarray(inputs)[:lengths["inputs"]]
            yield np.concatenate([inputs, targets]), len(inputs)


class DecoderRow:
    """The segments of one packed row and the tokens they use."""

    __slots__ = ("segments", "used")

    def __init__(self):
        self.segments: list[_Segment] = []
        self.used = 0


def decoder_rows(segments: Iterable[_Segment], length: int, max_open_rows: int = 64,
                 open_rows: list[DecoderRow] | None = None) -> Iterator[DecoderRow]:
    """First-fit: each segment goes into the first open row with room, else into a new row; when
    max_open_rows rows are open, the oldest is emitted first. Segments must be at most `length` long.
    open_rows: the caller's list of open rows, as in flan_mix.data.packing.packed_rows (resumable state)."""
    if max_open_rows < 1:
        raise ValueError(f"max_open_rows must be >= 1, got {max_open_rows}")
    open_rows = [] if open_rows is None else open_rows
    for segment in segments:
        n = len(segment[0])
        evicted = None
        for row in open_rows:
            if row.used + n <= length:
                break
        else:
            if len(open_rows) == max_open_rows:
                evicted = open_rows.pop(0)
            row = DecoderRow()
            open_rows.append(row)
        row.segments.append(segment)
        row.used += n
        if evicted is not None:  # yielded after the segment is placed, so no example is in flight
            yield evicted
    while open_rows:
        yield open_rows.pop(0)


def rows_state(open_rows: list[DecoderRow]) -> list[list[list]]:
    """A snapshot of the open rows: [[tokens, n_prefix] per segment] per row (arrays shared, as in
    packing.rows_state)."""
    return [[[tokens, n_prefix] for tokens, n_prefix in row.segments] for row in open_rows]


def rows_from_state(state: list) -> list[DecoderRow]:
    rows = []
    for segments in state:
        row = DecoderRow()
        row.segments = [(np.asarray(tokens, np.int32), int(n_prefix)) for tokens, n_prefix in segments]
        row.used = sum(len(t) for t, _ in row.segments)
        rows.append(row)
    return rows


def _empty_batch(batch_size: int, length: int, features: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {k: np.zeros((batch_size, length), np.int32) for k in features}


def _fill_row(segments: list[_Segment], out: Mapping[str, np.ndarray], i: int, *, prefix_lm: bool,
              loss_on_targets_only: bool, bos_id: int) -> None:
    """Writes one row's segments into row i of the (zeroed) batch arrays."""
    start = 0
    for seg, (tokens, n_prefix) in enumerate(segments, start=1):
        end = start + len(tokens)
        out["decoder_target_tokens"][i, start:end] = tokens
        # Teacher forcing within the segment: BOS, then the segment's own tokens shifted right by one.
        out["decoder_input_tokens"][i, start] = bos_id
        out["decoder_input_tokens"][i, start + 1:end] = tokens[:-1]
        if "decoder_segment_ids" in out:
            out["decoder_segment_ids"][i, start:end] = seg
            out["decoder_positions"][i, start:end] = np.arange(len(tokens))
        loss_from = n_prefix if loss_on_targets_only else 0
        out["decoder_loss_weights"][i, start + loss_from:end] = tokens[loss_from:] != 0
        if prefix_lm:
            # inputs + 1 positions: the ones whose decoder input is BOS or an inputs token (see the docstring).
            out["decoder_causal_attention"][i, start:start + min(n_prefix + 1, len(tokens))] = 1
        start = end


def pack_decoder_batches(examples: Iterable[tuple[np.ndarray, np.ndarray]], layout: str,
                         lengths: Mapping[str, int], batch_size: int, max_open_rows: int = 64, *,
                         loss_on_targets_only: bool = True, bos_id: int = 0,
                         open_rows: list[DecoderRow] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Packed int32 batches {feature: [batch_size, row_length(layout, lengths)]} of (inputs, targets) token
    arrays; features layout_features(layout). A last partial batch is dropped (like drop_remainder).
    open_rows: as in decoder_rows; between batches it holds every example read and not yet in a batch."""
    if layout == ENCODER_DECODER:
        raise ValueError("pack_decoder_batches packs decoder layouts; use packing.pack_batches for "
                         "encoder_decoder.")
    features = layout_features(layout, pack=True)
    length = row_length(layout, lengths)
    batch: list[DecoderRow] = []
    for row in decoder_rows(_segments(examples, layout, lengths), length, max_open_rows, open_rows):
        batch.append(row)
        if len(batch) == batch_size:
            out = _empty_batch(batch_size, length, features)
            for i, r in enumerate(batch):
                _fill_row(r.segments, out, i, prefix_lm=layout == PREFIX_LM,
                          loss_on_targets_only=loss_on_targets_only, bos_id=bos_id)
            yield out
            batch = []


def unpacked_decoder_batches(examples: Iterable[tuple[np.ndarray, np.ndarray]], layout: str,
                             lengths: Mapping[str, int], batch_size: int, *, loss_on_targets_only: bool = True,
                             bos_id: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """One example per row, padded to row_length(layout, lengths): seqio's decoder converters with pack=False.
    A last partial batch is dropped."""
    if layout == ENCODER_DECODER:
        raise ValueError("unpacked_decoder_batches is for decoder layouts; use packing.unpacked_batches for "
                         "encoder_decoder.")
    features = layout_features(layout, pack=False)
    length = row_length(layout, lengths)
    out, n = _empty_batch(batch_size, length, features), 0
    for segment in _segments(examples, layout, lengths):
        _fill_row([segment], out, n, prefix_lm=layout == PREFIX_LM, loss_on_targets_only=loss_on_targets_only,
                  bos_id=bos_id)
        # Without segments seqio shifts the whole padded row, so the last token (EOS) reappears as the decoder
        # input after the segment; its loss weight is 0 either way.
        out["decoder_input_tokens"][n, 1:] = out["decoder_target_tokens"][n, :-1]
        n += 1
        if n == batch_size:
            yield out
            out, n = _empty_batch(batch_size, length, features), 0

"""Task 1, pre-sales dialogue understanding: tag attribute values in utterances.

:class:`SpanTagger` is the paper's baseline family: a transformer encoder, optionally a BiLSTM,
a linear layer giving per-token tag scores, and a linear-chain CRF (``use_lstm``/``use_crf``
switch between ``Bert``, ``Bert+CRF`` and ``Bert+BiLSTM+CRF``). Character spans are mapped to
BIO tags over sub-word tokens through the tokenizer's offsets, and decoded tags are mapped
back, so the same code serves Chinese (one character per token) and English text.
:class:`LexiconTagger` is a training-free baseline: longest-match lookup of the values seen in
training, each labelled with its most frequent attribute.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zjulab.crs.backbone import load_backbone
from zjulab.crs.config import TaggerConfig
from zjulab.crs.crf import LinearChainCRF, bio_constraints
from zjulab.crs.encoder_model import EncoderModel
from zjulab.crs.errors import CrsConfigError, NotTrainedError
from zjulab.crs.samples import UnderstandingExample
from zjulab.crs.task_scores import understanding_scores
from zjulab.crs.training import TrainHistory, module_device, seeded_init, train_loop

__all__ = [
    "LexiconTagger",
    "SpanTagger",
    "TaggerNet",
    "bio_tag_set",
    "spans_to_token_tags",
    "token_tags_to_spans",
]

logger = logging.getLogger(__name__)

Span = tuple[str, int, int]
Offsets = Sequence[tuple[int, int]]


def bio_tag_set(keys: Sequence[str]) -> list[str]:
    """``["O", "B-k1", "I-k1", ...]`` for the sorted distinct ``keys``."""
    tags = ["O"]
    for k in sorted(set(keys)):
        tags += [f"B-{k}", f"I-{k}"]
    return tags


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def spans_to_token_tags(text: str, offsets: Offsets, spans: Sequence[Span]) -> list[str]:
    """BIO tag of every token from character spans.

    A token belongs to the span its first non-space character falls in; the first such token
    of a span gets ``B-``, later ones ``I-``. A white-space-only token inside a span that is
    already open (the space of ``high resolution``) gets ``I-``, so a multi-word value is one
    unbroken ``B- I- I-`` run (an ``O`` there would make the gold sequence one the BIO-constrained
    CRF forbids). Special tokens (empty offsets) get ``O``.
    """
    tags = []
    opened: set[int] = set()
    for s0, e0 in offsets:
        s, e = _trim(text, s0, e0)
        if s >= e:
            inside = (
                next((j for j in opened if spans[j][1] <= s0 and e0 <= spans[j][2]), None)
                if e0 > s0
                else None
            )
            tags.append("O" if inside is None else "I-" + spans[inside][0])
            continue
        hit = next((j for j, (_, a, b) in enumerate(spans) if a <= s < b), None)
        if hit is None:
            tags.append("O")
            continue
        tags.append(("I-" if hit in opened else "B-") + spans[hit][0])
        opened.add(hit)
    return tags


def token_tags_to_spans(text: str, offsets: Offsets, tags: Sequence[str]) -> list[Span]:
    """Character spans from token BIO tags.

    An ``I-k`` that does not continue a ``k`` span starts one.
    """
    spans: list[Span] = []
    cur: list[Any] | None = None
    for (s, e), tag in zip(offsets, tags):
        s, e = _trim(text, s, e)
        if s >= e and cur is not None and tag == "I-" + cur[0]:
            continue  # white space inside a multi-word value keeps the span open
        if s >= e or tag == "O":
            if cur:
                spans.append((cur[0], cur[1], cur[2]))
            cur = None
            continue
        kind, key = tag[:2], tag[2:]
        if kind == "I-" and cur is not None and cur[0] == key:
            cur[2] = e
            continue
        if cur:
            spans.append((cur[0], cur[1], cur[2]))
        cur = [key, s, e]
    if cur:
        spans.append((cur[0], cur[1], cur[2]))
    return spans


class TaggerNet(nn.Module):
    """Encoder -> dropout -> (BiLSTM) -> linear tag scores -> (CRF).

    Args:
        encoder: A transformers ``AutoModel``.
        tags: BIO tag names (index order).
        use_lstm: Add the BiLSTM.
        use_crf: Add the CRF (with BIO transition constraints).
        lstm_hidden: LSTM size per direction.
        dropout: Dropout on the encoder output.
    """

    def __init__(
        self,
        encoder: nn.Module,
        tags: Sequence[str],
        *,
        use_lstm: bool = True,
        use_crf: bool = True,
        lstm_hidden: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.tags = list(tags)
        hidden = int(encoder.config.hidden_size)  # type: ignore[union-attr,arg-type]
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(hidden, lstm_hidden, batch_first=True, bidirectional=True) if use_lstm else None
        self.proj = nn.Linear(2 * lstm_hidden if use_lstm else hidden, len(self.tags))
        if use_crf:
            start, trans = bio_constraints(self.tags)
            self.crf: LinearChainCRF | None = LinearChainCRF(
                len(self.tags), start_allowed=start, transition_allowed=trans
            )
        else:
            self.crf = None

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the layers on top of the encoder."""
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.")]

    def emissions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Per-token tag scores ``[B, L, T]``."""
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        x = self.dropout(h.float())
        if self.lstm is not None:
            lengths = attention_mask.sum(1).clamp(min=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            x, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return self.proj(x)

    def loss(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """CRF negative log-likelihood, or token cross-entropy without a CRF."""
        em = self.emissions(input_ids, attention_mask)
        mask = attention_mask.bool()
        if self.crf is not None:
            return self.crf(em, labels, mask)
        return nn.functional.cross_entropy(em[mask], labels[mask])

    @torch.no_grad()
    def decode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
        """Best tag ids per sequence (Viterbi with a CRF, arg-max without)."""
        em = self.emissions(input_ids, attention_mask)
        mask = attention_mask.bool()
        if self.crf is not None:
            return self.crf.decode(em, mask)
        lengths = mask.long().sum(1).tolist()
        best = em.argmax(-1).tolist()
        return [row[:n] for row, n in zip(best, lengths)]


class SpanTagger(EncoderModel):
    """Trainable encoder(+BiLSTM)(+CRF) span tagger for task 1.

    Args:
        config: Training and architecture settings.
        model: A loaded encoder (trained in place) instead of ``config.model_name_or_path``.
        tokenizer: Its (fast) tokenizer; needed for character offsets.

    Example:
        >>> tagger = SpanTagger(TaggerConfig(max_steps=50), model=enc, tokenizer=tok)  # doctest: +SKIP
        >>> tagger.fit(train_examples)  # doctest: +SKIP
        >>> tagger.predict(["I want a dry skin toner"])  # doctest: +SKIP
    """

    task = "understanding"
    config_class = TaggerConfig

    def __init__(
        self, config: TaggerConfig | None = None, *, model: Any = None, tokenizer: Any = None
    ) -> None:
        super().__init__(config, model=model, tokenizer=tokenizer)
        self.config: TaggerConfig
        self.net: TaggerNet | None

    def _meta(self) -> dict[str, Any]:
        return {"tags": self.tags}

    def _restore(self, meta: dict[str, Any]) -> None:
        self._build(meta["tags"])

    @property
    def tags(self) -> list[str]:
        """The BIO tag set (after :meth:`fit` or :meth:`load`)."""
        if self.net is None:
            raise NotTrainedError("SpanTagger has no tag set before fit() or load()")
        return self.net.tags

    def _build(self, tags: Sequence[str]) -> None:
        cfg = self.config
        encoder, self.tokenizer = load_backbone(
            self._model_src, self._tok_src, device=cfg.device, dtype=cfg.dtype
        )
        if not getattr(self.tokenizer, "is_fast", False):
            raise CrsConfigError(
                f"SpanTagger needs a fast tokenizer (character offsets); {type(self.tokenizer).__name__} is not one"
            )
        with seeded_init(cfg.seed):
            net = TaggerNet(
                encoder,
                tags,
                use_lstm=cfg.use_lstm,
                use_crf=cfg.use_crf,
                lstm_hidden=cfg.lstm_hidden,
                dropout=cfg.dropout,
            )
        self.net = net.to(module_device(encoder))

    def _encode(self, texts: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[list[tuple[int, int]]]]:
        assert self.net is not None
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.config.max_length,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        offsets = [[(int(a), int(b)) for a, b in row] for row in enc.pop("offset_mapping").tolist()]
        dev = module_device(self.net)
        batch = {"input_ids": enc["input_ids"].to(dev), "attention_mask": enc["attention_mask"].to(dev)}
        return batch, offsets

    def fit(self, examples: Sequence[UnderstandingExample]) -> TrainHistory:
        """Build the tag set from ``examples`` and train.

        Raises:
            DataFormatError: No training examples.
        """
        keys = [k for e in examples for k, _, _ in e.spans]
        self._build(bio_tag_set(keys))
        assert self.net is not None
        index = {t: i for i, t in enumerate(self.net.tags)}

        def loss_fn(batch: list[UnderstandingExample]) -> torch.Tensor:
            assert self.net is not None
            enc, offsets = self._encode([e.text for e in batch])
            labels = torch.zeros_like(enc["input_ids"])
            for i, (e, offs) in enumerate(zip(batch, offsets)):
                tags = spans_to_token_tags(e.text, offs, e.spans)
                labels[i, : len(tags)] = torch.tensor([index.get(t, 0) for t in tags])
            return self.net.loss(enc["input_ids"], enc["attention_mask"], labels)

        return train_loop(
            self.net, examples, loss_fn, self.config, head_params=self.net.head_parameters(), desc="tagger"
        )

    def predict(self, texts: Sequence[str] | Sequence[UnderstandingExample]) -> list[list[Span]]:
        """Predicted ``(key, start, end)`` spans of each text.

        Raises:
            NotTrainedError: Before :meth:`fit` or :meth:`load`.
        """
        if self.net is None:
            raise NotTrainedError("SpanTagger.predict() called before fit() or load()")
        strs = [t.text if isinstance(t, UnderstandingExample) else t for t in texts]
        out: list[list[Span]] = []
        self.net.eval()
        bs = self.config.batch_size
        for i in range(0, len(strs), bs):
            chunk = strs[i : i + bs]
            enc, offsets = self._encode(chunk)
            paths = self.net.decode(enc["input_ids"], enc["attention_mask"])
            for text, offs, path in zip(chunk, offsets, paths):
                out.append(token_tags_to_spans(text, offs[: len(path)], [self.net.tags[t] for t in path]))
        return out

    def evaluate(self, examples: Sequence[UnderstandingExample]) -> dict[str, float]:
        """Span and pair P/R/F1 on ``examples`` (see :func:`~zjulab.crs.task_scores.understanding_scores`)."""
        return understanding_scores(examples, self.predict(examples))


class LexiconTagger:
    """Training-free baseline: longest-match lookup of the values seen in training.

    Each value string is labelled with the attribute it was most often annotated with; matches
    are case-insensitive, must not touch a letter or digit on either side (for alphabetic
    values), and do not overlap (longest first, then leftmost).
    """

    task = "understanding"

    def __init__(self) -> None:
        self.lexicon: dict[str, str] = {}

    def fit(self, examples: Sequence[UnderstandingExample]) -> LexiconTagger:
        """Collect the value -> attribute lexicon from the gold spans."""
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for e in examples:
            for k, a, b in e.spans:
                counts[e.text[a:b].lower()][k] += 1
        # the attribute seen most often with the value; equal counts by attribute name
        self.lexicon = {v: min(c, key=lambda k, n=c: (-n[k], k)) for v, c in counts.items() if v.strip()}
        return self

    def predict(self, texts: Sequence[str] | Sequence[UnderstandingExample]) -> list[list[Span]]:
        """Spans found by lookup."""
        if not self.lexicon:
            raise NotTrainedError("LexiconTagger.predict() called before fit()")
        values = sorted(self.lexicon, key=lambda v: (-len(v), v))
        out = []
        for t in texts:
            text = t.text if isinstance(t, UnderstandingExample) else t
            low = text.lower()
            taken = [False] * len(text)
            spans: list[Span] = []
            for v in values:
                pattern = re.escape(v)
                if v[:1].isalnum() and v.isascii():
                    pattern = rf"(?<![0-9a-z]){pattern}(?![0-9a-z])"
                for m in re.finditer(pattern, low):
                    a, b = m.start(), m.end()
                    if not any(taken[a:b]):
                        spans.append((self.lexicon[v], a, b))
                        for i in range(a, b):
                            taken[i] = True
            out.append(sorted(spans, key=lambda s: s[1]))
        return out

    def evaluate(self, examples: Sequence[UnderstandingExample]) -> dict[str, float]:
        """Span and pair P/R/F1 on ``examples``."""
        return understanding_scores(examples, self.predict(examples))

"""HieSqlParser: linking graph -> relation-aware encoder -> LM decoder with validity guarding."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zjulab.hiesql._torch import torch  # first: a typed error without the [torch] extra

# isort: split

from zjulab.common.device import resolve_device, resolve_dtype
from zjulab.common.io import atomic_directory
from zjulab.common.loading import load_causal_lm, load_encoder, load_tokenizer
from zjulab.common.progress import progress
from zjulab.common.seeding import seed_everything
from zjulab.hiesql.config import DecoderConfig, EncoderConfig, LinkingConfig, ParserConfig
from zjulab.hiesql.data import Interaction
from zjulab.hiesql.decoder import SQLDecoder
from zjulab.hiesql.encoder import HieSqlEncoder, collate_encoder_inputs
from zjulab.hiesql.encoder_input import EncoderInput, build_encoder_input, prefix_positions
from zjulab.hiesql.errors import HieSqlConfigError, ParserStoreError
from zjulab.hiesql.linking import build_linking_graph
from zjulab.hiesql.prompting import describe_schema, render_context
from zjulab.hiesql.reranking import Prediction, rerank_candidates
from zjulab.hiesql.schema import Schema

logger = logging.getLogger(__name__)

__all__ = ["HieSqlParser"]

FORMAT_VERSION = 1


@dataclass
class _Example:
    enc: EncoderInput
    prompt: list[int]
    target: list[int]


class HieSqlParser:
    """Context-dependent text-to-SQL parser (HIE-SQL).

    Each turn is parsed from the current utterance, the history utterances and the last predicted
    SQL: they are linked to the schema in a graph, encoded by a pretrained encoder with
    relation-aware layers, and decoded by a causal LM whose beam candidates are re-ranked by the
    validity guard.

    Args:
        encoder: The encoder module.
        encoder_tokenizer: Its tokenizer.
        decoder: The SQL decoder.
        config: Parser settings.
        device: Device the modules live on.
    """

    def __init__(
        self,
        encoder: HieSqlEncoder,
        encoder_tokenizer: Any,
        decoder: SQLDecoder,
        config: ParserConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.config = config or ParserConfig()
        self.device = resolve_device(device)
        self.encoder = encoder.to(self.device)
        self.encoder_tokenizer = encoder_tokenizer
        self.decoder = decoder.to(self.device)

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_modules(
        cls,
        encoder_model: Any,
        encoder_tokenizer: Any,
        lm: Any,
        lm_tokenizer: Any,
        config: ParserConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> HieSqlParser:
        """Build from already loaded models (e.g. tiny test models).

        Args:
            encoder_model: A bare encoder (``AutoModel``).
            encoder_tokenizer: Its tokenizer.
            lm: A causal LM.
            lm_tokenizer: Its tokenizer.
            config: Parser settings.
            device: Where to run.
        """
        cfg = config or ParserConfig()
        enc = HieSqlEncoder(encoder_model, cfg.encoder)
        dec = SQLDecoder(lm, lm_tokenizer, enc.hidden_size, cfg.decoder)
        return cls(enc, encoder_tokenizer, dec, cfg, device)

    @classmethod
    def from_pretrained(
        cls, config: ParserConfig | None = None, device: str = "auto", dtype: str = "auto"
    ) -> HieSqlParser:
        """Load the encoder and decoder named in the config (hub ids or paths).

        Raises:
            ModelNotAvailableError: When a model is neither cached nor reachable.
        """
        cfg = config or ParserConfig()
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        enc_model = load_encoder(cfg.encoder.model_name_or_path, device=dev, dtype=dt)
        enc_tok = load_tokenizer(cfg.encoder.model_name_or_path)
        lm = load_causal_lm(cfg.decoder.model_name_or_path, device=dev, dtype=dt)
        lm_tok = load_tokenizer(cfg.decoder.model_name_or_path)
        return cls.from_modules(enc_model, enc_tok, lm, lm_tok, cfg, dev)

    # -- examples ---------------------------------------------------------------------------------
    def _prompt_ids(
        self, schema: Schema, utterance: str, history: Sequence[str], last_sql: str | None, graph: Any
    ) -> list[int]:
        if not self.config.decoder.text_prompt:
            return []
        text = f"{describe_schema(schema, graph)}\n{render_context(utterance, history, last_sql, self.config.encoder.context)}\nSQL:"
        ids = self.decoder.tokenizer(text, add_special_tokens=False)["input_ids"]
        return list(ids[-self.config.encoder.max_length :])

    def encode_turn(
        self,
        schema: Schema,
        utterance: str,
        history: Sequence[str] = (),
        last_sql: str | None = None,
        db_path: str | Path | None = None,
        sandbox: Any = None,
    ) -> tuple[EncoderInput, list[int]]:
        """Linking graph, encoder input and decoder prompt of one turn."""
        ctx = self.config.encoder.context
        hist = list(history)[-self.config.encoder.max_history :] if self.config.encoder.max_history else []
        if ctx == "utterance":
            hist = []
        sql = last_sql if ctx == "history_sql" else None
        graph = build_linking_graph(
            schema, utterance, hist, sql, db_path, self.config.linking, sandbox=sandbox
        )
        enc = build_encoder_input(self.encoder_tokenizer, graph, ctx, self.config.encoder.max_length)
        return enc, self._prompt_ids(schema, utterance, hist, sql, graph)

    def _prefix_positions(self, enc: EncoderInput) -> list[int] | None:
        dec = self.config.decoder
        return prefix_positions(enc, dec.prefix_tokens) if dec.prefix_select == "linked" else None

    def _examples(
        self,
        interactions: Sequence[Interaction],
        schemas: Mapping[str, Schema],
        db_paths: Mapping[str, str | Path] | None,
    ) -> list[_Example]:
        out = []
        for inter in interactions:
            schema = schemas[inter.db_id]
            db = (db_paths or {}).get(inter.db_id)
            for k, turn in enumerate(inter.turns):
                if not turn.sql:
                    continue
                last = inter.turns[k - 1].sql if k else None
                enc, prompt = self.encode_turn(
                    schema, turn.utterance, [t.utterance for t in inter.turns[:k]], last, db
                )
                target = self.decoder.tokenizer(" " + turn.sql, add_special_tokens=False)["input_ids"]
                out.append(_Example(enc, prompt, list(target)[: self.config.decoder.max_new_tokens]))
        return out

    # -- training ---------------------------------------------------------------------------------
    def train(
        self,
        interactions: Sequence[Interaction],
        schemas: Mapping[str, Schema],
        db_paths: Mapping[str, str | Path] | None = None,
        max_steps: int | None = None,
        show_progress: bool | None = None,
    ) -> list[float]:
        """Train encoder and decoder on interactions with gold SQL (gold previous SQL as context).

        Args:
            interactions: Training interactions.
            schemas: ``db_id`` -> schema.
            db_paths: Optional ``db_id`` -> SQLite file (value linking).
            max_steps: Overrides ``config.max_steps``.
            show_progress: Progress bar (default: on a TTY).

        Returns:
            The loss of every step.

        Raises:
            HieSqlConfigError: When there is no turn with SQL to train on.
        """
        cfg = self.config
        seed_everything(cfg.seed)
        examples = self._examples(interactions, schemas, db_paths)
        if not examples:
            raise HieSqlConfigError("no training turn has gold SQL")
        params = [
            p for p in list(self.encoder.parameters()) + list(self.decoder.parameters()) if p.requires_grad
        ]
        opt = torch.optim.AdamW(params, lr=cfg.lr)
        limit = max_steps if max_steps is not None else cfg.max_steps
        rng = random.Random(cfg.seed)
        steps_per_epoch = (len(examples) + cfg.batch_size - 1) // cfg.batch_size
        total = limit if limit else steps_per_epoch * cfg.epochs
        self.encoder.train()
        self.decoder.train()
        losses: list[float] = []
        order: list[int] = []
        pad = self.encoder_tokenizer.pad_token_id or 0
        for _ in progress(range(total), desc="Training", total=total, show=show_progress):
            if len(order) < cfg.batch_size:
                more = list(range(len(examples)))
                rng.shuffle(more)
                order += more
            batch = [examples[order.pop()] for _ in range(min(cfg.batch_size, len(examples)))]
            tensors = collate_encoder_inputs([b.enc for b in batch], pad, self.device)
            states = self.encoder(**tensors)
            loss = self.decoder.loss(
                states,
                tensors["attention_mask"],
                [b.prompt for b in batch],
                [b.target for b in batch],
                [self._prefix_positions(b.enc) for b in batch],
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad()
            losses.append(float(loss.detach()))
        self.encoder.eval()
        self.decoder.eval()
        return losses

    # -- prediction -------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_turn(
        self,
        schema: Schema,
        utterance: str,
        history: Sequence[str] = (),
        last_sql: str | None = None,
        db_path: str | Path | None = None,
        sandbox: Any = None,
    ) -> Prediction:
        """Predict one turn's SQL.

        Args:
            schema: Database schema.
            utterance: Current utterance.
            history: Earlier utterances, oldest first.
            last_sql: The SQL predicted for the previous turn.
            db_path: Optional SQLite file (value linking and execution guard).
            sandbox: The :class:`~zjulab.hiesql.sandbox.SQLiteSandbox` that checks candidates
                (its limits govern); one over ``db_path`` with default limits when omitted.

        Returns:
            The prediction (best valid beam).
        """
        enc, prompt = self.encode_turn(schema, utterance, history, last_sql, db_path, sandbox)
        tensors = collate_encoder_inputs([enc], self.encoder_tokenizer.pad_token_id or 0, self.device)
        states = self.encoder(**tensors)
        cands = self.decoder.generate(
            states[0], tensors["attention_mask"][0], prompt, positions=self._prefix_positions(enc)
        )
        return rerank_candidates(cands, schema, db_path, enc.graph, sandbox=sandbox, repair=True)

    def predict_interaction(
        self, interaction: Interaction, schema: Schema, db_path: str | Path | None = None
    ) -> list[Prediction]:
        """Predict every turn, feeding each prediction back as the next turn's last SQL."""
        preds: list[Prediction] = []
        last: str | None = None
        for k, turn in enumerate(interaction.turns):
            p = self.predict_turn(
                schema, turn.utterance, [t.utterance for t in interaction.turns[:k]], last, db_path
            )
            preds.append(p)
            last = p.sql
        return preds

    def predict(
        self,
        interactions: Sequence[Interaction],
        schemas: Mapping[str, Schema],
        db_paths: Mapping[str, str | Path] | None = None,
        show_progress: bool | None = None,
    ) -> list[list[str]]:
        """Predicted SQL strings for many interactions (the layout :meth:`Evaluator.evaluate` takes)."""
        out = []
        for inter in progress(interactions, desc="Predicting", show=show_progress):
            preds = self.predict_interaction(inter, schemas[inter.db_id], (db_paths or {}).get(inter.db_id))
            out.append([p.sql for p in preds])
        return out

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Save everything needed to predict into a directory (atomically).

        Layout: ``hiesql.json`` (format version and config), ``encoder/`` (base encoder and
        tokenizer), ``decoder/`` (the LM with LoRA merged, and tokenizer), ``heads.pt``
        (relation-aware layers, segment embeddings, decoder projection).

        Raises:
            ParserStoreError: ``path`` is an existing non-empty directory that is not a saved
                parser (it is never replaced).
        """
        target = Path(path)
        if target.is_dir() and any(target.iterdir()) and not (target / "hiesql.json").is_file():
            raise ParserStoreError(
                f"{target} is a non-empty directory that is not a saved parser; refusing to replace it"
            )
        with atomic_directory(path) as tmp:
            tmp = Path(tmp)
            meta = {"format_version": FORMAT_VERSION, "config": dataclasses.asdict(self.config)}
            (tmp / "hiesql.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            self.encoder.base.save_pretrained(tmp / "encoder")
            self.encoder_tokenizer.save_pretrained(tmp / "encoder")
            self.decoder.plain_lm().save_pretrained(tmp / "decoder")
            self.decoder.tokenizer.save_pretrained(tmp / "decoder")
            heads = {
                "encoder": {k: v for k, v in self.encoder.state_dict().items() if not k.startswith("base.")},
                "proj": self.decoder.proj.state_dict(),
            }
            torch.save(heads, tmp / "heads.pt")

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = "auto") -> HieSqlParser:
        """Load a parser saved with :meth:`save`.

        Raises:
            ParserStoreError: When files are missing or the format version is unknown.
        """
        p = Path(path)
        meta_file = p / "hiesql.json"
        if not meta_file.is_file():
            raise ParserStoreError(f"not a saved HieSqlParser (no hiesql.json): {p}")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ParserStoreError(f"{meta_file}: unsupported format_version {meta.get('format_version')!r}")
        c = meta["config"]
        cfg = ParserConfig(
            encoder=EncoderConfig(**c["encoder"]),
            decoder=DecoderConfig(**{"prefix_select": "first", **c["decoder"]}),  # saved before the option
            linking=LinkingConfig(**c["linking"]),
            **{k: v for k, v in c.items() if k not in ("encoder", "decoder", "linking")},
        )
        dev = resolve_device(device)
        for sub in ("encoder", "decoder", "heads.pt"):
            if not (p / sub).exists():
                raise ParserStoreError(f"saved parser {p} lacks {sub}")
        enc_model = load_encoder(p / "encoder", device=dev, dtype="fp32")
        enc_tok = load_tokenizer(p / "encoder")
        lm = load_causal_lm(p / "decoder", device=dev, dtype="fp32")
        lm_tok = load_tokenizer(p / "decoder")
        parser = cls.from_modules(enc_model, enc_tok, lm, lm_tok, cfg, dev)
        heads = torch.load(p / "heads.pt", map_location=dev, weights_only=True)
        parser.encoder.load_state_dict(heads["encoder"], strict=False)
        parser.decoder.proj.load_state_dict(heads["proj"])
        parser.encoder.eval()
        parser.decoder.eval()
        return parser

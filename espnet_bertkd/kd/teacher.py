"""A frozen Hugging Face masked LM that turns transcripts into top-k soft labels (Futami et al. 2020).

For every teacher token w_i of a transcript, w_i is replaced by the mask token and the masked LM sees the whole
transcript (plus optional neighbouring transcripts) on both sides; the top-k logits at position i, softened by a
temperature, are the teacher's distribution q_i for w_i. Transcripts longer than the model's maximum length are
handled by giving each masked copy its own window centred on the masked position, so no context is truncated away
beyond what the model can see.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from espnet_bertkd.kd.soft_labels import SoftLabels
from espnet_bertkd.kd.teacher_config import TeacherConfig

class TeacherLoadError(OSError):
    """The configured teacher cannot be loaded on this machine (an OSError, like transformers' own load errors)."""


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _hub_offline() -> bool:
    """Whether Hugging Face downloads are switched off (the variables huggingface_hub and transformers read)."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except (ImportError, AttributeError):
        return os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")


def _looks_like_path(name: str) -> bool:
    """A name only a file system can resolve (hub ids are `name` or `owner/name`)."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _how_to_pass_a_directory(name: str) -> str:
    return (
        f"On a machine with network access save it with `AutoModelForMaskedLM.from_pretrained({name!r})"
        f".save_pretrained(DIR)` and `AutoTokenizer.from_pretrained({name!r}).save_pretrained(DIR)`, copy DIR here "
        "and pass the directory instead of the hub id: `teacher.model=/path/to/DIR` in model_conf "
        "(`teacher: {model: /path/to/DIR}`), or `--teacher DIR` for asr.sh/run.sh and extract_soft_labels"
    )


def load_failure_message(name: str, error: BaseException) -> str:
    """Say why `name` did not load (missing directory, directory without a saved model, hub id unreachable or
    offline) and how to fix it, instead of transformers' traceback."""
    if os.path.isdir(name):
        files = sorted(os.listdir(name))
        shown = ", ".join(files[:10]) + (f", ... ({len(files)} files)" if len(files) > 10 else "") or "nothing"
        return (
            f"teacher.model={name!r} is a directory but not a masked LM and tokenizer saved with save_pretrained "
            f"({_first_line(error)}); it holds: {shown}. It needs config.json, the weights and the tokenizer files: "
            "save both the model and its tokenizer with .save_pretrained(DIR)"
        )
    if _looks_like_path(name) or os.path.exists(name):
        return (
            f"teacher.model={name!r}: no such local directory. Pass a directory holding a masked LM and its "
            "tokenizer saved with save_pretrained, or a Hugging Face hub id"
        )
    if not isinstance(error, OSError):  # found, but not something AutoModelForMaskedLM/AutoTokenizer can build
        return f"teacher {name!r} could not be loaded as a masked LM with its tokenizer: {_first_line(error)}"
    if _hub_offline():
        reason = (
            "could not be loaded offline: Hugging Face downloads are off (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE) and "
            f"it is not in the local cache {_hub_cache()}"
        )
    else:
        reason = f"could not be loaded from the Hugging Face hub ({_first_line(error)}); is this machine offline?"
    return f"teacher hub id {name!r} is not a local directory and {reason}. {_how_to_pass_a_directory(name)}"


def load_teacher_vocab_size(name_or_path: str) -> int:
    """The teacher's vocabulary size from its config alone (cheap: no weights are read)."""
    from transformers import AutoConfig

    try:
        return int(AutoConfig.from_pretrained(name_or_path).vocab_size)
    except (OSError, ValueError) as e:
        raise TeacherLoadError(
            load_failure_message(name_or_path, e) + ". A model in cached teacher mode can also be built without the "
            "teacher by giving its size: teacher.vocab_size"
        ) from None  # the message says what transformers' traceback would bury


def vocab_hash(tokenizer: Any) -> str:
    """A fingerprint of a tokenizer's vocabulary, stored with cached soft labels to catch a swapped teacher
    (paths differ between machines; the vocabulary does not)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def load_vocab_hash(name_or_path: str) -> Optional[str]:
    """The teacher's vocabulary fingerprint, or None when its tokenizer cannot be loaded here."""
    from transformers import AutoTokenizer

    try:
        return vocab_hash(AutoTokenizer.from_pretrained(name_or_path))
    except (OSError, ValueError):
        return None


def softmax_topk(logits: torch.Tensor, topk: int, temperature: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Top-k ids and q = softmax(top-k logits / T), computed in fp32 whatever the teacher's dtype."""
    values, ids = logits.float().topk(topk, dim=-1)
    return ids, torch.softmax(values / temperature, dim=-1)


def window_bounds(position: int, length: int, window: int) -> Tuple[int, int]:
    """The span of at most `window` tokens of a `length`-token sequence that centres `position`."""
    if length <= window:
        return 0, length
    start = min(max(position - window // 2, 0), length - window)
    return start, start + window


def masked_copies(
    tokens: Sequence[int], begin: int, end: int, window: int, mask_id: int
) -> Iterator[Tuple[List[int], int]]:
    """For each position i in [begin, end) of `tokens`: its window with token i masked, and i's index in it."""
    for i in range(begin, end):
        start, stop = window_bounds(i, len(tokens), window)
        copy = list(tokens[start:stop])
        copy[i - start] = mask_id
        yield copy, i - start


def load_pretrained(config: TeacherConfig) -> Tuple[Any, Any]:
    """The tokenizer and frozen masked LM of `config.model`; a failure says why and how to fix it."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(config.model)
        model = AutoModelForMaskedLM.from_pretrained(config.model, dtype=getattr(torch, config.dtype))
    except (OSError, ValueError) as e:
        raise TeacherLoadError(load_failure_message(config.model, e)) from None  # no transformers traceback
    model.requires_grad_(False)
    return tokenizer, model


def check_vocab_sizes(config: TeacherConfig, tokenizer_size: int, model_size: int) -> None:
    """The tokenizer, the model's vocabulary and the configured size must agree: a tokenizer larger than the
    embedding (one saved from another model) indexes past it, and a wrong teacher.vocab_size gives KD decoders
    of the wrong output size."""
    if 2 * tokenizer_size < model_size:
        raise ValueError(
            f"teacher {config.model!r}: the tokenizer has only {tokenizer_size} tokens but the model's vocabulary "
            f"has {model_size}: its tokenizer files (vocab.txt or tokenizer.json, tokenizer_config.json) are missing "
            "or from another model, and transformers made a stand-in that turns every word into the unknown token. "
            "Save the tokenizer the model was trained with beside it (AutoTokenizer.from_pretrained(...)"
            ".save_pretrained(DIR))"
        )
    if tokenizer_size > model_size:
        raise ValueError(
            f"teacher {config.model!r}: the tokenizer has {tokenizer_size} tokens but the model's embedding/LM head "
            f"has {model_size}: the tokenizer was saved from another model. Save the model and the tokenizer it "
            "was trained with into one directory (.save_pretrained(DIR) on both)"
        )
    if config.vocab_size is not None and config.vocab_size != model_size:
        raise ValueError(
            f"teacher.vocab_size={config.vocab_size} but teacher {config.model!r} has a vocabulary of {model_size}: "
            f"the KD decoders predict teacher.vocab_size + 1 ids; set teacher.vocab_size: {model_size} (or remove "
            "it) and retrain, or use the teacher the model was built for"
        )
    if config.topk > model_size:
        raise ValueError(f"teacher.topk={config.topk} exceeds the vocabulary size {model_size}")


MAX_UNKNOWN_SHARE = 0.05  # of the transcripts' teacher tokens: above it the teacher cannot read the text


def check_unknown_tokens(name: str, tokenizer: Any, pairs: Sequence[Tuple[str, str]], source: str,
                         max_share: float = MAX_UNKNOWN_SHARE) -> float:
    """Refuse a teacher whose tokenizer maps more than `max_share` of the transcripts' tokens to its unknown token
    (a cased tokenizer on other text, another language, a stand-in tokenizer): its soft labels would teach
    `[UNK]`. Names the utterances and words; returns the share (logged when not 0)."""
    unk = tokenizer.unk_token_id
    if unk is None or not pairs:
        return 0.0
    total = unknown = 0
    examples: List[str] = []
    for start in range(0, len(pairs), 1000):  # batched: a fast tokenizer reads LibriSpeech's 281k in seconds
        chunk = pairs[start : start + 1000]
        encoded = tokenizer([text for _, text in chunk], add_special_tokens=False)["input_ids"]
        for (utt, text), tokens in zip(chunk, encoded):
            total += len(tokens)
            bad = sum(t == unk for t in tokens)
            unknown += bad
            if bad and len(examples) < 5:
                words = [w for w in text.split() if unk in tokenizer(w, add_special_tokens=False)["input_ids"]]
                examples.append(f"{utt} ({', '.join(words[:3])})")
    share = unknown / max(total, 1)
    if share > max_share:
        raise ValueError(
            f"teacher {name!r}: its tokenizer maps {unknown} of the {total} tokens of {source} ({share:.0%}) to its "
            f"unknown token {tokenizer.unk_token!r}, e.g. in {', '.join(examples)}: it cannot read these "
            "transcripts (missing or wrong tokenizer files, a cased tokenizer, another language). Use a teacher "
            "whose tokenizer knows the words"
        )
    if unknown:
        logging.warning("teacher %r: %d of the %d tokens of %s (%.2f%%) are its unknown token, e.g. in %s", name,
                        unknown, total, source, 100 * share, ", ".join(examples))
    return share


class MaskedLMTeacher:
    """Loads a Hugging Face masked LM + tokenizer and computes soft labels for batches of transcripts."""

    def __init__(
        self, config: TeacherConfig, device: Optional[str] = None, model: Any = None, tokenizer: Any = None
    ) -> None:
        """Load `config.model`, or wrap an already loaded `model` + `tokenizer` (e.g. one being trained: the
        wrapper freezes nothing then, and scoring switches the model to eval mode)."""
        self.config = config
        if model is None:
            tokenizer, model = load_pretrained(config)
        self.tokenizer, self.model = tokenizer, model.eval()
        if device is None:
            device = "cpu" if config.device == "auto" else config.device
        self.vocab_size = int(self.model.config.vocab_size)
        check_vocab_sizes(config, len(self.tokenizer), self.vocab_size)
        if self.tokenizer.mask_token_id is None:
            raise ValueError(f"teacher {config.model!r} has no mask token: it is not a masked LM")
        self.to(device)
        self.mask_id = int(self.tokenizer.mask_token_id)
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)

        self._prefix, self._suffix = self._special_tokens()
        self._dropped_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)
        self._n_special = len(self._prefix) + len(self._suffix)
        max_length = self._checked_max_length()
        self.window = max_length - self._n_special
        if self.window < 1:
            raise ValueError(f"teacher.max_length={max_length} leaves no room for tokens")

    def _checked_max_length(self) -> int:
        """teacher.max_length, or the model's own limit; a configured length the position embeddings cannot
        reach would otherwise fail deep inside the model's forward pass."""
        limit = self._model_max_length()
        if self.config.max_length is None:
            return limit
        if self.config.max_length > limit:
            raise ValueError(
                f"teacher.max_length={self.config.max_length} exceeds the {limit} tokens teacher "
                f"{self.config.model!r} can see (max_position_embeddings/model_max_length): set teacher.max_length "
                f"<= {limit} or leave it unset (longer transcripts are scored in windows of that length)"
            )
        return self.config.max_length

    def _special_tokens(self) -> Tuple[List[int], List[int]]:
        """The special tokens the tokenizer puts before and after a sequence (BERT, RoBERTa, ... differ)."""
        bare = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        for start in range(len(full) - len(bare) + 1):
            if full[start : start + len(bare)] == bare:
                return list(full[:start]), list(full[start + len(bare) :])
        raise ValueError(f"teacher {self.config.model!r}: cannot locate the special tokens its tokenizer adds")

    def _model_max_length(self) -> int:
        limits = [getattr(self.model.config, "max_position_embeddings", None), self.tokenizer.model_max_length]
        limits = [int(x) for x in limits if x is not None and x < 1_000_000]
        if getattr(self.model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
            limits = [min(limits) - 2] if limits else limits  # RoBERTa reserves two positions for padding_idx
        return min(limits) if limits else 512

    def to(self, device: Any) -> "MaskedLMTeacher":
        self.model.to(device)
        self.device = torch.device(device)
        return self

    @property
    def vocab_hash(self) -> str:
        return vocab_hash(self.tokenizer)

    def metadata(self) -> Dict[str, Any]:
        return {
            "teacher": self.config.model,
            "vocab_size": self.vocab_size,
            "vocab_hash": self.vocab_hash,
            "topk": self.config.topk,
            "temperature": self.config.temperature,
            "drop_special": self.config.drop_special,
        }

    def tokenize(self, text: str) -> List[int]:
        """The teacher's own tokens of `text` (an uncased tokenizer lower-cases LibriSpeech's capitals itself)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text.strip() else []

    @torch.no_grad()
    def soft_labels(
        self,
        texts: Sequence[str],
        left_contexts: Optional[Sequence[str]] = None,
        right_contexts: Optional[Sequence[str]] = None,
    ) -> List[SoftLabels]:
        """Soft labels for each transcript; contexts (neighbouring transcripts) are seen but not labelled."""
        k = self.config.topk
        rows: List[Tuple[int, int, List[int], int]] = []  # (utterance, position, masked window, masked index)
        targets: List[List[int]] = []
        for u, text in enumerate(texts):
            left = self.tokenize(left_contexts[u]) if left_contexts else []
            right = self.tokenize(right_contexts[u]) if right_contexts else []
            own = self.tokenize(text)
            targets.append(own)
            sequence = left + own + right
            for n, (copy, index) in enumerate(
                masked_copies(sequence, len(left), len(left) + len(own), self.window, self.mask_id)
            ):
                rows.append((u, n, copy, index))

        ids_out = [np.zeros((len(t), k), dtype=np.int64) for t in targets]
        probs_out = [np.zeros((len(t), k), dtype=np.float32) for t in targets]
        for batch in self._batches(rows):
            ids, probs = self._score(batch)
            for (u, n, _, _), i, p in zip(batch, ids, probs):
                ids_out[u][n] = i
                probs_out[u][n] = p
        return [
            SoftLabels(np.asarray(t, dtype=np.int64), i, p) for t, i, p in zip(targets, ids_out, probs_out)
        ]

    def _batches(self, rows: List[Tuple[int, int, List[int], int]]) -> Iterator[List[Tuple[int, int, List[int], int]]]:
        """Rows sorted by length and grouped so padded tokens stay under max_tokens_per_batch."""
        rows = sorted(rows, key=lambda r: len(r[2]))
        batch: List[Tuple[int, int, List[int], int]] = []
        for row in rows:
            longest = len(row[2]) + self._n_special  # rows are sorted, so this one is the longest yet
            if batch and (len(batch) + 1) * longest > self.config.max_tokens_per_batch:
                yield batch
                batch = []
            batch.append(row)
        if batch:
            yield batch

    def _score(self, batch: List[Tuple[int, int, List[int], int]]) -> Tuple[np.ndarray, np.ndarray]:
        inputs = [self._prefix + copy + self._suffix for _, _, copy, _ in batch]
        length = max(len(x) for x in inputs)
        input_ids = torch.full((len(inputs), length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(inputs), length), dtype=torch.long)
        for r, x in enumerate(inputs):
            input_ids[r, : len(x)] = torch.tensor(x)
            attention[r, : len(x)] = 1
        positions = torch.tensor([index + len(self._prefix) for _, _, _, index in batch], device=self.device)
        with self._lm_head_at(positions):
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device)
            ).logits
        if logits.dim() == 3 and logits.size(1) != 1:  # the head ran on every position (no output embeddings)
            logits = logits[torch.arange(len(batch), device=self.device), positions]
        logits = logits.reshape(len(batch), -1)
        if self.config.drop_special:
            logits = logits.float().index_fill(1, self._dropped_ids.to(logits.device), float("-inf"))
        ids, probs = softmax_topk(logits, self.config.topk, self.config.temperature)
        return ids.cpu().numpy(), probs.cpu().numpy()

    @contextlib.contextmanager
    def _lm_head_at(self, positions: torch.Tensor) -> Iterator[None]:
        """Run the vocabulary projection only at the masked positions.

        The projection to the vocabulary is as costly as a transformer layer for BERT-base; the masked LM would
        otherwise compute it at every position of every masked copy. A pre-hook on the output embeddings picks
        the masked position's hidden state, so any model with `get_output_embeddings()` benefits.
        """
        head = self.model.get_output_embeddings()
        if head is None:
            yield
            return
        rows = torch.arange(positions.numel(), device=positions.device)

        def pick(_module: torch.nn.Module, args: Tuple[torch.Tensor, ...]) -> Tuple[torch.Tensor, ...]:
            hidden = args[0]
            return (hidden[rows, positions].unsqueeze(1),) + tuple(args[1:])

        handle = head.register_forward_pre_hook(pick)
        try:
            yield
        finally:
            handle.remove()


def log_teacher(teacher: MaskedLMTeacher) -> None:
    logging.info(
        "teacher %s: vocab %d, window %d tokens, top-%d, T=%s, %s on %s",
        teacher.config.model,
        teacher.vocab_size,
        teacher.window,
        teacher.config.topk,
        teacher.config.temperature,
        teacher.config.dtype,
        teacher.device,
    )

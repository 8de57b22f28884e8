"""Per-document bits per byte under a pinned language model: the Hugging Face export of an earlier train stage
(a `LlamaForCausalLM` folder with `tokenizer.model`, as stages/train/export.py writes it), run with transformers.

    bits per byte = (sum over the document's tokens of -log2 p(token | what precedes it)) / UTF-8 bytes

A document is read as training reads it: after an EOS, tokenized by the export's SentencePiece model (the ids
HF's LlamaTokenizer gives for that folder; SentencePiece is used directly as it is faster and already a
dependency). A document longer than the model's context is scored in windows of `window` tokens; each window
starts with the last token of the previous one, so every token is predicted once, with at most a window of
context. Windows of several documents share a forward pass (right-padded, masked).

`check_export` is what the config runs at load time (cheap: no torch, no transformers import).
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np

WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def export_dir(path: Path) -> Path:
    """The export folder: `path` itself, or the `export/` folder of a train stage directory."""
    path = Path(path)
    return path / "export" if (path / "export" / "config.json").is_file() else path


def check_export(path: Path) -> str:
    """"" when `path` is a usable export whose tokenizer matches its model, else the reason in a few words.

    Match: the folder has `tokenizer.model`, SentencePiece loads it, its piece count equals the model's
    vocab_size (an export crops the embedding to the tokenizer it was trained with), and the model's EOS id
    names the piece its tokenizer_config.json calls eos_token (when it names one)."""
    if importlib.util.find_spec("transformers") is None:
        return "the perplexity scorer needs transformers: pip install 'zhgpt[quality]'"
    d = export_dir(path)
    if not (d / "config.json").is_file():
        return f"{d}: no config.json (expected a train stage directory or its export/ folder)"
    if not any((d / w).is_file() for w in WEIGHTS):
        return f"{d}: no model weights ({' or '.join(WEIGHTS)})"
    if not (d / "tokenizer.model").is_file():
        return f"{d}: no tokenizer.model beside the model"
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    except (OSError, RuntimeError) as exc:
        return f"{d / 'tokenizer.model'}: not a SentencePiece model ({str(exc).splitlines()[0]})"
    conf = json.loads((d / "config.json").read_text())
    if sp.get_piece_size() != conf.get("vocab_size"):
        return (f"{d}: tokenizer.model has {sp.get_piece_size()} pieces but the model's vocab_size is "
                f"{conf.get('vocab_size')}: not the tokenizer it was trained with")
    eos = conf.get("eos_token_id")
    if not isinstance(eos, int) or not 0 <= eos < sp.get_piece_size():
        return f"{d}: config.json names no usable eos_token_id ({eos!r})"
    tok_conf = d / "tokenizer_config.json"
    named = json.loads(tok_conf.read_text()).get("eos_token") if tok_conf.is_file() else None
    if isinstance(named, str) and sp.id_to_piece(eos) != named:
        return f"{d}: eos_token_id {eos} is {sp.id_to_piece(eos)!r} in tokenizer.model, not {named!r}"
    return ""


class BitsPerByte:
    """Loads the export once; `score(texts)` gives each text's bits per byte (NaN for an empty text)."""

    def __init__(self, path: Path, window: int | None = None, batch: int = 8):
        import sentencepiece as spm
        import torch
        from transformers import AutoModelForCausalLM

        d = export_dir(path)
        self.model = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval()
        self.sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
        conf = json.loads((d / "config.json").read_text())
        self.eos = int(conf["eos_token_id"])
        self.window = min(window or conf["max_position_embeddings"], conf["max_position_embeddings"])
        self.batch = batch

    def windows(self, ids: list[int]) -> list[list[int]]:
        seq = [self.eos, *ids]
        step = self.window - 1
        return [seq[s:s + self.window] for s in range(0, len(seq) - 1, step)]

    def nats(self, chunks: list[list[int]]) -> np.ndarray:
        """Summed negative log-likelihood (nats) of each chunk's tokens after its first."""
        import torch

        width = max(len(c) for c in chunks)
        ids = torch.zeros((len(chunks), width), dtype=torch.long)
        mask = torch.zeros((len(chunks), width), dtype=torch.long)
        for i, c in enumerate(chunks):
            ids[i, :len(c)] = torch.tensor(c)
            mask[i, :len(c)] = 1
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        return (-(logp * mask[:, 1:]).sum(1)).double().numpy()

    def score(self, texts: list[str]) -> np.ndarray:
        work = []  # (document index, window) in document order: batches do not depend on the worker count
        for i, t in enumerate(texts):
            work += [(i, w) for w in self.windows(self.sp.encode(t))] if t else []
        total = np.zeros(len(texts))
        for s in range(0, len(work), self.batch):
            part = work[s:s + self.batch]
            for (i, _), n in zip(part, self.nats([w for _, w in part])):
                total[i] += n
        nbytes = np.array([len(t.encode("utf-8")) if t else 0 for t in texts], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(nbytes > 0, total / math.log(2) / np.maximum(nbytes, 1), np.nan)

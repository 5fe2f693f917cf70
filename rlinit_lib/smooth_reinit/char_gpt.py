"""A compact character-level GPT on tiny-shakespeare (the smooth-reinit paper's second testbed).

Follows nanoGPT's ``shakespeare_char`` small CPU configuration, as the source did (plus bias on):
4 layers, 4 heads, 128 embedding, block 64, batch 12, 2,000 iterations, AdamW lr 1e-3 with 100
warm-up steps and cosine decay to 1e-4, beta2 0.99, weight decay 0.1 on matrices, gradient clip 1.0,
dropout 0, evaluation over 20 batches. Data: 65-character vocabulary, first 90% train, last 10%
validation. Reference: validation loss about 1.88-1.90 at step 2,000. Own implementation: pre-norm
blocks, causal self-attention through ``scaled_dot_product_attention``, tied input/output embedding.
Random streams: initialisation, weight noise, training batches and evaluation batches each from their own
child of the run's seed (``core.runtime.stream_seed``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlinit_lib.core.params import Config, Float, Int, ParameterError, check_float, param
from rlinit_lib.core.runtime import stream_seed



@dataclass
class GPTConfig(Config):
    notebook = "char_gpt"

    n_layer: int = param(4, Int(low=1))
    n_head: int = param(4, Int(low=1))
    n_embd: int = param(128, Int(low=1))
    block_size: int = param(64, Int(low=1))
    batch_size: int = param(12, Int(low=1))
    max_iters: int = param(2000, Int(low=1))
    lr: float = param(1e-3, Float(low=0.0, low_open=True))
    min_lr: float = param(1e-4, Float(low=0.0))
    warmup_iters: int = param(100, Int(low=0))
    beta2: float = param(0.99, Float(low=0.0, high=1.0, high_open=True))
    weight_decay: float = param(0.1, Float(low=0.0))
    grad_clip: float = param(1.0, Float(low=0.0, low_open=True))
    eval_iters: int = param(20, Int(low=1))
    eval_interval: int = param(250, Int(low=1))
    seed: int = param(0, Int(low=0))

    def check(self) -> None:
        if self.n_embd % self.n_head:
            raise ParameterError(f"n_embd must be a multiple of n_head={self.n_head} (got {self.n_embd})")
        check_float("min_lr", self.min_lr, low=0.0, high=self.lr)


SHIPPED_TEXT = Path(__file__).parent / "data" / "tinyshakespeare.txt"   # karpathy/char-rnn's tiny-shakespeare


def load_text(path: str | os.PathLike | None = None) -> str:
    """tiny-shakespeare: ``path`` if given, else the copy shipped with this package (found from the
    package, not the working directory)."""
    path = Path(path) if path else SHIPPED_TEXT
    if not path.is_file():
        raise FileNotFoundError(f"text_path {str(path)!r} does not exist: pass an existing text file, or None for the "
                                f"tiny-shakespeare copy shipped with rlinit_lib ({SHIPPED_TEXT})")
    return path.read_text(encoding="utf-8")


class CharData:
    """Character vocabulary and the 90/10 train/validation split as int64 tensors."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        ids = torch.tensor([self.stoi[c] for c in text], dtype=torch.long)
        n = int(0.9 * len(ids))
        self.train, self.val = ids[:n], ids[n:]

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def batch(self, split: str, batch_size: int, block: int, generator: torch.Generator):
        data = self.train if split == "train" else self.val
        ix = torch.randint(len(data) - block - 1, (batch_size,), generator=generator)
        x = torch.stack([data[i:i + block] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + block] for i in ix])
        return x, y


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.attn_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(cfg.n_embd, 4 * cfg.n_embd))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * cfg.n_embd, cfg.n_embd))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.attn_proj(y)
        return x + self.mlp(self.ln_2(x))


class CharGPT(nn.Module):
    def __init__(self, cfg: GPTConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.wte, self.wpe = nn.Embedding(vocab_size, cfg.n_embd), nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith(("attn_proj.weight", "c_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets=None):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


def lr_at(cfg: GPTConfig, it: int) -> float:
    """Linear warm-up, then cosine decay to ``min_lr`` at ``max_iters`` (nanoGPT's schedule)."""
    if it < cfg.warmup_iters:
        return cfg.lr * (it + 1) / (cfg.warmup_iters + 1)
    ratio = min(1.0, (it - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


@torch.no_grad()
def estimate_loss(model: CharGPT, data: CharData, cfg: GPTConfig, generator: torch.Generator) -> dict:
    model.eval()
    out = {}
    for split in ("train", "val"):
        losses = [model(*data.batch(split, cfg.batch_size, cfg.block_size, generator))[1].item()
                  for _ in range(cfg.eval_iters)]
        out[split] = float(np.mean(losses))
    model.train()
    return out


def train_char_gpt(cfg: GPTConfig, data: CharData, noise: dict | None = None, progress: bool = False) -> dict:
    """Train from scratch; ``noise`` = WeightNoise kwargs (names, sigma, decay, in_eval) or None.
    Returns the evaluation history [(iter, train loss, val loss)] and the final validation loss."""
    from tqdm.auto import tqdm

    from rlinit_lib.smooth_reinit.noise import WeightNoise

    cfg.validate()
    torch.manual_seed(stream_seed(cfg.seed, "init"))
    model = CharGPT(cfg, data.vocab_size)
    if noise:
        WeightNoise(model, seed=stream_seed(cfg.seed, "weight_noise"), **noise)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, cfg.beta2))
    g_train = torch.Generator().manual_seed(stream_seed(cfg.seed, "data_order"))
    g_eval = torch.Generator().manual_seed(stream_seed(cfg.seed, "eval_batches"))
    history = []
    for it in tqdm(range(cfg.max_iters + 1), desc="char-GPT", disable=not progress):
        if it % cfg.eval_interval == 0 or it == cfg.max_iters:
            losses = estimate_loss(model, data, cfg, g_eval)
            history.append((it, losses["train"], losses["val"]))
        if it == cfg.max_iters:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, it)
        _, loss = model(*data.batch("train", cfg.batch_size, cfg.block_size, g_train))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    return {"history": history, "val_loss": history[-1][2], "config": cfg.to_dict()}

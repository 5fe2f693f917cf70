import pytest
import torch

from rlinit_lib.smooth_reinit.char_gpt import CharData, CharGPT, GPTConfig, load_text, lr_at, train_char_gpt
from rlinit_lib.core.params import ParameterError

def test_shipped_tiny_shakespeare_split_and_vocab_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # found next to the package, not from the working directory
    data = CharData(load_text())
    assert data.vocab_size == 65
    assert (len(data.train), len(data.val)) == (1_003_854, 111_540)   # nanoGPT's split (sources.md)
    with pytest.raises(FileNotFoundError, match=r"^text_path 'nope.txt' does not exist: pass an existing text file"):
        load_text("nope.txt")


def test_attention_is_causal_and_shapes():
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16)
    torch.manual_seed(0)
    model = CharGPT(cfg, vocab_size=20).eval()
    x = torch.randint(0, 20, (3, 16))
    logits, _ = model(x)
    assert logits.shape == (3, 16, 20)
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 1) % 20  # change the future only
    torch.testing.assert_close(model(y)[0][:, :10], logits[:, :10])
    assert model.lm_head.weight is model.wte.weight


def test_schedule_warms_up_then_decays_to_min_lr():
    cfg = GPTConfig()
    assert lr_at(cfg, 0) < lr_at(cfg, 50) < lr_at(cfg, 99) <= cfg.lr
    assert lr_at(cfg, 100) == pytest.approx(cfg.lr) and lr_at(cfg, 2000) == pytest.approx(cfg.min_lr)


def test_learns_a_repetitive_text_and_noise_hook_runs():
    text = "to be or not to be, that is the question. " * 200
    data = CharData(text)
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=8, max_iters=400, warmup_iters=10,
                    eval_iters=4, eval_interval=400)
    run = train_char_gpt(cfg, data)
    start, end = run["history"][0][2], run["history"][-1][2]
    assert start > 2.5 and end < 1.0  # from ~log(vocab) to a memorised pattern
    noisy = train_char_gpt(cfg, data, noise={"names": ["blocks.0.mlp.c_proj.weight", "blocks.0.mlp.c_proj.bias"],
                                              "sigma": 0.01, "decay": 1.0})
    assert noisy["val_loss"] != run["val_loss"]


def test_bad_gpt_parameters():
    with pytest.raises(ParameterError, match=r"^n_embd must be a multiple of n_head=3 \(got 128\)$"):
        GPTConfig(n_head=3).validate()

"""REINFORCE for hard attention: the per-word (token) estimator against the paper's, on a problem with a known answer."""

from __future__ import annotations

import pytest
import torch

from captioner.config import ModelConfig
from captioner.decoder import Decoder
from captioner.loss import caption_loss, update_baseline, update_word_baseline


def _learn_to_look(estimator: str, seed: int, steps: int = 300) -> float:
    """Words {4, 5} are written only in cell 0 of a 2x2 grid (the other cells are noise) and the LSTM starts
    knowing nothing of the image, so only choosing cell 0 predicts the word. Returns p(cell 0) after training."""
    torch.manual_seed(seed)
    cfg = ModelConfig(features="head", grid=2, vocab_size=8, feature_dim=8, embed_dim=8, hidden_dim=16, attention_dim=8,
                      proj_dim=8, attention="hard", dropout=0.0, position=False, word_query=False, init_mean=False)
    dec = Decoder(cfg)
    opt = torch.optim.Adam(dec.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(seed)
    baseline = word_baseline = None
    for _ in range(steps):
        word = torch.randint(0, 2, (32,), generator=g)
        feats = torch.randn(32, 4, 8, generator=g)
        feats[:, 0] = 0
        feats[torch.arange(32), 0, word] = 3.0
        caps = torch.stack([torch.full((32,), 1), word + 4, torch.full((32,), 2)], 1)
        out = dec(feats, caps, torch.full((32,), 3), expected_prob=0.0)
        terms = caption_loss(out, alpha_c=0.0, hard=True, baseline=baseline, entropy_weight=0.0,
                             estimator=estimator, word_baseline=word_baseline)
        opt.zero_grad()
        terms.total.backward()
        opt.step()
        baseline = update_baseline(baseline, terms.reward, 0.9)
        if terms.word_rewards is not None:
            word_baseline = update_word_baseline(word_baseline, *terms.word_rewards, 0.9)
    with torch.no_grad():
        return float(dec.eval()(feats, caps, torch.full((32,), 3)).alphas[0][:, 0].mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_the_token_estimator_learns_to_look_where_the_word_is(seed):
    assert _learn_to_look("token", seed) > 0.9


def test_the_papers_estimator_learns_it_too_but_more_slowly():
    assert _learn_to_look("paper", 0) > 0.5  # chance is 0.25; it reaches ~0.6 in these steps where token reaches > 0.9


def test_token_advantages_use_each_words_own_baseline():
    """One caption, two steps: the REINFORCE term is -sum_t (log p(y_t) - b[y_t]) log p(s_t) / B."""
    from captioner.decoder import TrainOut

    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6]]))
    log_loc = torch.log(torch.tensor([0.5, 0.25])).requires_grad_()
    out = TrainOut(logits=logits, targets=torch.tensor([0, 2]), caption_index=torch.tensor([0, 0]),
                   alpha_sum=torch.zeros(1, 4), log_alpha_chosen=log_loc.sum().view(1), entropy=torch.zeros(1),
                   use_expected=torch.zeros(1, dtype=torch.bool), alphas=[], log_location=log_loc)
    b = torch.tensor([-1.0, 0.0, -0.1])
    terms = caption_loss(out, alpha_c=0.0, hard=True, baseline=None, entropy_weight=0.0, estimator="token", word_baseline=b)
    adv = torch.tensor([torch.log(torch.tensor(0.5)) + 1.0, torch.log(torch.tensor(0.6)) + 0.1])
    assert terms.reinforce == pytest.approx(float(-(adv * log_loc.detach()).sum()), rel=1e-5)
    sums, counts = terms.word_rewards
    assert counts.tolist() == [1.0, 0.0, 1.0]
    new = update_word_baseline(b.double(), sums, counts, 0.9)
    assert new[1] == 0.0  # unseen in this batch: unchanged
    assert float(new[0]) == pytest.approx(0.9 * -1.0 + 0.1 * float(torch.log(torch.tensor(0.5))), rel=1e-6)
    first = update_word_baseline(None, sums, counts, 0.9)  # a word's first batch sets its baseline
    assert float(first[2]) == pytest.approx(float(torch.log(torch.tensor(0.6))), rel=1e-6)
    assert torch.isnan(first[1])

"""The decoder and its attention: shapes, normalisation, gradients, REINFORCE, and that it can learn."""

from __future__ import annotations

import pytest
import torch

from captioner.model.attention import Attention
from captioner.model.config import ATTENTION_TYPES, SCORE_FUNCTIONS, ModelConfig
from captioner.model.decoder import Decoder, HardTraining
from captioner.training.losses import caption_loss, update_baseline

V, D, G = 30, 40, 3


def cfg(attention="soft", score="additive", **kw) -> ModelConfig:
    base = dict(vocab_size=V, feature_dim=D, grid=G, embed_dim=16, hidden_dim=24, attention_dim=12, proj_dim=20,
                attention=attention, score=score, dropout=0.0, features="head")
    base.update(kw)
    return ModelConfig(**base)


def batch(B=6, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, G * G, D, generator=g)
    lengths = torch.randint(3, T + 1, (B,), generator=g).sort(descending=True).values
    caps = torch.randint(4, V, (B, T), generator=g)
    caps[:, 0] = 1
    for i, n in enumerate(lengths.tolist()):
        caps[i, n - 1] = 2
        caps[i, n:] = 0
    return feats, caps, lengths


@pytest.mark.parametrize("attention", ATTENTION_TYPES)
@pytest.mark.parametrize("score", SCORE_FUNCTIONS)
def test_shapes_normalised_attention_and_finite_gradients(attention, score):
    torch.manual_seed(0)
    dec = Decoder(cfg(attention, score))
    feats, caps, lengths = batch()
    out = dec(feats, caps, lengths)
    n_tokens = int((lengths - 1).sum())
    assert out.logits.shape == (n_tokens, V)
    assert out.targets.shape == (n_tokens,)
    for alpha in out.alphas:
        assert alpha.shape[1] == G * G
        torch.testing.assert_close(alpha.sum(1), torch.ones(alpha.shape[0]))
        assert (alpha >= 0).all()
    terms = caption_loss(out, alpha_c=1.0, hard=attention == "hard", baseline=None)
    terms.total.backward()
    for name, p in dec.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
    grads = {n for n, p in dec.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("attention.") for n in grads), "attention parameters get no gradient"


def test_label_smoothing_mixes_in_the_uniform_target_and_logs_the_true_nll():
    torch.manual_seed(0)
    dec = Decoder(cfg())
    feats, caps, lengths = batch()
    out = dec(feats, caps, lengths)
    plain = caption_loss(out, alpha_c=0.0, hard=False, baseline=None)
    smooth = caption_loss(out, alpha_c=0.0, hard=False, baseline=None, label_smoothing=0.1)
    uniform = -torch.log_softmax(out.logits, 1).mean(1).mean()
    torch.testing.assert_close(smooth.total, 0.9 * plain.total + 0.1 * uniform)
    torch.testing.assert_close(plain.total, torch.nn.functional.cross_entropy(out.logits, out.targets))
    assert smooth.ce == plain.ce  # what is logged (and rewarded, for hard attention) is the real NLL
    from captioner.training.config import TrainConfig
    from captioner.errors import ConfigError

    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0).validate()


def test_shrinking_batch_matches_full_padding_computation():
    """Computing only running captions must give the same logits as a per-caption run."""
    torch.manual_seed(0)
    dec = Decoder(cfg()).eval()
    feats, caps, lengths = batch()
    out = dec(feats, caps, lengths)
    # caption 0 alone (the longest) must give identical first-row logits at each of its steps
    single = dec(feats[-1:], caps[-1:], lengths[-1:])
    rows_last = (out.caption_index == len(lengths) - 1).nonzero().squeeze(1)
    torch.testing.assert_close(out.logits[rows_last], single.logits, rtol=1e-4, atol=1e-5)


def test_image_index_shares_features_across_captions():
    torch.manual_seed(0)
    dec = Decoder(cfg()).eval()
    feats, caps, lengths = batch(B=4)
    index = torch.tensor([0, 1, 0, 1])
    grouped = dec(feats[:2], caps, lengths, image_index=index)
    expanded = dec(feats[index], caps, lengths)
    torch.testing.assert_close(grouped.logits, expanded.logits)


def _attention_grad(expected_prob: float) -> float:
    torch.manual_seed(1)
    dec = Decoder(cfg("hard")).train()
    feats, caps, lengths = batch(B=8)
    out = dec(feats, caps, lengths, hard_training=HardTraining(expected_prob=expected_prob))
    terms = caption_loss(out, alpha_c=0.0, hard=True, baseline=-5.0, entropy_weight=0.0)
    terms.total.backward()
    return float(sum(p.grad.abs().sum() for n, p in dec.named_parameters()
                     if n.startswith("attention.") and p.grad is not None))


def test_reinforce_moves_attention_and_vanishes_where_it_should():
    # every caption on a sampled location: attention is trained only through REINFORCE
    assert _attention_grad(expected_prob=0.0) > 0
    # every caption on the expected context: the REINFORCE term is zero
    torch.manual_seed(1)
    dec = Decoder(cfg("hard")).train()
    feats, caps, lengths = batch(B=8)
    out = dec(feats, caps, lengths, hard_training=HardTraining(expected_prob=1.0))
    terms = caption_loss(out, alpha_c=0.0, hard=True, baseline=-5.0, entropy_weight=0.0)
    assert terms.reinforce == 0.0


def test_reinforce_raises_probability_of_rewarded_locations():
    """One gradient step with a positive advantage makes the sampled location more likely."""
    torch.manual_seed(3)
    dec = Decoder(cfg("hard")).train()
    feats, caps, lengths = batch(B=1)
    state = torch.get_rng_state()
    out = dec(feats, caps, lengths, hard_training=HardTraining(expected_prob=0.0))
    before = float(out.log_alpha_chosen.detach())
    # a baseline far below the reward: the advantage is positive
    terms = caption_loss(out, alpha_c=0.0, hard=True, baseline=-1e3, entropy_weight=0.0)
    opt = torch.optim.SGD([p for n, p in dec.named_parameters() if n.startswith("attention.")], lr=1e-4)
    opt.zero_grad()
    terms.total.backward()
    opt.step()
    torch.set_rng_state(state)
    after = float(dec(feats, caps, lengths, hard_training=HardTraining(expected_prob=0.0)).log_alpha_chosen.detach())
    assert after > before


def test_moving_average_baseline():
    b = update_baseline(None, -10.0, 0.9)
    assert b == -10.0
    assert update_baseline(b, 0.0, 0.9) == pytest.approx(-9.0)


def test_local_attention_concentrates_around_its_centre():
    torch.manual_seed(0)
    att = Attention("local", "additive", ann_dim=8, hidden_dim=8, attention_dim=8, grid=5, local_sigma=0.5)
    glob = Attention("soft", "additive", ann_dim=8, hidden_dim=8, attention_dim=8, grid=5)
    glob.score.load_state_dict(att.score.state_dict())
    ann, h = torch.randn(4, 25, 8), torch.randn(4, 8)
    local_alpha, soft_alpha = att(att.keys(ann), h), glob(glob.keys(ann), h)
    entropy = lambda a: -(a * a.clamp_min(1e-12).log()).sum(1)  # noqa: E731
    assert (entropy(local_alpha) < entropy(soft_alpha)).all()


@pytest.mark.parametrize("attention", ATTENTION_TYPES)
def test_tiny_model_overfits_a_small_batch(attention):
    torch.manual_seed(0)
    dec = Decoder(cfg(attention, hidden_dim=64, embed_dim=32, proj_dim=32)).train()
    feats, caps, lengths = batch(B=4, T=6)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    baseline = None
    for _ in range(300):
        out = dec(feats, caps, lengths, hard_training=HardTraining(expected_prob=0.5))
        terms = caption_loss(out, alpha_c=0.0, hard=attention == "hard", baseline=baseline, entropy_weight=0.0)
        baseline = update_baseline(baseline, terms.reward, 0.9)
        opt.zero_grad()
        terms.total.backward()
        opt.step()
    dec.eval()
    out = dec(feats, caps, lengths)
    ce = torch.nn.functional.cross_entropy(out.logits, out.targets)
    assert ce < 0.05, f"cross-entropy {ce:.3f} after overfitting"


@pytest.mark.parametrize("bad", [dict(attention="sparse"), dict(score="cosine"), dict(encoder="alexnet"),
                                 dict(hard_mode="maybe")])
def test_unknown_names_are_config_errors(bad):
    from captioner.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown"):
        cfg(**bad).validate()


@pytest.mark.parametrize("score", SCORE_FUNCTIONS)
def test_rows_reading_their_images_grid_in_place_match_rows_with_a_copy_each(score):
    """Memory.for_rows (the captions of an image scored together against its one grid) gives each row what a
    per-row copy of its image's grid gives, whatever the order and number of rows per image."""
    from captioner.model.decoder import Memory

    torch.manual_seed(0)
    dec = Decoder(cfg("soft", score=score))
    grids = dec.memory(torch.randn(3, G * G, D))
    image = torch.tensor([2, 0, 2, 1, 2, 0])  # image 2 has three rows, image 1 one
    query, location = torch.randn(6, dec.cfg.hidden_dim), torch.tensor([0, 3, 1, 2, 3, 0])
    grouped, copied = Memory.for_rows(grids.ann, grids.keys, image), grids.select(image)
    torch.testing.assert_close(grouped.scores(dec.attention.score, query), copied.scores(dec.attention.score, query))
    alpha = torch.softmax(torch.randn(6, G * G), 1)
    torch.testing.assert_close(grouped.context(alpha), copied.context(alpha))
    torch.testing.assert_close(grouped.pick(location), copied.pick(location))
    rows = torch.tensor([4, 1])
    torch.testing.assert_close(grouped.select(rows).scores(dec.attention.score, query[rows]),
                               copied.select(rows).scores(dec.attention.score, query[rows]))
    torch.testing.assert_close(grouped.first(2).context(alpha[:2]), copied.first(2).context(alpha[:2]))
    h0, _ = dec.init_state(grouped)
    torch.testing.assert_close(h0, dec.init_state(copied)[0])


def test_glimpse_reads_each_cells_neighbourhood_but_scores_the_cell_alone():
    """glimpse 3: a cell's value is the mean of the cells around it (inside the grid), its key is its own."""
    feats = batch(B=2)[0]
    torch.manual_seed(0)
    plain = Decoder(cfg(glimpse=1)).eval()
    torch.manual_seed(0)
    wide = Decoder(cfg(glimpse=3)).eval()
    one, three = plain.memory(feats), wide.memory(feats)
    assert torch.equal(one.keys, three.keys)
    grid = one.ann.view(2, G, G, -1)
    assert torch.allclose(three.ann[:, 0], grid[:, :2, :2].mean((1, 2)), atol=1e-6)  # a corner: its 4 cells
    assert torch.allclose(three.ann[:, 4], grid.mean((1, 2)), atol=1e-6)  # the centre of 3 x 3: all 9


def test_glimpse_auto_depends_on_the_grid_and_bad_values_are_errors():
    from captioner.errors import ConfigError

    assert ModelConfig().validate().glimpse == 3  # the 14 x 14 grid
    assert ModelConfig(features="head", grid=7).validate().glimpse == 1
    for bad in (2, -1, 9):
        with pytest.raises(ConfigError, match="glimpse"):
            ModelConfig(features="head", grid=7, glimpse=bad).validate()

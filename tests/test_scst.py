"""Self-critical training: the CIDEr-D reward, sampling with log-probabilities, the loss, and a real run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from pycocoevalcap.cider.cider import Cider

from captioner.metrics.cider import CiderD
from captioner.cli.main import main as cli_main
from captioner.model.config import ModelConfig
from captioner.model.decoder import Decoder
from captioner.errors import ConfigError, DataError
from captioner.model.sampling import sample_captions
from captioner.training.self_critical import scst_loss
from captioner.training.loop import main as train_main
from captioner.data.vocab import Vocab
from conftest import WORDS, tiny_config, train_config

REFS = [
    ["a red circle left of a blue square", "a blue square right of a red circle", "red circle and blue square"],
    ["a small green triangle above a large red square", "green triangle over a red square"],
    ["a large blue circle", "one big blue circle on a textured background", "a blue circle"],
    ["two squares", "a green square and a red square side by side"],
]
CANDIDATES = ["a red circle left of a square", "a green triangle above a red square", "a red triangle",
              "a green square left of a red square"]


def test_cider_d_matches_pycocoevalcap():
    gts = {i: refs for i, refs in enumerate(REFS)}
    res = {i: [c] for i, c in enumerate(CANDIDATES)}
    mean, per_image = Cider().compute_score(gts, res)
    ours = CiderD([[r.split() for r in refs] for refs in REFS]).scores(range(len(REFS)), [c.split() for c in CANDIDATES])
    assert ours.tolist() == pytest.approx(per_image.tolist(), abs=1e-12)
    assert ours.mean() == pytest.approx(mean, abs=1e-12)
    assert len(set(ours.round(6))) == len(ours)  # the example tells the candidates apart


def test_cider_d_needs_references():
    with pytest.raises(DataError, match="reference"):
        CiderD([[["a", "dog"]], []])


def _model(attention: str = "soft") -> tuple[Decoder, Vocab, torch.Tensor]:
    torch.manual_seed(0)
    vocab = Vocab.build([" ".join(WORDS)], min_count=1)
    cfg = ModelConfig(vocab_size=len(vocab), feature_dim=20, grid=2, embed_dim=8, hidden_dim=12, attention_dim=6,
                      proj_dim=10, attention=attention, dropout=0.0, features="head")
    return Decoder(cfg), vocab, torch.randn(3, 4, 20)


@pytest.mark.parametrize("attention", ["soft", "hard", "local"])
def test_samples_are_valid_captions_with_differentiable_log_probs(attention):
    dec, vocab, feats = _model(attention)
    s = sample_captions(dec, feats, vocab, per_image=4, max_len=6, generator=torch.Generator().manual_seed(1))
    assert s.tokens.shape[0] == 12 and s.log_prob.shape == (12,) and s.alpha_sum.shape == (12, 4)
    for row, n in zip(s.tokens.tolist(), s.lengths.tolist()):
        assert 2 <= n <= 7 and row[n - 1] == vocab.end_id and all(t == vocab.pad_id for t in row[n:])
        assert not {vocab.pad_id, vocab.start_id, vocab.unk_id, vocab.end_id} & set(row[: n - 1])
    assert torch.isfinite(s.log_prob).all() and (s.log_prob < 0).all()
    torch.testing.assert_close(s.alpha_sum.sum(1), s.lengths.float())  # one distribution per step
    s.log_prob.sum().backward()
    attention_grad = sum(p.grad.abs().sum() for p in dec.attention.parameters() if p.grad is not None)
    assert dec.l_o.weight.grad is not None and attention_grad > 0


def test_replayed_samples_have_the_sampled_log_probs():
    dec, vocab, feats = _model()
    s = sample_captions(dec, feats, vocab, per_image=5, max_len=8, generator=torch.Generator().manual_seed(2))
    again = sample_captions(dec, feats, vocab, per_image=5, max_len=8, replay=s.tokens)
    assert torch.equal(again.tokens, s.tokens)
    torch.testing.assert_close(again.log_prob, s.log_prob)


def test_sampled_log_probs_equal_the_teacher_forced_ones():
    """Sampling drops finished rows as it goes: its bookkeeping must agree with the training pass."""
    dec, vocab, feats = _model()
    dec.eval()
    s = sample_captions(dec, feats, vocab, per_image=4, max_len=6, generator=torch.Generator().manual_seed(5))
    caps = torch.cat([torch.full((len(s.lengths), 1), vocab.start_id), s.tokens], 1)
    order = s.lengths.argsort(descending=True, stable=True)
    out = dec(feats, caps[order], s.lengths[order] + 1, image_index=torch.arange(3).repeat_interleave(4)[order])
    logits = out.logits.index_fill(1, torch.tensor([vocab.pad_id, vocab.start_id, vocab.unk_id]), -float("inf"))
    steps = torch.cat([torch.full((len(a),), t) for t, a in enumerate(out.alphas)])  # step-major rows
    logits[steps == 0, vocab.end_id] = -float("inf")
    token_lp = torch.log_softmax(logits, 1).gather(1, out.targets.unsqueeze(1)).squeeze(1)
    token_lp = torch.where(steps == 6, 0.0, token_lp)  # <end> forced at the limit
    expected = torch.zeros(len(order)).index_add(0, order[out.caption_index], token_lp)
    torch.testing.assert_close(s.log_prob, expected)


def test_a_sample_never_ending_is_cut_at_the_length_limit():
    dec, vocab, feats = _model()
    with torch.no_grad():
        dec.l_o.bias[vocab.end_id] = -1e4  # <end> practically impossible
    s = sample_captions(dec, feats, vocab, per_image=2, max_len=5)
    assert s.lengths.tolist() == [6] * 6 and (s.tokens[:, 5] == vocab.end_id).all()


def test_equal_rewards_teach_nothing():
    dec, vocab, feats = _model()
    s = sample_captions(dec, feats, vocab, per_image=3, max_len=6)
    terms = scst_loss(s, torch.tensor([0.5, 0.5, 0.5, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]))
    terms.total.backward()
    assert terms.reward == pytest.approx(2.5 / 3)
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in dec.parameters())


def test_leave_one_out_baseline_by_hand_on_two_samples():
    """Two samples of one image, rewards 0.9 and 0.3: advantages +0.6 and -0.6 (each against the other's
    reward), so the policy term is -(0.6 log p1 - 0.6 log p2) / tokens."""
    dec, vocab, feats = _model()
    s = sample_captions(dec, feats[:1], vocab, per_image=2, max_len=6, generator=torch.Generator().manual_seed(0))
    terms = scst_loss(s, torch.tensor([0.9, 0.3]))
    lp = s.log_prob.detach()
    by_hand = -(0.6 * lp[0] - 0.6 * lp[1]) / s.lengths.sum().float()
    assert terms.policy == pytest.approx(float(by_hand), rel=1e-4)  # float32 rewards
    assert terms.reward == pytest.approx(0.6)


def test_rewarded_sample_becomes_more_likely():
    dec, vocab, feats = _model()
    feats = feats[:1]
    s = sample_captions(dec, feats, vocab, per_image=4, max_len=6, generator=torch.Generator().manual_seed(0))
    before = s.log_prob.detach()
    opt = torch.optim.SGD(dec.parameters(), lr=0.05)
    scst_loss(s, torch.tensor([1.0, 0.0, 0.0, 0.0])).total.backward()
    opt.step()
    after = sample_captions(dec, feats, vocab, per_image=4, max_len=6, replay=s.tokens).log_prob.detach()
    assert after[0] > before[0]
    assert (after[1:] - before[1:]).mean() < 0


def test_hard_attention_locations_get_the_advantage_too():
    """With hard attention the attention scores only choose locations: their gradient is REINFORCE's."""
    dec, vocab, feats = _model("hard")
    s = sample_captions(dec, feats, vocab, per_image=3, max_len=6, generator=torch.Generator().manual_seed(0))
    scst_loss(s, torch.arange(9, dtype=torch.float32)).total.backward()
    assert dec.attention.score.v.weight.grad.abs().sum() > 0


def test_argmax_locations_are_no_sampled_choice():
    """--scst-locations argmax: captions are sampled on the most likely cells, which carry no log-probability,
    so the reward reaches the words (and the cells' contents) but not the scorer."""
    dec, vocab, feats = _model("hard")
    s = sample_captions(dec, feats, vocab, per_image=3, max_len=6, generator=torch.Generator().manual_seed(0),
                        location_mode="argmax")
    scst_loss(s, torch.arange(9, dtype=torch.float32)).total.backward()
    assert dec.attention.score.v.weight.grad is None or dec.attention.score.v.weight.grad.abs().sum() == 0
    assert dec.l_o.weight.grad.abs().sum() > 0 and dec.project.weight.grad.abs().sum() > 0
    again = sample_captions(dec, feats, vocab, per_image=3, max_len=6, location_mode="argmax", replay=s.tokens)
    torch.testing.assert_close(again.log_prob, s.log_prob)  # deterministic cells: replay gives the same log p


def test_argmax_scst_locations_need_the_anchor_with_location_paths(shapes, tmp_path):
    hard = tiny_config("hard", grid=2, features="head")
    with pytest.raises(ConfigError, match="scst-xe-weight"):
        train_config(shapes, tmp_path / "r", model=hard, objective="scst", scst_locations="argmax",
                     scst_xe_weight=0.1, location_samples=1).validate()
    train_config(shapes, tmp_path / "r", model=hard, objective="scst", scst_locations="argmax", scst_xe_weight=0.1,
                 location_samples=2).validate()


def test_scst_loss_needs_two_samples_per_image():
    dec, vocab, feats = _model()
    with pytest.raises(ValueError, match="2 samples"):
        scst_loss(sample_captions(dec, feats, vocab, per_image=1, max_len=4), torch.zeros(3))


def _cfg(shapes: Path, out: Path, **kw):
    return train_config(shapes, out, **{"model": tiny_config("soft", grid=2, features="head"), **kw})


def test_scst_run_raises_the_reward_from_a_warm_start(shapes, tmp_path):
    train_main(_cfg(shapes, tmp_path / "xe", epochs=3, lr=3e-3))
    source = tmp_path / "xe" / "best.safetensors"
    result = train_main(_cfg(shapes, tmp_path / "scst", objective="scst", scst_samples=4, epochs=3, lr=1e-3,
                             init_from=str(source)))
    rows = [json.loads(line) for line in (tmp_path / "scst" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert "reward" not in rows[0] and all(r["reward"] >= 0 for r in rows[1:])
    assert rows[3]["reward"] > rows[1]["reward"]  # it learns what it is rewarded for
    assert result["best"] == max(r["BLEU-4"] for r in rows)  # the warm start counts as a candidate
    assert (tmp_path / "scst" / "best.safetensors").is_file() and (tmp_path / "scst" / "curves.png").is_file()


def test_scst_with_a_cross_entropy_anchor(shapes, tmp_path):
    with pytest.warns(UserWarning, match="random weights"):
        result = train_main(_cfg(shapes, tmp_path / "mix", objective="scst", scst_samples=3, epochs=1,
                                 scst_xe_weight=0.5))
    row = result["history"][-1]
    assert row["reference_ce"] > 0 and row["reward"] >= 0
    assert row["loss"] != pytest.approx(row["policy"])  # the cross-entropy is part of the loss
    with pytest.raises(ConfigError, match=">= 0"):
        train_main(_cfg(shapes, tmp_path / "neg", objective="scst", scst_xe_weight=-1.0))


def test_hard_scst_on_argmax_locations_trains_the_locations_through_the_anchor(shapes, tmp_path):
    """A whole run: captions sampled on argmax cells, the anchor's 2 location paths training the scorer."""
    hard = tiny_config("hard", grid=2, features="head")
    with pytest.warns(UserWarning, match="random weights"):
        result = train_main(_cfg(shapes, tmp_path / "am", model=hard, objective="scst", scst_samples=3, epochs=1,
                                 scst_xe_weight=0.5, scst_locations="argmax", location_samples=2,
                                 hard_estimator="token"))
    row = result["history"][-1]
    assert row["reference_ce"] > 0 and row["reward"] >= 0 and math.isfinite(row["loss"])


def test_location_options_self_critical_sampling_ignores_are_warned_about(shapes, tmp_path):
    hard = tiny_config("hard", grid=2, features="head")
    with pytest.warns(UserWarning, match="not used by self-critical training"):
        train_main(_cfg(shapes, tmp_path / "s", model=hard, objective="scst", scst_samples=2, epochs=1,
                        limit_batches=1, location_samples=2, init_from=None))


def test_scst_resumes_to_identical_weights(shapes, tmp_path):
    from safetensors.torch import load_file

    kw = dict(objective="scst", scst_samples=3, epochs=2)
    with pytest.warns(UserWarning, match="random weights"):
        train_main(_cfg(shapes, tmp_path / "full", **kw))
    calls = {"n": 0}

    def interrupt(step: int) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="random weights"):
        assert train_main(_cfg(shapes, tmp_path / "cut", **kw), on_step=interrupt)["interrupted"]
    train_main(_cfg(shapes, tmp_path / "cut", **kw), resume=True)
    full, cut = load_file(str(tmp_path / "full" / "last.safetensors")), load_file(str(tmp_path / "cut" / "last.safetensors"))
    for k in full:
        torch.testing.assert_close(full[k], cut[k], rtol=0, atol=0, msg=k)


def test_bad_scst_options_are_one_line_errors(shapes, tmp_path, capsys):
    with pytest.raises(ConfigError, match="scst_samples"):
        train_main(_cfg(shapes, tmp_path / "x", objective="scst", scst_samples=1))
    assert cli_main(["train", "--data", str(shapes / "captions_train.json"), "--objective", "rl",
                     "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "unknown objective 'rl'" in err and err.count("\n") == 1

"""The one decoding module: greedy, batched beam search, sampling."""

from __future__ import annotations

import pytest
import torch

from captioner.model.decoder import Decoder
from captioner.model.search import DecodeOptions, beam_search, decode, greedy
from conftest import tiny_config, tiny_vocab


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    vocab = tiny_vocab()
    dec = Decoder(tiny_config(vocab_size=len(vocab))).eval()
    feats = torch.randn(5, 4, dec.cfg.feature_dim)
    return dec, vocab, feats


def test_beam_one_equals_greedy(setup):
    dec, vocab, feats = setup
    g = greedy(dec, feats, vocab, DecodeOptions(beam=1, max_len=12))
    b = beam_search(dec, feats, vocab, DecodeOptions(beam=1, max_len=12))
    assert [r.words for r in g] == [r.words for r in b]
    for x, y in zip(g, b):
        assert x.log_prob == pytest.approx(y.log_prob, abs=1e-4)


def test_beam_results_sorted_and_never_empty(setup):
    dec, vocab, feats = setup
    for res in decode(dec, feats, vocab, DecodeOptions(beam=4, max_len=10)):
        hyps = [res] + res.alternatives
        assert len(hyps) >= 2
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert all(len(h.words) >= 1 for h in hyps)
        assert len(res.alphas) == len(res.words)


def test_beam_search_finds_at_least_greedy_log_probability(setup):
    dec, vocab, feats = setup
    opts = DecodeOptions(beam=5, max_len=8, length_penalty=0.0)  # raw log-probabilities
    g = greedy(dec, feats, vocab, DecodeOptions(beam=1, max_len=8))
    b = beam_search(dec, feats, vocab, opts)
    for x, y in zip(g, b):
        assert y.log_prob >= x.log_prob - 1e-4


def test_impossible_end_still_returns_a_max_length_caption():
    torch.manual_seed(0)
    vocab = tiny_vocab()
    dec = Decoder(tiny_config(vocab_size=len(vocab))).eval()
    with torch.no_grad():
        dec.l_o.bias[vocab.end_id] = -1e4  # <end> is never chosen
    feats = torch.randn(3, 4, dec.cfg.feature_dim)
    for beam in (1, 3):
        for res in decode(dec, feats, vocab, DecodeOptions(beam=beam, max_len=7)):
            assert len(res.words) == 7
            assert res.alphas.shape == (7, 4)


def test_batched_and_one_by_one_give_the_same_captions(setup):
    dec, vocab, feats = setup
    for beam in (1, 3):
        opts = DecodeOptions(beam=beam, max_len=10)
        batched = [r.words for r in decode(dec, feats, vocab, opts)]
        single = [decode(dec, feats[i : i + 1], vocab, opts)[0].words for i in range(len(feats))]
        assert batched == single


def test_same_seed_same_sample(setup):
    dec, vocab, feats = setup
    a = decode(dec, feats, vocab, DecodeOptions(sample=True, seed=7, max_len=10))
    b = decode(dec, feats, vocab, DecodeOptions(sample=True, seed=7, max_len=10))
    assert [r.words for r in a] == [r.words for r in b]
    others = [[r.words for r in decode(dec, feats, vocab, DecodeOptions(sample=True, seed=s, max_len=10))]
              for s in range(4)]
    assert any(o != others[0] for o in others[1:])


def test_hard_attention_reports_locations():
    torch.manual_seed(0)
    vocab = tiny_vocab()
    dec = Decoder(tiny_config("hard", vocab_size=len(vocab))).eval()
    feats = torch.randn(2, 4, dec.cfg.feature_dim)
    for beam in (1, 3):
        for res in decode(dec, feats, vocab, DecodeOptions(beam=beam, max_len=6)):
            assert res.locations is not None and len(res.locations) == len(res.words)
            # argmax decoding: the chosen cell is the peak of that word's map
            assert res.locations == [int(a.argmax()) for a in res.alphas]


def test_ban_repeats_forbids_the_last_word_and_repeated_ngrams():
    from captioner.model.search import _ban_repeats

    history = torch.tensor([[4, 5, 6, 4, 5], [4, 5, 6, 7, 4]])
    banned = lambda n: [torch.isinf(row).nonzero().flatten().tolist() for row in _ban_repeats(torch.zeros(2, 9), history, n)]
    assert banned(0) == [[], []]
    assert banned(1) == [[5], [4]]  # only the word just emitted
    assert banned(2) == [[5, 6], [4, 5]]  # "5 6" and "4 5" were seen
    assert banned(3) == [[5, 6], [4]]  # "4 5 6" was seen; nothing followed "7 4"


@pytest.mark.parametrize("beam", [1, 3])
def test_no_repeat_ngram_stops_a_model_that_loops(beam):
    torch.manual_seed(0)
    vocab = tiny_vocab()
    dec = Decoder(tiny_config(vocab_size=len(vocab))).eval()
    with torch.no_grad():
        dec.l_o.bias[vocab.stoi["red"]] = 8.0  # "red" after every word
        dec.l_o.bias[vocab.end_id] = -8.0
    feats = torch.randn(3, 4, dec.cfg.feature_dim)
    looping = decode(dec, feats, vocab, DecodeOptions(beam=beam, max_len=9, no_repeat_ngram=0))
    assert all(r.words.count("red") >= 5 for r in looping)
    for n in (1, 2, 3):
        for r in decode(dec, feats, vocab, DecodeOptions(beam=beam, max_len=9, no_repeat_ngram=n)):
            assert all(a != b for a, b in zip(r.words, r.words[1:]))
            grams = [tuple(r.words[i : i + n]) for i in range(len(r.words) - n + 1)]
            assert n == 1 or len(grams) == len(set(grams)), r.words


def test_sampled_location_paths_that_see_the_same_thing_decode_like_argmax():
    """Every cell identical: whichever cells the K paths sample, they agree, so the mixture is one path."""
    torch.manual_seed(0)
    vocab = tiny_vocab()
    dec = Decoder(tiny_config("hard", vocab_size=len(vocab))).eval()
    feats = torch.randn(3, 1, dec.cfg.feature_dim).expand(3, 4, -1).contiguous()
    dec.cfg.position = False  # positions would make the cells differ
    for beam in (1, 3):
        ref = decode(dec, feats, vocab, DecodeOptions(beam=beam, max_len=6, hard_mode="argmax"))
        got = decode(dec, feats, vocab, DecodeOptions(beam=beam, max_len=6, hard_mode="sample", location_samples=4))
        assert [r.words for r in got] == [r.words for r in ref]
        assert [r.log_prob for r in got] == pytest.approx([r.log_prob for r in ref], abs=1e-4)
    dec.cfg.position = True


def test_sampled_location_paths_mix_into_one_distribution_and_are_reproducible():
    from captioner.model.search import _next_step

    torch.manual_seed(0)
    vocab = tiny_vocab()
    dec = Decoder(tiny_config("hard", vocab_size=len(vocab))).eval()
    feats = torch.randn(2, 4, dec.cfg.feature_dim)
    memory = dec.memory(feats).select(torch.arange(2).repeat_interleave(5))
    h, c = dec.init_state(memory)
    weight = torch.log(torch.tensor([[0.7, 0.1, 0.1, 0.05, 0.05]] * 2))
    step = _next_step(dec, torch.full((2,), vocab.start_id), h.view(2, 5, -1), c.view(2, 5, -1), memory, "sample",
                      torch.Generator().manual_seed(0), weight)
    assert step.logp.exp().sum(1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    expected = (weight.exp().unsqueeze(2) * step.path_logp.exp()).sum(1).log()  # the weighted mixture
    assert torch.allclose(step.logp, expected, atol=1e-5)
    opts = DecodeOptions(beam=3, max_len=6, hard_mode="sample", location_samples=3, seed=1)
    assert [r.words for r in decode(dec, feats, vocab, opts)] == [r.words for r in decode(dec, feats, vocab, opts)]
    with pytest.raises(Exception, match="location-samples"):
        DecodeOptions(location_samples=0)

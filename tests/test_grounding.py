"""The terms that decide where attention points: doubly stochastic / coverage, box supervision, the sentinel."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from captioner.training.boxes import box_loss, box_targets, cell_mask
from captioner.data.records import Record
from captioner.model.decoder import Decoder, TrainOut
from captioner.model.search import DecodeOptions, decode
from captioner.errors import DataError
from captioner.training.losses import caption_loss, doubly_stochastic
from captioner.data.instances import ImageBoxes, InstancesIndex, load_instances
from conftest import tiny_config, tiny_vocab

# one caption of two words on a 2x2 grid: per-cell totals 1.1, 0.5, 0.2, 0.2
ALPHAS = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.4, 0.4, 0.1, 0.1]])


def test_doubly_stochastic_term_matches_a_hand_computation():
    total = ALPHAS.sum(0, keepdim=True)
    # the paper: (1-1.1)^2 + (1-0.5)^2 + (1-0.2)^2 + (1-0.2)^2
    assert float(doubly_stochastic(total)) == pytest.approx(0.01 + 0.25 + 0.64 + 0.64)


def test_caption_loss_adds_the_weighted_doubly_stochastic_term_per_caption():
    # caption 0 has 2 steps (the maps above), caption 1 one step looking at cell 3 only
    out = TrainOut(logits=torch.zeros(3, 5), targets=torch.tensor([1, 2, 3]), caption_index=torch.tensor([0, 1, 0]),
                   alpha_sum=torch.stack([ALPHAS.sum(0), torch.tensor([0.0, 0.0, 0.0, 1.0])]),
                   log_alpha_chosen=torch.zeros(2), entropy=torch.zeros(2), use_expected=torch.zeros(2, dtype=torch.bool),
                   alphas=[], log_location=None)
    terms = caption_loss(out, alpha_c=2.0, hard=False, baseline=None)
    assert terms.doubly_stochastic == pytest.approx(2.0 * (1.54 + 3.0) / 2)
    assert terms.ce == pytest.approx(math.log(5))


def _image() -> ImageBoxes:
    # 100 x 100: a circle in the top-left cell, a square covering the right column
    return ImageBoxes(1, "a.png", 100.0, 100.0, (("circle", (0.0, 0.0, 50.0, 50.0)), ("square", (50.0, 0.0, 50.0, 100.0))))


def test_cell_masks_cover_the_cells_whose_centres_are_in_the_boxes():
    img = _image()
    assert cell_mask(img, "circle", 2).tolist() == [True, False, False, False]
    assert cell_mask(img, "square", 2).tolist() == [False, True, False, True]
    tiny = ImageBoxes(2, "b.png", 100.0, 100.0, (("circle", (60.0, 60.0, 5.0, 5.0)),))  # holds no cell centre
    assert cell_mask(tiny, "circle", 2).tolist() == [False, False, False, True]


def test_box_loss_matches_a_hand_computation():
    vocab = tiny_vocab()
    index = InstancesIndex([_image()], ["circle", "square"])
    targets = box_targets([Record("a.png", ("a circle",), "train", "1")], index, vocab, 2)
    words = torch.tensor([vocab.stoi["circle"], vocab.stoi["red"], vocab.stoi["square"]])
    alphas = torch.tensor([[0.5, 0.2, 0.2, 0.1], [0.25] * 4, [0.4, 0.2, 0.3, 0.1]])
    gamma, rows = targets.targets([0], words, torch.zeros(3, dtype=torch.long), 4)
    assert rows.tolist() == [0, 2]  # "red" names no category
    loss = box_loss(alphas[rows], gamma)
    expected = (-math.log(0.5) + -0.5 * (math.log(0.2) + math.log(0.1))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # attention inside the boxes lowers it
    better = torch.tensor([[0.97, 0.01, 0.01, 0.01], [0.01, 0.49, 0.01, 0.49]])
    assert float(box_loss(better, gamma)) < float(loss)


def test_an_instances_file_that_misses_training_images_is_a_clear_error(tmp_path):
    inst = tmp_path / "instances.json"
    inst.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
                                "categories": [{"id": 1, "name": "circle"}],
                                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}]}))
    recs = [Record(f"{n}.png", ("a circle",), "train", n) for n in ("a", "b", "c")]
    with pytest.raises(DataError, match=r"2 of 3 training images have no entry"):
        box_targets(recs, load_instances(inst), tiny_vocab(), 2)


@pytest.mark.parametrize("attention", ["soft", "hard", "local"])
def test_sentinel_and_image_weights_sum_to_one(attention):
    torch.manual_seed(0)
    vocab = tiny_vocab()
    dec = Decoder(tiny_config(attention, vocab_size=len(vocab), sentinel=True)).eval()
    feats = torch.randn(3, 4, dec.cfg.feature_dim)
    memory = dec.memory(feats)
    h, c = dec.init_state(memory)
    prev = torch.full((3,), vocab.start_id)
    for _ in range(3):
        _, out = dec.next_logits(prev, h, c, memory, mode="argmax")
        assert out.sentinel is not None
        torch.testing.assert_close(out.alpha.sum(1) + out.sentinel, torch.ones(3))
        assert bool((out.sentinel > 0).all() and (out.sentinel < 1).all())
        if attention == "hard":  # the chosen cell's probability is among the cells, renormalised
            where = out.alpha / (1 - out.sentinel).unsqueeze(1)
            torch.testing.assert_close(out.log_location, torch.log(where.gather(1, out.location.unsqueeze(1)).squeeze(1)))
        h, c, prev = out.h, out.c, torch.full((3,), vocab.stoi["red"])
    for res in decode(dec, feats, vocab, DecodeOptions(beam=2, max_len=5)):
        weights = res.image_weights
        assert weights.shape == (len(res.words),)
        np.testing.assert_allclose(weights, res.alphas.sum(1), rtol=1e-6)
        assert bool((weights < 1).all() and (weights > 0).all())


def test_without_a_sentinel_every_word_looks_wholly_at_the_image():
    torch.manual_seed(0)
    vocab = tiny_vocab()
    dec = Decoder(tiny_config(vocab_size=len(vocab))).eval()
    res = decode(dec, torch.randn(2, 4, dec.cfg.feature_dim), vocab, DecodeOptions(beam=1, max_len=4))
    for r in res:
        np.testing.assert_allclose(r.image_weights, 1.0, rtol=1e-5)


def test_fused_features_project_the_head_once_per_coarse_cell_and_match_an_upsampled_head():
    """The FPN sum equals projecting the head upsampled to the fine grid (linear maps commute with nearest
    upsampling), which is what the pixel-shuffle packing must preserve."""
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=len(tiny_vocab()), grid=4, position=False)
    dec = Decoder(cfg)
    fine = torch.randn(1, cfg.fine_dim, 4, 4)
    head = torch.randn(1, 1280, 2, 2)
    packed = torch.cat([fine, torch.nn.functional.pixel_shuffle(head, 2)], 1).flatten(2).transpose(1, 2)
    got = dec.project(packed)
    up = torch.nn.functional.interpolate(head, scale_factor=2, mode="nearest").flatten(2).transpose(1, 2)
    want = dec.project.fine(fine.flatten(2).transpose(1, 2)) + dec.project.coarse(up)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

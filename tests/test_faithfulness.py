"""The attention deletion test: exact blanking, teacher-forced re-scoring, and that it ranks a model
whose attention points at its real evidence above models whose attention (or whose image) means nothing."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest
import torch

from captioner.model.results import CaptionResult
from captioner.model.search import DecodeOptions, decode
from captioner.errors import ConfigError
from captioner.evaluation.deletion import (STOP_WORDS, ModelScorer, blank_cells, default_cells, deletion_test,
                                    is_content_word, word_probabilities)

from conftest import tiny_config, tiny_vocab


# ------------------------------------------------------------------------------------------ blanking
def test_blank_cells_blanks_exactly_the_named_cells_of_a_2x2_grid():
    images = torch.arange(1, 1 + 2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)  # no zeros
    out = blank_cells(images, [[1], [0, 3]], grid=2)
    keep0 = torch.tensor([[1, 1, 0, 0],  # cell 1 = row 0, col 1: rows 0-1, columns 2-3
                          [1, 1, 0, 0],
                          [1, 1, 1, 1],
                          [1, 1, 1, 1]], dtype=torch.float32)
    keep1 = torch.tensor([[0, 0, 1, 1],  # cells 0 and 3: the top-left and bottom-right quarters
                          [0, 0, 1, 1],
                          [1, 1, 0, 0],
                          [1, 1, 0, 0]], dtype=torch.float32)
    assert torch.equal(out[0], images[0] * keep0)  # every channel, nothing else
    assert torch.equal(out[1], images[1] * keep1)
    assert torch.equal(images, torch.arange(1, 1 + 2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4))


def test_blank_cells_uneven_sizes_tile_the_image():
    img = torch.ones(1, 1, 7, 7)
    centre = blank_cells(img, [[4]], grid=3)[0, 0]  # edges round(i * 7 / 3) = 0, 2, 5, 7
    expected = torch.ones(7, 7)
    expected[2:5, 2:5] = 0
    assert torch.equal(centre, expected)
    # every pixel belongs to exactly one cell, whatever the rounding
    for size, grid in [(5, 2), (7, 3), (10, 4), (64, 7)]:
        img = torch.ones(1, 1, size, size)
        covered = sum(1 - blank_cells(img, [[c]], grid)[0, 0] for c in range(grid * grid))
        assert torch.equal(covered, torch.ones(size, size)), (size, grid)


def test_content_words_and_default_k():
    assert {"a", "an", "the", "of", "in", "on", "at", "to", "with", "and", "is", "are"} <= STOP_WORDS
    assert [w for w in ["a", "dog", "in", "the", "red", ",", "<unk>", "frisbee", "is"] if is_content_word(w)] == [
        "dog", "red", "frisbee"]
    assert (default_cells(4), default_cells(16), default_cells(49), default_cells(196)) == (1, 2, 5, 20)


# ------------------------------------------------------------------------ a fake with known evidence
GRID, SIZE = 4, 16  # 16 cells of 4 x 4 pixels


class CellZeroModel:
    """Word probabilities that depend only on the pixels of cell 0 (or, ``uses_image=False``, on nothing)."""

    def __init__(self, uses_image: bool = True) -> None:
        self.uses_image = uses_image
        self.calls = 0

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        side = SIZE // GRID
        return pixels[:, :, :side, :side].mean((1, 2, 3))  # B: the brightness of cell 0

    def word_probs(self, feats: torch.Tensor, tokens: Sequence[Sequence[int]]) -> list[np.ndarray]:
        p = 0.05 + 0.9 * feats.clamp(0, 1) if self.uses_image else torch.full_like(feats, 0.5)
        return [np.full(len(t), float(p[b])) for b, t in enumerate(tokens)]


WORDS = ["a", "red", "circle", "of", "the", "square"]  # three content words


def _fake_data(n: int, looks_at: int = 0, mass: float = 0.7, sentinel: bool = False):
    """``n`` images with cell 0 bright (1.0) and noise elsewhere; attention one-hot on ``looks_at``.

    Rows sum to ``mass`` < 1, as with a visual sentinel; ``sentinel`` adds its entry as a last column.
    """
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, SIZE, SIZE, generator=gen)
    images[:, :, : SIZE // GRID, : SIZE // GRID] = 1.0
    alphas = np.zeros((len(WORDS), GRID * GRID + sentinel), dtype=np.float32)
    alphas[:, looks_at] = mass
    if sentinel:
        alphas[:, -1] = 1 - mass
    results = [CaptionResult(list(WORDS), list(range(4, 4 + len(WORDS))), 0.0, 0.0, alphas.copy()) for _ in range(n)]
    return images, results


def test_deletion_test_ranks_a_model_that_uses_the_attended_cell():
    images, results = _fake_data(10)
    faithful = deletion_test(CellZeroModel(), images, results, k=1, seed=0)
    assert (faithful["images"], faithful["words"], faithful["k"], faithful["cells"]) == (10, 30, 1, GRID * GRID)
    drop = faithful["drop"]
    assert drop["attended"] > 0.5  # blanking the evidence removes most of the probability
    assert drop["least"] == pytest.approx(0.0, abs=1e-9)  # the least attended cells never include cell 0
    assert drop["random"] < drop["attended"] / 4  # a random cell is cell 0 one time in 16
    assert faithful["ratio"]["attended_random"] is None or faithful["ratio"]["attended_random"] > 4

    blind = deletion_test(CellZeroModel(uses_image=False), images, results, k=1, seed=0)
    assert all(abs(v) < 1e-9 for v in blind["drop"].values())
    assert blind["ratio"]["attended_random"] is None or blind["ratio"]["attended_random"] <= 1
    assert blind["drop"]["attended"] < drop["attended"]

    # attention pointing away from the evidence: blanking where it looks does less than chance
    _, elsewhere = _fake_data(10, looks_at=5)
    misled = deletion_test(CellZeroModel(), images, elsewhere, k=1, seed=0)
    assert misled["drop"]["attended"] == pytest.approx(0.0, abs=1e-9)
    assert misled["drop"]["random"] >= misled["drop"]["attended"]
    assert misled["drop"]["least"] > 0.5  # ties among the unattended cells go to the lowest id: cell 0
    assert misled["ratio"]["attended_least"] == pytest.approx(0.0, abs=1e-9)


class CellZeroCaptioner(CellZeroModel):
    """The same evidence, and a caption: it says "circle" only while cell 0 is bright."""

    def caption(self, feats: torch.Tensor) -> list[list[str]]:
        return [["a", "circle"] if float(f) > 0.5 else ["a", "blank"] for f in feats]


def test_the_behavioural_form_counts_how_often_the_word_leaves_the_caption():
    images, results = _fake_data(10)
    out = deletion_test(CellZeroCaptioner(), images, results, k=1, seed=0)
    gone = out["removed"]
    assert gone["attended"] == 1.0  # every content word is gone once cell 0 is blanked (none survive)
    assert gone["least"] == pytest.approx(2 / 3)  # cell 0 stays lit: only "circle" is still said, of 3 words
    assert 2 / 3 <= gone["random"] < 1.0  # a random cell is cell 0 one time in 16
    assert out["removed_ratio"]["attended_random"] == pytest.approx(gone["attended"] / gone["random"])
    assert "removed" not in deletion_test(CellZeroModel(), images, results, k=1, seed=0)  # no captions: no such form


def test_deletion_test_is_reproducible_and_batch_independent():
    images, results = _fake_data(7, sentinel=True)  # a trailing sentinel column is not a cell
    runs = [deletion_test(CellZeroModel(), list(images), results, seed=3, batch_size=b) for b in (1, 4, 64)]
    assert runs[0] == runs[1] == runs[2]
    assert runs[0]["k"] == default_cells(GRID * GRID) == 2 and runs[0]["cells"] == GRID * GRID
    model = CellZeroModel()
    deletion_test(model, images, results, seed=3, batch_size=12)
    # 7 originals in one batch, then 7 images x 3 words x 3 variants = 63 re-encodings, 12 at a time
    assert model.calls == 1 + 6


def test_deletion_test_skips_unloadable_images_and_bad_k():
    images, results = _fake_data(3)
    out = deletion_test(CellZeroModel(), [images[0], None, images[2]], results, k=1)
    assert (out["images"], out["skipped_images"], out["words"]) == (2, 1, 6)
    with pytest.raises(ConfigError, match="between 1 and the 16"):
        deletion_test(CellZeroModel(), images, results, k=17)
    empty = deletion_test(CellZeroModel(), [], [], grid=GRID)
    assert empty["words"] == 0 and empty["drop"]["attended"] is None and empty["ratio"]["attended_random"] is None


# ---------------------------------------------------------------------------- the real tiny model
@pytest.fixture(scope="module")
def tiny_model():
    from captioner.model.caption_model import CaptionModel

    torch.manual_seed(0)
    vocab = tiny_vocab()
    return CaptionModel(tiny_config("soft", vocab_size=len(vocab)), vocab).eval()


def _pixels(model, n: int) -> torch.Tensor:
    size = model.encoder.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_word_probabilities_match_greedy_decoding(tiny_model):
    feats = tiny_model.encoder(_pixels(tiny_model, 3))
    results = decode(tiny_model.decoder, feats, tiny_model.vocab, DecodeOptions(beam=1, max_len=6, no_repeat_ngram=0))
    probs = word_probabilities(tiny_model, feats, [r.tokens for r in results])
    for res, p in zip(results, probs):
        assert len(p) == len(res.tokens) + 1  # every word, then <end>
        ended = len(res.tokens) < 6  # at the length limit <end> is forced, at no cost
        logp = np.log(p[: len(p) if ended else -1]).sum()
        assert float(logp) == pytest.approx(res.log_prob, abs=1e-4)
    # captions of different lengths in no particular order: each scored as if alone
    tokens = [results[0].tokens[:2], results[1].tokens, results[2].tokens[:4]]
    together = word_probabilities(tiny_model, feats, tokens)
    for i, t in enumerate(tokens):
        (alone,) = word_probabilities(tiny_model, feats[i : i + 1], [t])
        np.testing.assert_allclose(together[i], alone, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(together[i][: len(t)], probs[i][: len(t)], rtol=1e-5, atol=1e-6)


def test_deletion_test_on_a_real_model_does_not_depend_on_batching(tiny_model):
    pixels = _pixels(tiny_model, 3)
    results = decode(tiny_model.decoder, tiny_model.encoder(pixels), tiny_model.vocab, DecodeOptions(beam=1, max_len=5))
    runs = [deletion_test(tiny_model, pixels, results, k=1, seed=0, grid=2, batch_size=b) for b in (2, 16)]
    assert runs[0]["words"] == runs[1]["words"] > 0
    for v in ("attended", "random", "least"):
        assert runs[0]["drop"][v] == pytest.approx(runs[1]["drop"][v], abs=1e-5)
    assert 0 < runs[0]["p_original"] < 1
    assert isinstance(ModelScorer(tiny_model).encode(pixels), torch.Tensor)

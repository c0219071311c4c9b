"""The METEOR reward: the official jar's per-caption scores, added to CIDEr-D by weight, and its errors."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from captioner.metrics import meteor as meteor_module
from captioner.errors import ConfigError, DataError
from captioner.metrics.meteor import SentenceMeteor
from captioner.metrics.meteor_jvm import close_meteor
from captioner.model.sampling import sample_captions
from captioner.training.self_critical import CaptionReward
from captioner.training.loop import main as train_main
from conftest import WORDS, train_config
from test_scst import CANDIDATES, REFS, _model

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR is a Java program")


@needs_java
def test_sentence_meteor_matches_pycocoevalcap_per_caption():
    from pycocoevalcap.meteor.meteor import Meteor

    gts = {i: refs for i, refs in enumerate(REFS)}
    res = {i: [c] for i, c in enumerate(CANDIDATES)}
    official = Meteor()
    try:
        _, per_caption = official.compute_score(gts, res)
    finally:
        close_meteor(official)
    scorer = SentenceMeteor([[r.split() for r in refs] for refs in REFS])
    try:
        order = [2, 0, 3, 1]  # captions of any images, in any order, score against their own image's references
        ours = scorer.scores(order + [0], [CANDIDATES[i].split() for i in order] + [[]])
    finally:
        scorer.close()
    assert ours[:4].tolist() == pytest.approx([per_caption[i] for i in order], abs=1e-9)
    assert ours[4] == 0.0  # an empty caption matches nothing
    assert len(set(ours[:4].round(6))) == 4  # the example tells the candidates apart


@needs_java
def test_synonyms_and_stems_earn_meteor_where_cider_sees_nothing():
    scorer = SentenceMeteor([[["a", "dog", "runs", "on", "the", "grass"]]])
    try:
        stem, unrelated = scorer.scores([0, 0], [["a", "dog", "running"], ["two", "cars", "parked"]])
    finally:
        scorer.close()
    assert stem > unrelated


@needs_java
def test_an_interrupted_batch_ends_the_jvm_and_the_next_batch_starts_one():
    scorer = SentenceMeteor([[["a", "dog", "runs"]]])
    try:
        first = scorer.scores([0], [["a", "dog"]])
        jvm = scorer._meteor

        def interrupted(gts, res):  # Ctrl-C while the wrapper holds its lock, mid-exchange
            jvm.lock.acquire()
            raise KeyboardInterrupt

        jvm.compute_score = interrupted
        with pytest.raises(KeyboardInterrupt):
            scorer.scores([0], [["a", "dog"]])
        assert jvm.meteor_p.poll() is not None and not jvm.lock.locked()  # else Meteor.__del__ would hang
        assert scorer.scores([0], [["a", "dog"]]).tolist() == first.tolist()
    finally:
        scorer.close()


@needs_java
def test_reward_adds_weighted_meteor_to_cider():
    dec, vocab, feats = _model()
    s = sample_captions(dec, feats, vocab, per_image=2, max_len=6, generator=torch.Generator().manual_seed(3))
    refs = [[" ".join(WORDS[:6])], [" ".join(WORDS[3:9])], [" ".join(WORDS[::2])]]
    plain, mixed = CaptionReward(refs), CaptionReward(refs, meteor_weight=2.0)
    try:
        gap = mixed([0, 1, 2], s, vocab) - plain([0, 1, 2], s, vocab)
        scorer = SentenceMeteor([[r.split()] for (r,) in refs])
        meteor = scorer.scores([0, 0, 1, 1, 2, 2], s.words(vocab))
        scorer.close()
    finally:
        mixed.close()
    torch.testing.assert_close(gap, torch.from_numpy(2.0 * meteor))
    assert mixed.meteor is not None and mixed.meteor._meteor is None  # close() ended the JVM


def test_a_meteor_reward_without_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(meteor_module.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="needs Java"):
        CaptionReward([["a dog"]], meteor_weight=1.0)
    CaptionReward([["a dog"]])  # without the METEOR term nothing needs Java


def test_meteor_needs_references():
    with pytest.raises(DataError, match="reference"):
        SentenceMeteor([[["a", "dog"]], []])


def test_negative_meteor_weight_is_rejected(shapes, tmp_path):
    with pytest.raises(ConfigError, match="scst_meteor_weight"):
        train_main(train_config(shapes, tmp_path / "neg", objective="scst", scst_meteor_weight=-0.5))



@needs_java
def test_a_run_with_a_meteor_reward_adds_it_to_what_it_logs(shapes, tmp_path):
    """One batch, the same seed: the same samples, so the logged rewards differ by their mean METEOR."""
    rows = {}
    for weight in (0.0, 1.0):
        with pytest.warns(UserWarning, match="random weights"):
            result = train_main(train_config(shapes, tmp_path / f"m{weight}", objective="scst", scst_samples=2,
                                             epochs=1, limit_batches=1, scst_meteor_weight=weight))
        rows[weight] = result["history"][-1]
    assert math.isfinite(rows[1.0]["loss"])
    assert rows[1.0]["reward"] > rows[0.0]["reward"] >= 0

"""Caption metrics agree with pycocoevalcap; diversity and the pointing game count what they claim."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from captioner.metrics import corpus as metrics
from captioner.errors import CaptionerError, ConfigError, DataError
from captioner.data.instances import category_for_word, load_instances
from captioner.evaluation.pointing import PointingItem, cell_centre, items_from_caption_records, peak_point, pointing_game
from captioner.metrics.corpus import METRICS, ptb_tokenize, score_captions
from captioner.metrics.diversity import diversity

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java for PTB tokenizer / METEOR")

# Mixed case, punctuation, quotes and clitics, so tokenisation matters.
REFS = {
    "a.jpg": ["A brown dog runs on the grass.", "The dog's running outside!", "A dog is running, fast."],
    "b.jpg": ["Two men play chess.", "Men playing a board game", "two guys at a table (indoors)",
              "Two people sit at a table.", "A \"chess\" match between two men."],
    "c.jpg": ["A child's red ball.", "A red ball on the floor"],
    7: ["A woman rides a bike down the street.", "Someone cycling on a road; it's sunny.",
        "A cyclist doesn't stop.", "A woman on a bicycle"],
}
PREDS = {"a.jpg": "A dog is running on the grass.", "b.jpg": "Two men are playing a game.",
         "c.jpg": "a red ball", 7: "A woman riding a bike on the street"}


def _official_tokens(preds, refs):
    """pycocoevalcap's own PTBTokenizer, refs and predictions in one JVM run."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    both = {("ref", k): [{"caption": c} for c in v] for k, v in refs.items()}
    both.update({("res", k): [{"caption": p}] for k, p in preds.items()})
    tok = PTBTokenizer().tokenize(both)
    return {k: tok[("ref", k)] for k in refs}, {k: tok[("res", k)] for k in preds}


@pytest.fixture(scope="module")
def official_and_ours():
    """Official pycocoevalcap scores and score_captions' scores on the same example, sharing one METEOR JVM.

    METEOR's JVM takes seconds to load, so score_captions is handed the very instance the official
    score came from; it must score the same input and then shut that process down.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    meteor = Meteor()
    gts, res = _official_tokens(PREDS, REFS)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    official = {f"BLEU-{i + 1}": 100 * b for i, b in enumerate(bleu)}
    official["METEOR"] = 100 * meteor.compute_score(gts, res)[0]
    official["ROUGE-L"] = 100 * Rouge().compute_score(gts, res)[0]
    official["CIDEr"] = 100 * Cider().compute_score(gts, res)[0]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "start_meteor", lambda: meteor)
        ours = score_captions(PREDS, REFS)
    return official, ours, meteor, gts


@needs_java
@pytest.mark.parametrize("name", METRICS)
def test_scores_match_pycocoevalcap(official_and_ours, name):
    official, ours, _, _ = official_and_ours
    assert set(ours) == set(METRICS)
    assert ours[name] == pytest.approx(official[name], abs=1e-6)


@needs_java
def test_meteor_process_is_closed_after_scoring(official_and_ours):
    _, _, meteor, _ = official_and_ours
    assert meteor.meteor_p.poll() is not None


@needs_java
def test_dead_meteor_process_is_an_error_not_a_hang(monkeypatch):
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    meteor.meteor_p.kill()  # as if the JVM could not start (e.g. no memory for its 2 GB heap)
    monkeypatch.setattr(metrics, "start_meteor", lambda: meteor)
    with pytest.raises(CaptionerError, match="METEOR"):
        score_captions(PREDS, REFS, metrics=["METEOR"])
    assert not meteor.lock.locked()  # else Meteor.__del__ would block forever


@needs_java
def test_python_tokenizer_matches_ptb_on_example(official_and_ours):
    _, _, _, gts = official_and_ours
    for k, refs in REFS.items():
        assert [ptb_tokenize(c) for c in refs] == gts[k]


@pytest.mark.parametrize("text, expected", [  # outputs of pycocoevalcap's Java PTB tokenizer
    ("The dog's ball (red) -- isn't \"it\" great?", "the dog 's ball -lrb- red -rrb- is n't it great"),
    ("Two men, one t-shirt; 3.5 cats & dogs... yes!", "two men one t-shirt 3.5 cats & dogs yes"),
    ("I cannot go, gonna wanna", "i can not go gon na wan na"),
    ("Mr. Smith at 5 p.m. in the U.S.", "mr. smith at 5 p.m. in the u.s."),
    ("it\u2019s \u201cquoted\u201d don\u2019t", "it 's quoted do n't"),
    ("the boy 's ball . ", "the boy 's ball"),
])
def test_python_tokenizer_mimics_ptb(text, expected):
    assert ptb_tokenize(text) == expected


def test_fallback_without_java_skips_meteor_and_warns_once(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = score_captions(PREDS, REFS)
    assert set(scores) == set(METRICS) - {"METEOR"}
    assert len(caught) == 1 and "Java" in str(caught[0].message)
    with pytest.raises(CaptionerError, match="java"):
        score_captions(PREDS, REFS, java=True)


def test_fallback_scores_equal_pycocoevalcap_on_python_tokens():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    gts = {k: [ptb_tokenize(c) for c in v] for k, v in REFS.items()}
    res = {k: [ptb_tokenize(PREDS[k])] for k in REFS}
    with pytest.warns(UserWarning, match="java=False"):
        ours = score_captions(PREDS, REFS, java=False)
    assert ours["BLEU-2"] == pytest.approx(100 * Bleu(4).compute_score(gts, res, verbose=0)[0][1], abs=1e-9)
    assert ours["CIDEr"] == pytest.approx(100 * Cider().compute_score(gts, res)[0], abs=1e-9)


def test_bleu_only_path_skips_expensive_metrics(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("not asked for")

    monkeypatch.setattr(metrics, "start_meteor", boom)
    monkeypatch.setattr("pycocoevalcap.cider.cider.Cider.compute_score", boom)
    monkeypatch.setattr("pycocoevalcap.rouge.rouge.Rouge.compute_score", boom)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = score_captions(PREDS, REFS, metrics=["BLEU-4"], java=False)
        assert set(scores) == {"BLEU-4"}
        assert set(score_captions(PREDS, REFS, metrics=["bleu_1", "Bleu-3"], java=False)) == {"BLEU-1", "BLEU-3"}


def test_unknown_metric_is_a_config_error():
    with pytest.raises(ConfigError, match="SPICE"):
        score_captions(PREDS, REFS, metrics=["SPICE"], java=False)


def test_predictions_without_references_are_an_error():
    preds = dict(PREDS, **{"x.jpg": "a cat", "y.jpg": "a hat"})
    with pytest.raises(DataError, match=r"2 of 6 .*'x.jpg'"):
        score_captions(preds, REFS, java=False)


def test_empty_reference_lists_and_bare_strings_are_errors():
    with pytest.raises(DataError, match=r"1 images have an empty.*'c.jpg'"):
        score_captions(PREDS, dict(REFS, **{"c.jpg": []}), java=False)
    with pytest.raises(DataError, match="list of captions"):
        score_captions(PREDS, dict(REFS, **{"c.jpg": "a red ball"}), java=False)


def test_empty_predictions_are_an_empty_split():
    with pytest.raises(DataError, match="empty split"):
        score_captions({}, REFS, java=False)


def test_missing_predictions_warn_and_score_the_rest():
    partial = {k: PREDS[k] for k in ("a.jpg", 7)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = score_captions(partial, REFS, java=False)
        want = score_captions(partial, {k: REFS[k] for k in partial}, java=False)
    assert any("2 of 4 reference images have no prediction" in str(w.message) for w in caught)
    assert got == want


# ------------------------------------------------------------------------------------------ diversity
def test_diversity_counts():
    caps = ["A dog runs.", "a dog  runs", "A cat sleeps on a mat", "two birds"]
    train = ["a cat sleeps on a mat!", "something else"]
    got = diversity(caps, train)
    norm = ["a dog runs", "a dog runs", "a cat sleeps on a mat", "two birds"]
    assert got["distinct_pct"] == pytest.approx(100 * 3 / 4)
    assert got["copied_pct"] == pytest.approx(100 * 1 / 4)
    assert got["vocab_size"] == len({w for c in norm for w in c.split()})
    assert got["avg_length"] == pytest.approx(sum(len(c.split()) for c in norm) / 4)
    assert "copied_pct" not in diversity(caps)
    with pytest.raises(DataError, match="empty split"):
        diversity([])


# ------------------------------------------------------------------------------------- pointing game
W, H = 100, 80
CIRCLE, SQUARE, SQUARE2 = [10, 8, 30, 24], [60, 40, 30, 32], [70, 30, 20, 20]


def _write_instances(tmp_path, images=None, annotations=None, name="instances.json"):
    doc = {
        "images": images if images is not None else [{"id": 1, "file_name": "one.jpg", "width": W, "height": H}],
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}],
        "annotations": annotations if annotations is not None else [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": CIRCLE},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": SQUARE},
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": SQUARE2},
        ],
    }
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def _in(box, x, y):
    bx, by, bw, bh = box
    return bx <= x <= bx + bw and by <= y <= by + bh


def _oracle_map(box, grid=(8, 10)):
    """A map peaking at a cell whose centre lies in ``box`` (found here, independently of the library)."""
    gh, gw = grid
    cells = [(r, c) for r in range(gh) for c in range(gw) if _in(box, (c + .5) * W / gw, (r + .5) * H / gh)]
    assert cells
    att = np.full(grid, 0.5 / (gh * gw - 1))
    att[cells[0]] = 0.5
    return att


def test_oracle_attention_scores_every_named_object(tmp_path):
    index = load_instances(_write_instances(tmp_path))
    words = ["a", "circle", "and", "two", "squares", "no", "triangle"]  # triangle: not in this image
    att = np.stack([np.full((8, 10), 1 / 80)] * len(words))
    att[1], att[4] = _oracle_map(CIRCLE), _oracle_map(SQUARE2)
    att[6] = _oracle_map(CIRCLE)
    result = pointing_game([PointingItem("images/one.jpg", words, att)], index)
    assert result["overall"]["hits"] == 2 and result["overall"]["words"] == 2
    assert result["overall"]["hit_rate"] == 1.0
    assert set(result["per_category"]) == {"circle", "square"}
    assert result["unmatched_images"] == 0


def test_a_peak_one_cell_outside_the_box_is_a_strict_miss_and_a_tolerant_hit(tmp_path):
    # 224 px, 14x14 cells of 16 px; the circle spans x, y in [40, 74]; cell centres lie at 8 + 16k
    images = [{"id": 1, "file_name": "one.jpg", "width": 224, "height": 224}]
    index = load_instances(_write_instances(tmp_path, images, [{"id": 1, "image_id": 1, "category_id": 1,
                                                                 "bbox": [40, 40, 34, 34]}]))

    def peak_at(row: int, col: int) -> np.ndarray:
        att = np.full((14, 14), 0.1 / 195)
        att[row, col] = 0.9
        return att

    def scored(row: int, col: int) -> dict:
        return pointing_game([PointingItem(1, ["circle"], peak_at(row, col)[None])], index)["overall"]

    inside = scored(3, 3)  # centre (56, 56)
    assert (inside["hit_rate"], inside["hit_rate_tolerant"]) == (1.0, 1.0)
    beside = scored(3, 5)  # centre (88, 56): 14 px right of the box
    assert (beside["hit_rate"], beside["hit_rate_tolerant"]) == (0.0, 1.0)
    corner = scored(5, 5)  # centre (88, 88): 14 px right and 14 px below, 19.8 px from the corner
    assert (corner["hit_rate"], corner["hit_rate_tolerant"]) == (0.0, 0.0)
    far = scored(3, 6)  # centre (104, 56): 30 px away
    assert (far["hit_rate"], far["hit_rate_tolerant"]) == (0.0, 0.0)


def test_wrong_attention_misses_and_baselines_are_area_and_centre(tmp_path):
    index = load_instances(_write_instances(tmp_path))
    att = np.stack([_oracle_map(SQUARE), _oracle_map(CIRCLE)])  # each word looks at the other object
    result = pointing_game([PointingItem(1, ["circle", "square"], att)], index)
    assert result["overall"]["hit_rate"] == 0.0
    square = np.zeros((H, W), bool)  # union area by rasterising, overlap counted once
    for x, y, w, h in (SQUARE, SQUARE2):
        square[y:y + h, x:x + w] = True
    assert result["per_category"]["square"]["random_baseline"] == pytest.approx(square.mean())
    assert result["per_category"]["circle"]["random_baseline"] == pytest.approx(30 * 24 / (W * H))
    assert result["per_category"]["circle"]["center_baseline"] == float(_in(CIRCLE, W / 2, H / 2))
    assert result["per_category"]["square"]["center_baseline"] == 0.0


def test_random_attention_hits_at_the_box_area_rate(tmp_path):
    box = [0, 0, 40, 50]  # on cell edges of a 8×10 grid over 100×80, so area fraction = chance of a cell
    index = load_instances(_write_instances(tmp_path, annotations=[
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": box}]))
    rng = np.random.default_rng(0)
    n = 3000
    att = rng.dirichlet(np.ones(80), size=n).reshape(n, 8, 10)
    result = pointing_game([PointingItem("one.jpg", ["circle"] * n, att)], index)["overall"]
    p = 40 * 50 / (W * H)
    assert result["random_baseline"] == pytest.approx(p)
    assert abs(result["hit_rate"] - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_hard_attention_uses_the_chosen_cell(tmp_path):
    index = load_instances(_write_instances(tmp_path))
    att = np.stack([_oracle_map(SQUARE)] * 2)  # peaks miss the circle
    circle_cell = (int(np.argmax(_oracle_map(CIRCLE))) // 10, int(np.argmax(_oracle_map(CIRCLE))) % 10)
    item = PointingItem("one.jpg", ["circle", "circles"], att, locations=[circle_cell, (0, 9)])
    result = pointing_game([item], index)["overall"]
    assert (result["hits"], result["words"]) == (1, 2)
    with pytest.raises(DataError, match="outside"):
        pointing_game([PointingItem("one.jpg", ["circle"], att[:1], locations=[(8, 0)])], index)


def test_peak_point_is_the_peak_of_the_bilinear_upsampled_map():
    rng = np.random.default_rng(1)
    for _ in range(20):
        att = rng.random((7, 7)) * 0.5
        r, c = rng.integers(1, 6, size=2)  # interior, away from the flat clamped border
        att[r, c] = 1.0
        up = np.asarray(Image.fromarray(att.astype(np.float32)).resize((W, H), Image.BILINEAR))
        py, px = np.unravel_index(np.argmax(up), up.shape)
        x, y = peak_point(att, W, H)
        assert abs(px + 0.5 - x) <= 1 and abs(py + 0.5 - y) <= 1
    assert cell_centre((0, 0), (4, 5), W, H) == (10.0, 10.0)


@pytest.mark.parametrize("word, expected", [
    ("circle", "circle"), ("Circles,", "circle"), ("boxes", "box"), ("berries", "berry"),
    ("knives", "knife"), ("dog", "dog"), ("dogs", "dog"), ("light", "traffic light"),
    ("lights", "traffic light"), ("glove", None), ("man", None), ("", None),
])
def test_category_for_word(word, expected):
    cats = ["circle", "box", "berry", "knife", "dog", "hot dog", "traffic light",
            "baseball glove", "garden glove"]
    assert category_for_word(word, cats) == expected


def test_unmatched_images_are_counted_and_foreign_files_rejected(tmp_path):
    index = load_instances(_write_instances(tmp_path))
    att = np.stack([_oracle_map(CIRCLE)])
    items = [PointingItem("one.jpg", ["circle"], att), PointingItem("other.jpg", ["circle"], att)]
    with pytest.warns(UserWarning, match="1 of 2 images"):
        assert pointing_game(items, index)["unmatched_images"] == 1
    with pytest.raises(DataError, match="none of the 2 images.*another dataset"):
        pointing_game([PointingItem(f"x{i}.jpg", ["circle"], att) for i in range(2)], index)


def test_attention_must_have_one_map_per_word(tmp_path):
    index = load_instances(_write_instances(tmp_path))
    with pytest.raises(DataError, match="2 maps for 1 words"):
        pointing_game([PointingItem("one.jpg", ["circle"], np.ones((2, 3, 3)) / 9)], index)


def test_load_instances_rejects_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_instances(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_instances(bad)
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"images": [], "annotations": [{"image_id": 1, "caption": "a dog"}]}))
    with pytest.raises(DataError, match="not a COCO instances file"):
        load_instances(captions)
    for ann in ({"image_id": 1, "category_id": 1, "bbox": [1, 2, 3]},
                {"image_id": 1, "category_id": 9, "bbox": [1, 2, 3, 4]},
                {"image_id": 5, "category_id": 1, "bbox": [1, 2, 3, 4]}):
        with pytest.raises(DataError, match="1 annotations"):
            load_instances(_write_instances(tmp_path, annotations=[ann]))
    with pytest.raises(DataError, match="width"):
        load_instances(_write_instances(tmp_path, images=[{"id": 1, "file_name": "a.jpg"}]))


def test_items_from_caption_records_round_trip(tmp_path):
    index = load_instances(_write_instances(tmp_path))
    record = {"image": "photos/one.jpg", "caption": "a circle", "score": -1.0, "model": "m",
              "words": [{"word": "a", "attention": np.full((8, 10), 1 / 80).tolist()},
                        {"word": "circle", "attention": _oracle_map(CIRCLE).tolist()}]}
    (item,) = items_from_caption_records([record])
    assert item.words == ["a", "circle"] and item.attention.shape == (2, 8, 10) and item.locations is None
    assert pointing_game([item], index)["overall"]["hit_rate"] == 1.0
    with pytest.raises(DataError, match="'words'"):
        items_from_caption_records([{"image": "x.jpg"}])

"""Familiarity: the score, its place in a checkpoint, and what `caption` shows of it.

Everything runs on tiny random models and files made here (conftest), never on ../shared.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import captioner
from captioner.cli.main import main
from captioner.model.results import CaptionResult
from captioner.errors import CheckpointError
from captioner.evaluation.familiarity import (CENTROIDS_KEY, DEV_KEY, Familiarity, fit, kmeans, photo_vectors, pool,
                                   roc_auc, save_with_familiarity, unfamiliar_note)
from captioner.model.caption_model import load_model
from captioner.model.results import caption_entry
from captioner.model.checkpoint import read_checkpoint, save_checkpoint

from conftest import make_checkpoint, random_pngs

SCHEMA = json.loads((Path(captioner.__file__).parent / "schema" / "caption.schema.json").read_text())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fam(dev: list[float], threshold: float = 0.05) -> Familiarity:
    return Familiarity(torch.eye(3), np.sort(np.asarray(dev, dtype=np.float64)), threshold, "mean")


# ------------------------------------------------------------------------------------------ the score
def test_score_is_in_0_1_and_monotone_decreasing_in_the_distance():
    dev = np.random.default_rng(0).gamma(2.0, 0.2, 500)
    fam = _fam(dev.tolist())
    d = np.linspace(-1.0, dev.max() * 2, 5000)
    s = fam.score_distances(d)
    assert s.min() >= 0.0 and s.max() <= 1.0
    assert np.all(np.diff(s) <= 0), "a farther photo must never look more familiar"
    assert s[0] == 1.0 and s[-1] == 0.0
    # on the dev photos themselves it is about uniform: the share below t is about t
    on_dev = fam.score_distances(dev)
    for t in (0.05, 0.25, 0.5, 0.9):
        assert abs(float((on_dev < t).mean()) - t) < 0.02


def test_score_is_the_share_of_dev_photos_at_least_as_far():
    fam = _fam([0.1, 0.2, 0.2, 0.4])
    assert fam.score_distances([0.1])[0] == pytest.approx(1.0)
    assert fam.score_distances([0.2])[0] == pytest.approx(0.75)  # tied photos count together
    assert fam.score_distances([0.4])[0] == pytest.approx(0.25)
    assert fam.score_distances([0.3])[0] == pytest.approx(0.5)  # interpolated between 0.2 and 0.4
    assert fam.score_distances([0.41])[0] == 0.0


def test_distance_is_to_the_nearest_centroid():
    fam = Familiarity(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), np.array([0.0, 1.0]), 0.05, "mean")
    d = fam.distances(torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]]))
    assert d == pytest.approx([0.0, math.dist([0.6, 0.8], [0.0, 1.0]), math.sqrt(2.0)], abs=1e-6)


def test_pool_gives_unit_vectors_and_unshuffles_the_head():
    feats = torch.randn(2, 16, 10)  # 4x4 grid: 6 fine channels + 4 pixel-shuffled channels (16 head channels)
    mean = pool(feats, 0, "mean")
    assert mean.shape == (2, 10) and torch.allclose(mean.norm(dim=1), torch.ones(2))
    parts = pool(feats, 6, "parts")
    assert parts.shape == (2, 6 + 16) and torch.allclose(parts.norm(dim=1), torch.ones(2))
    head = torch.randn(2, 16, 2, 2)  # what the encoder shuffles onto the 4x4 grid
    shuffled = F.pixel_shuffle(head, 2).flatten(2).transpose(1, 2)  # B x 16 cells x 4 channels
    fused = torch.cat([torch.randn(2, 16, 6), shuffled], 2)
    want = F.normalize(head.mean((2, 3)), dim=1)  # the backbone's own global embedding
    assert torch.allclose(pool(fused, 6, "head"), want, atol=1e-6)
    assert torch.allclose(pool(fused, 6, "parts")[:, 6:] * math.sqrt(2.0), want, atol=1e-6)
    assert torch.allclose(pool(fused, 0, "head"), pool(fused, 0, "mean"))  # no fine part: the mean annotation


def test_kmeans_is_deterministic_and_leaves_no_cluster_empty():
    x = torch.cat([torch.randn(50, 4) + 5, torch.randn(50, 4) - 5, torch.zeros(3, 4)])
    a, b = kmeans(x, 8, seed=3), kmeans(x, 8, seed=3)
    assert torch.equal(a, b)
    assign = torch.cdist(x, a).argmin(1)
    assert set(assign.tolist()) == set(range(8))
    assert kmeans(x[:5], 8).shape == (5, 4)  # never more centroids than photos


def test_roc_auc():
    assert roc_auc([3, 4], [1, 2]) == 1.0
    assert roc_auc([1, 2], [3, 4]) == 0.0
    assert roc_auc([1, 1], [1, 1]) == 0.5
    assert roc_auc([2, 1], [1, 0]) == pytest.approx(0.875)


def test_the_note_appears_only_below_the_threshold():
    assert unfamiliar_note("cat.jpg", 0.01, 0.05) == ("captioner: note: cat.jpg looks unlike the training photos "
                                                      "(familiarity 0.01); the caption may be wrong")
    assert unfamiliar_note("x.jpg", 0.05, 0.05) is None
    assert unfamiliar_note("x.jpg", None, 0.05) is None


# ------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """A tiny checkpoint, the same with familiarity fitted on random photos, and those photos."""
    root = tmp_path_factory.mktemp("fam")
    src = make_checkpoint(root / "tiny.safetensors")
    photos = root / "photos"
    photos.mkdir()
    paths = random_pngs(photos, 8)
    model = load_model(str(src))
    vec, _, _ = photo_vectors(model, paths, progress=False)
    fam = fit(vec[:5], vec[5:], k=3, seed=0)
    dst = save_with_familiarity(src, root / "tiny-fam.safetensors", fam)
    return src, dst, paths


def test_familiarity_is_stored_in_and_loaded_from_the_checkpoint(fitted):
    src, dst, paths = fitted
    tensors, _, _, extra = read_checkpoint(dst)
    assert tensors[CENTROIDS_KEY].shape[0] == 3 and len(tensors[DEV_KEY]) == 3
    assert extra["familiarity"]["threshold"] == 0.05 and extra["familiarity"]["pooling"] == "head"
    model = load_model(str(dst))
    assert model.familiarity is not None
    assert torch.allclose(model.familiarity.centroids, tensors[CENTROIDS_KEY])
    plain = load_model(str(src))
    for a, b in zip(plain.decoder.state_dict().values(), model.decoder.state_dict().values()):
        assert torch.equal(a, b)  # the model itself is untouched
    res = model.caption(paths[0], beam=2)
    assert 0.0 <= res.familiarity <= 1.0
    assert res.caption == plain.caption(paths[0], beam=2).caption


def test_old_checkpoints_load_without_familiarity(fitted):
    src, _, paths = fitted
    model = load_model(str(src))
    assert model.familiarity is None
    res = model.caption(paths[0], beam=1)
    assert res.familiarity is None
    assert "familiarity" not in caption_entry("a.png", res, "m", model.cfg.grid)


def test_a_corrupt_familiarity_is_a_clear_error(fitted, tmp_path):
    _, dst, _ = fitted
    tensors, cfg, vocab, extra = read_checkpoint(dst)
    del tensors[DEV_KEY]
    save_checkpoint(tmp_path / "bad.safetensors", tensors, cfg, vocab, extra=extra)
    with pytest.raises(CheckpointError, match="familiarity"):
        load_model(str(tmp_path / "bad.safetensors"))
    tensors, cfg, vocab, extra = read_checkpoint(dst)
    save_checkpoint(tmp_path / "bad2.safetensors", tensors, cfg, vocab,
                    extra={**extra, "familiarity": {**extra["familiarity"], "threshold": "high"}})
    with pytest.raises(CheckpointError, match="threshold"):
        load_model(str(tmp_path / "bad2.safetensors"))


def test_a_fp16_checkpoint_keeps_its_dtypes(tmp_path):
    from safetensors import safe_open

    src = make_checkpoint(tmp_path / "t.safetensors")
    tensors, cfg, vocab, extra = read_checkpoint(src)
    save_checkpoint(tmp_path / "half.safetensors", tensors, cfg, vocab, extra=extra, half=True)
    fam = Familiarity(torch.randn(2, 4), np.array([0.1, 0.2]), 0.05, "parts")
    save_with_familiarity(tmp_path / "half.safetensors", tmp_path / "out.safetensors", fam)
    with safe_open(str(tmp_path / "out.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes.pop(CENTROIDS_KEY) == "F32" and dtypes.pop(DEV_KEY) == "F32"
    assert {d for d in dtypes.values()} <= {"F16", "I64"}


# ------------------------------------------------------------------------------------------ the CLI
def _caption(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["caption", "--no-progress", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def test_json_output_has_the_field_and_matches_the_schema(fitted, capsys):
    _, dst, paths = fitted
    rc, out, _ = _caption(capsys, "--model", str(dst), "--json", "--beam", "1", *paths[:2])
    assert rc == 0
    entries = json.loads(out)
    jsonschema.validate(entries, SCHEMA)
    assert all(0.0 <= e["familiarity"] <= 1.0 for e in entries)


def test_stderr_note_below_the_threshold_only(fitted, tmp_path, capsys):
    src, dst, paths = fitted
    strict = tmp_path / "strict.safetensors"
    model = load_model(str(dst))
    fam = model.familiarity
    far = np.full(1, fam.dev_distances.max() + 1.0)
    assert fam.score_distances(far)[0] == 0.0
    fam.threshold = 1.0  # every photo farther than the closest dev photo is "unfamiliar"
    save_with_familiarity(dst, strict, fam)
    noise = tmp_path / "noise.png"
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 255, dtype=np.uint8)).save(noise)  # a white square: no dev photo is as far
    rc, out, err = _caption(capsys, "--model", str(strict), "--beam", "1", str(noise))
    assert rc == 0 and out.startswith(f"{noise}\t")
    notes = [line for line in err.splitlines() if line.startswith("captioner: note: ")]
    assert notes == [f"captioner: note: {noise} looks unlike the training photos (familiarity 0.00); "
                     "the caption may be wrong"], err
    lenient = tmp_path / "lenient.safetensors"
    fam.threshold = 0.0
    save_with_familiarity(dst, lenient, fam)
    rc, _, err = _caption(capsys, "--model", str(lenient), "--beam", "1", str(noise))
    assert rc == 0 and "note" not in err
    rc, _, err = _caption(capsys, "--model", str(src), "--beam", "1", str(noise))  # no familiarity: no note
    assert rc == 0 and err == ""


def test_html_report_shows_familiarity(fitted, tmp_path):
    from captioner.heatmaps import render_html_report

    _, dst, paths = fitted
    model = load_model(str(dst))
    res = model.caption(paths[0], beam=1)
    entry = caption_entry(paths[0], res, model.name, model.cfg.grid)
    low = {**entry, "familiarity": 0.01}
    page = render_html_report([entry, low], tmp_path / "r.html").read_text()
    assert f"familiarity {entry['familiarity']:.2f}" in page
    assert "familiarity 0.01 (unlike the training photos" in page


def test_fit_and_auc_commands(shapes, tmp_path, capsys):
    src = make_checkpoint(tmp_path / "m.safetensors")
    before = _sha(src)
    out = tmp_path / "m-fam.safetensors"
    rc = main(["familiarity", "fit", str(src), "--format", "coco", "--data", str(shapes / "captions_train.json"),
               "--val-data", str(shapes / "captions_val.json"), "--out", str(out), "--centroids", "4",
               "--no-progress", "--threads", "1"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert "4 centroids" in text and _sha(src) == before
    assert load_model(str(out)).familiarity.centroids.shape[0] == 4
    ood = tmp_path / "ood"
    ood.mkdir()
    random_pngs(ood, 3)
    rc = main(["familiarity", "auc", "--model", str(out), "--format", "coco", "--data",
               str(shapes / "captions_val.json"), "--ood", str(ood), "--no-progress", "--json"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads(text)
    assert report["ood"] == 3 and 0.0 <= report["auc"] <= 1.0 and report["groups"][0]["photos"] == 3


def test_fit_never_overwrites_its_input_unless_asked(shapes, tmp_path, capsys):
    src = make_checkpoint(tmp_path / "m.safetensors")
    before = _sha(src)
    argv = ["familiarity", "fit", str(src), "--format", "coco", "--data", str(shapes / "captions_train.json"),
            "--val-data", str(shapes / "captions_val.json"), "--out", str(src), "--centroids", "2", "--no-progress"]
    assert main(argv) == 2
    assert "is the input checkpoint" in capsys.readouterr().err
    assert _sha(src) == before
    assert main([*argv, "--overwrite"]) == 0
    assert load_model(str(src)).familiarity is not None


def test_auc_needs_a_fitted_model(shapes, tmp_path, capsys):
    src = make_checkpoint(tmp_path / "m.safetensors")
    rc = main(["familiarity", "auc", "--model", str(src), "--format", "coco", "--data",
               str(shapes / "captions_val.json"), "--ood", str(shapes / "images"), "--no-progress"])
    assert rc == 2
    assert "no familiarity data" in capsys.readouterr().err


def test_caption_result_default_has_no_familiarity():
    res = CaptionResult(words=["a"], tokens=[4], score=-1.0, log_prob=-1.0, alphas=np.ones((1, 4)) / 4)
    assert res.familiarity is None


# ------------------------------------------------------------------------------------------ the web page
def test_server_entries_carry_familiarity(fitted):
    pytest.importorskip("starlette")
    pytest.importorskip("python_multipart")
    from starlette.testclient import TestClient

    from captioner.web.server import CaptionService, create_app, load_models

    _, dst, paths = fitted
    models = load_models(str(dst))
    with TestClient(create_app(CaptionService(models, demo_dir=None))) as client:
        info = client.get("/api/models").json()["models"]
        assert info[0]["familiarity_threshold"] == 0.05
        r = client.post("/api/caption", files={"image": ("p.png", Path(paths[0]).read_bytes(), "image/png")},
                        data={"beam": "1", "overlays": "1"})
        assert r.status_code == 200, r.text
        entry = r.json()
        assert 0.0 <= entry["familiarity"] <= 1.0
        jsonschema.validate([entry], SCHEMA)


def test_page_writes_familiarity_as_the_report_does():
    """The page's famLine() (run by Node) says what familiarity_text() says, warning below the threshold."""
    import re
    import shutil
    import subprocess

    from captioner.model.familiarity import familiarity_text
    from captioner.web.page import _JS

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    helper = "".join(re.search(rf"^function {name}\(.*?^}}\n", _JS, flags=re.M | re.S).group(0)
                     for name in ("modelInfo", "famLine"))
    xs = [0.0, 0.004, 0.0449, 0.05, 0.051, 0.5, 0.999, 1.0]
    script = ("function el(tag, props) { return props; }\n"
              "const cfg = {models: [{name: 'm', familiarity_threshold: 0.05}, {name: 'old'}]};\n" + helper +
              f"const xs = {json.dumps(xs)};\n"
              "console.log(JSON.stringify([xs.map((x) => famLine({model: 'm', familiarity: x}).textContent),"
              " famLine({model: 'old'}), famLine({model: 'old', familiarity: 0.01}).className]));")
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60, check=True).stdout
    texts, absent, no_threshold = json.loads(out)
    assert texts == [familiarity_text(x) for x in xs]
    assert absent is None and no_threshold == "familiarity"  # no field, no line; no threshold, no warning


def test_fit_checks_its_options_before_encoding(tmp_path, capsys):
    src = make_checkpoint(tmp_path / "m.safetensors")
    for flag, value, message in (("--threshold", "2", "--threshold must be from 0 to 1"),
                                 ("--centroids", "0", "--centroids must be at least 1")):
        rc = main(["familiarity", "fit", str(src), "--format", "coco", "--data", str(tmp_path / "none.json"),
                   "--out", str(tmp_path / "o.safetensors"), flag, value])
        assert rc == 2 and message in capsys.readouterr().err

"""The feature cache: computed once, reused, invalidated by any change to what the encoder computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from captioner.encoder import Encoder
from captioner.features import cache_features


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    paths = []
    for i in range(3):
        p = folder / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return paths + [str(folder / "broken.jpg")]


def test_cache_is_reused_and_matches_the_encoder(images, tmp_path):
    enc = Encoder("efficientnet-lite0", 2)
    with pytest.warns(UserWarning, match="1 of 4 images could not be read"):
        store = cache_features(enc, images, tmp_path, fp16=False, progress=False)
    assert store.shape == (4, 4, 1280)
    assert store.valid.tolist() == [True, True, True, False]
    from captioner.images import load_image
    from captioner.encoder import build_preprocess

    direct = enc(build_preprocess(enc.spec, 2)(load_image(images[1])).unsqueeze(0))[0]
    torch.testing.assert_close(store.get([1])[0], direct, rtol=1e-4, atol=1e-4)

    def boom(*a, **k):
        raise AssertionError("the encoder ran again although the cache is valid")

    enc.forward = boom
    again = cache_features(enc, images, tmp_path, fp16=False, progress=False)
    assert np.array_equal(np.asarray(again.array), np.asarray(store.array))


def test_fp16_cache_is_half_the_size_and_close(images, tmp_path):
    enc = Encoder("efficientnet-lite0", 2)
    with pytest.warns(UserWarning):
        full = cache_features(enc, images[:3] + images[3:], tmp_path, fp16=False, progress=False)
        half = cache_features(enc, images, tmp_path, fp16=True, progress=False)
    assert half.array.dtype == np.float16 and full.array.dtype == np.float32
    torch.testing.assert_close(half.get([0, 1]), full.get([0, 1]), rtol=2e-3, atol=2e-3)


def test_a_changed_grid_or_weights_invalidates_the_cache():
    a = Encoder("efficientnet-lite0", 2)
    assert Encoder("efficientnet-lite0", 3).cache_key() != a.cache_key()
    assert Encoder("efficientnet-lite0", 2).cache_key() == a.cache_key()
    torch.manual_seed(0)
    r1 = Encoder("efficientnet-lite0", 2, pretrained=False)
    torch.manual_seed(1)
    r2 = Encoder("efficientnet-lite0", 2, pretrained=False)
    assert len({a.cache_key(), r1.cache_key(), r2.cache_key()}) == 3


def test_missing_torchvision_weights_is_a_clear_error(tmp_path, monkeypatch):
    from captioner.errors import CheckpointError

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(CheckpointError, match=r"no weights for encoder resnet50: looked in .*resnet50"):
        Encoder("resnet50", 7)
    with pytest.raises(CheckpointError, match="looked in"):
        Encoder("vgg16", 14, weights=str(tmp_path / "nope.pth"))


def test_torchvision_weights_load_from_a_named_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    path = tmp_path / "r50.pth"
    torch.save(net.state_dict(), path)
    enc = Encoder("resnet50", 2, weights=str(path))
    torch.testing.assert_close(enc.trunk.body[0].weight, net.conv1.weight)
    assert enc(torch.randn(1, 3, 64, 64)).shape == (1, 4, 2048)

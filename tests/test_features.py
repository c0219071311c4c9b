"""The feature cache: computed once, reused, invalidated by any change to what the encoder computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from captioner.model.encoder import Encoder
from captioner.data.feature_cache import cache_features
from conftest import random_pngs


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    paths = random_pngs(folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return paths + [str(folder / "broken.jpg")]


def test_cache_is_reused_and_matches_the_encoder(images, tmp_path):
    enc = Encoder("efficientnet-lite0", 2)
    with pytest.warns(UserWarning, match="1 of 4 images could not be read"):
        store = cache_features(enc, images, tmp_path, progress=False)
    assert store.shape == (4, 4, 1280) and store.array.dtype == np.float16  # half the disk of fp32
    assert store.valid.tolist() == [True, True, True, False]
    from captioner.data.images import load_image
    from captioner.model.encoder import build_preprocess

    direct = enc(build_preprocess(enc.spec, 2)(load_image(images[1])).unsqueeze(0))[0]
    torch.testing.assert_close(store.get([1])[0], direct, rtol=2e-3, atol=2e-3)

    def boom(*a, **k):
        raise AssertionError("the encoder ran again although the cache is valid")

    enc.forward = enc.frozen_part = boom
    again = cache_features(enc, images, tmp_path, progress=False)
    assert np.array_equal(np.asarray(again.array), np.asarray(store.array))




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


@pytest.mark.parametrize("name,blocks", [("efficientnet-lite0", 0), ("efficientnet-lite0", 1),
                                         ("efficientnet-lite0", 4), ("resnet50", 1), ("vgg16", 3)])
def test_frozen_then_trained_part_is_the_whole_encoder(name, blocks):
    torch.manual_seed(0)
    enc = Encoder(name, 2, pretrained=name.startswith("efficientnet"), fine_tune_blocks=blocks).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        whole = enc._grid(enc.trunk(x.contiguous(memory_format=torch.channels_last)))
        split = enc.trained_part(enc.frozen_part(x))
    torch.testing.assert_close(split, whole)
    frozen = enc.frozen_part(x)
    assert frozen.dim() == (3 if blocks == 0 else 4)  # annotations, or activations for the trained blocks
    if blocks:  # the trained part carries the gradient to every unfrozen parameter
        grads = torch.autograd.grad(enc.trained_part(frozen).sum(), [p for p in enc.parameters() if p.requires_grad])
        assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_fine_tuning_caches_the_activations_before_the_trained_blocks(images, tmp_path):
    frozen, tuned = Encoder("efficientnet-lite0", 2), Encoder("efficientnet-lite0", 2, fine_tune_blocks=1)
    assert frozen.cache_key() != tuned.cache_key()
    with pytest.warns(UserWarning):
        store = cache_features(tuned, images, tmp_path, progress=False)
    assert store.shape == (4, 320, 2, 2)  # the input of EfficientNet-Lite0's head, at 64 px
    from captioner.data.images import load_image
    from captioner.model.encoder import build_preprocess

    pixels = build_preprocess(tuned.spec, 2)(load_image(images[0])).unsqueeze(0)
    torch.testing.assert_close(tuned.trained_part(store.get([0])), tuned(pixels), rtol=2e-2, atol=2e-2)  # fp16 cache
    with pytest.raises(Exception, match="has only 17 blocks"):
        Encoder("efficientnet-lite0", 2, fine_tune_blocks=18)


def test_batch_norm_statistics_never_move_even_while_fine_tuning():
    enc = Encoder("efficientnet-lite0", 2, fine_tune_blocks=2)  # a fresh module: nn.Module starts in train mode
    before = {k: v.clone() for k, v in enc.state_dict().items() if "running" in k}
    enc(torch.randn(4, 3, 64, 64)).sum().backward()
    enc.train()
    enc(torch.randn(4, 3, 64, 64)).sum().backward()
    after = enc.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())

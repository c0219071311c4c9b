"""Where models are found by name: the shipped models, the folders searched, and `captioner models`.

``--model NAME`` loads the first ``NAME.safetensors`` on the search path: ``CAPTIONER_MODELS``, the user
cache, the copy a wheel installs inside the package, then a checkout's ``weights/`` folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointError, ConfigError

#: the checkout's weights/ folder (editable installs and running from the repository)
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
#: the copy of weights/*.safetensors that a built wheel carries (setup.py puts it there)
PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "shipped_weights"
#: os.pathsep-separated folders searched for NAME.safetensors before every other place
MODELS_ENV = "CAPTIONER_MODELS"
#: shipped model names -> file names in weights/ ("default" is the best Flickr8k model)
MODELS = {
    "flickr8k-soft": "flickr8k-soft.safetensors",
    "flickr8k-hard": "flickr8k-hard.safetensors",
    "synth-soft": "synth-soft.safetensors",
    "synth-hard": "synth-hard.safetensors",
}
ALIASES = {"default": "flickr8k-soft"}


def user_models_dir() -> Path:
    """The per-user model folder, ``$XDG_CACHE_HOME/captioner/models`` (``~/.cache`` when unset, per XDG)."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    return base / "captioner" / "models"


def _env_model_dirs() -> list[Path]:
    """The folders named by CAPTIONER_MODELS; one that is not a folder is an error, never silently skipped."""
    dirs = [Path(d).expanduser() for d in os.environ.get(MODELS_ENV, "").split(os.pathsep) if d]
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(f"{MODELS_ENV} names {d}, which is not an existing folder; "
                              f"fix or unset {MODELS_ENV}")
    return dirs


def search_path() -> list[Path]:
    """Folders searched for models, first match wins: CAPTIONER_MODELS, user cache, installed package, checkout.

    The checkout's weights/ counts only beside a pyproject.toml: installed, its place is site-packages/weights,
    which is some other package's folder if anything.
    """
    checkout = [WEIGHTS_DIR] if (WEIGHTS_DIR.parent / "pyproject.toml").is_file() else []
    return list(dict.fromkeys([*_env_model_dirs(), user_models_dir(), PACKAGE_WEIGHTS_DIR, *checkout]))


def _places() -> str:
    """The search path as one line, for errors that must say everywhere we looked."""
    unset = [] if os.environ.get(MODELS_ENV) else [f"${MODELS_ENV} (unset)"]
    return ", ".join(unset + [str(d) for d in search_path()])


def find_models() -> dict[str, Path]:
    """Every model on the search path: NAME.safetensors -> NAME, shipped names first, earlier folders win."""
    found: dict[str, Path] = {}
    for folder in search_path():
        for f in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            if f.is_file() and f.stem not in ALIASES:
                found.setdefault(f.stem, f)
    order = [n for n in MODELS if n in found] + sorted(n for n in found if n not in MODELS)
    return {n: found[n] for n in order}


def named_models() -> list[tuple[str, Path]]:
    """(name, file) for every usable name: the aliases of found models first, then the models."""
    models = find_models()
    return [(a, models[n]) for a, n in ALIASES.items() if n in models] + list(models.items())


def available_models() -> list[str]:
    """Names accepted by ``load_model`` whose files are on the search path (aliases first)."""
    return [name for name, _ in named_models()]


def models_table() -> str:
    """`captioner models`: each name with its file's size and location, so one sees which copy is used."""
    rows = named_models()
    if not rows:
        raise _no_models_error()
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {path.stat().st_size / 1e6:6.1f} MB  {path}" for name, path in rows)


def _no_models_error() -> CheckpointError:
    """The error for an install with no model anywhere: it names every folder searched."""
    return CheckpointError(f"no models found; looked in {_places()}; reinstall captioner, put NAME.safetensors "
                           f"in one of those folders or point {MODELS_ENV} at a folder holding them")


def resolve_model_path(name_or_path: str) -> Path:
    """A model name on the search path, an alias, or a path to a checkpoint file or training run folder."""
    name = ALIASES.get(name_or_path, name_or_path)
    models = find_models()
    if name in models:
        return models[name]
    if name in MODELS:
        if not models:
            raise _no_models_error()
        raise CheckpointError(f"model {name_or_path!r} is not installed: {MODELS[name]} is in none of {_places()}; "
                              "reinstall captioner or train it with `captioner train`")
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir() and (path / "best.safetensors").is_file():
        return path / "best.safetensors"  # a training run folder
    choices = ", ".join(available_models()) or "none installed"
    raise CheckpointError(f"unknown model {name_or_path!r}: not an installed model ({choices}) nor a checkpoint file")

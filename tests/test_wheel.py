"""Install anywhere: the wheel carries the shipped models, and models are found on a documented search path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from captioner.model import registry as weights
from captioner.cli.main import main
from captioner.errors import ConfigError
from captioner.model.caption_model import load_model
from captioner.model.registry import MODELS, available_models, resolve_model_path, search_path

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the search path, on tiny models made here


@pytest.fixture
def places(tmp_path, monkeypatch) -> list[Path]:
    """Every folder of the search path in tmp_path, in order: two CAPTIONER_MODELS folders, cache, package, checkout."""
    env1, env2, cache = tmp_path / "env1", tmp_path / "env2", tmp_path / "xdg" / "captioner" / "models"
    pkg, repo = tmp_path / "pkg", tmp_path / "repo"
    for d in (env1, env2, cache, pkg, repo / "weights"):
        d.mkdir(parents=True)
    (repo / "pyproject.toml").write_text("")
    monkeypatch.setenv("CAPTIONER_MODELS", os.pathsep.join([str(env1), str(env2)]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(weights, "PACKAGE_WEIGHTS_DIR", pkg)
    monkeypatch.setattr(weights, "WEIGHTS_DIR", repo / "weights")
    return [env1, env2, cache, pkg, repo / "weights"]


@pytest.fixture
def image(tmp_path) -> Path:
    p = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (30, 200, 30)).save(p)
    return p


def _error_line(argv: list[str], capsys) -> str:
    """Run the CLI, expect exit 2 with exactly one `captioner: error:` line, and return it."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("captioner: error: "), err
    return err


def test_search_path_order(places):
    assert search_path() == places


def test_user_cache_defaults_to_home_cache(places, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for value in ("", "relative/cache"):  # XDG: unset or relative means ~/.cache
        monkeypatch.setenv("XDG_CACHE_HOME", value)
        assert search_path()[2] == tmp_path / "home" / ".cache" / "captioner" / "models"


def test_checkout_weights_only_beside_a_pyproject(places):
    (places[-1].parent / "pyproject.toml").unlink()  # installed: ../weights is site-packages/weights
    assert search_path() == places[:-1]


def test_the_first_folder_holding_a_model_wins(places, tiny_checkpoint):
    copies = [shutil.copy(tiny_checkpoint, d / "flickr8k-soft.safetensors") for d in places]
    for copy in copies:
        assert resolve_model_path("default") == resolve_model_path("flickr8k-soft") == Path(copy)
        Path(copy).unlink()


def test_any_model_on_the_path_is_listed_and_loads_by_name(places, tiny_checkpoint, capsys):
    shutil.copy(tiny_checkpoint, places[-1] / "flickr8k-soft.safetensors")
    shutil.copy(tiny_checkpoint, places[1] / "mine.safetensors")
    assert available_models() == ["default", "flickr8k-soft", "mine"]
    assert load_model("mine").name == "tiny-soft"
    assert main(["models"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    size = f"{tiny_checkpoint.stat().st_size / 1e6:.1f}"
    assert rows == [["default", size, "MB", str(places[-1] / "flickr8k-soft.safetensors")],
                    ["flickr8k-soft", size, "MB", str(places[-1] / "flickr8k-soft.safetensors")],
                    ["mine", size, "MB", str(places[1] / "mine.safetensors")]]


def test_paths_and_run_folders_still_resolve(places, tiny_checkpoint, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_checkpoint, run / "best.safetensors")
    assert resolve_model_path(str(tiny_checkpoint)) == tiny_checkpoint
    assert resolve_model_path(str(run)) == run / "best.safetensors"


# ---------------------------------------------------------------- bad input: one clear line


@pytest.mark.parametrize("argv", [["models"], ["caption", "IMAGE"]])
def test_no_models_anywhere_names_every_place(places, image, capsys, argv):
    line = _error_line([str(image) if a == "IMAGE" else a for a in argv], capsys)
    assert "no models found" in line
    for place in places:
        assert str(place) in line


def test_no_models_with_captioner_models_unset_says_so(places, image, capsys, monkeypatch):
    monkeypatch.delenv("CAPTIONER_MODELS")
    line = _error_line(["caption", str(image)], capsys)
    assert "$CAPTIONER_MODELS (unset)" in line and all(str(p) in line for p in places[2:])


def test_a_missing_captioner_models_folder_is_an_error(places, image, tmp_path, monkeypatch, capsys):
    (tmp_path / "a-file").write_text("")
    for bad in (tmp_path / "gone", tmp_path / "a-file"):
        monkeypatch.setenv("CAPTIONER_MODELS", os.pathsep.join([str(places[0]), str(bad)]))
        with pytest.raises(ConfigError, match="CAPTIONER_MODELS"):
            available_models()
        line = _error_line(["caption", str(image)], capsys)
        assert f"CAPTIONER_MODELS names {bad}, which is not an existing folder" in line


# ---------------------------------------------------------------- the built wheel, installed outside the checkout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel built from this checkout (dependencies seen through a .pth file).

    The .pth lists the main venv's site-packages as a plain folder, so that folder's own .pth files (the
    checkout's editable install among them) are not run: `captioner` can only come from the wheel.
    """
    tmp = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"), str(ROOT)], cwd=ROOT)
    wheel = next((tmp / "dist").glob("captioner-*.whl"))
    assert {f"captioner/shipped_weights/{f}" for f in MODELS.values()} <= set(zipfile.ZipFile(wheel).namelist())
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).strip()
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site) / "main-venv-deps.pth").write_text("".join(f"{d}\n" for d in deps))
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          str(wheel)], cwd=tmp)
    return venv


def _run(argv: list[str], cwd: Path) -> str:
    """Run a command with no model search settings inherited from this shell; its stdout, or fail showing stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("CAPTIONER_MODELS", "PYTHONPATH")}
    env.update(XDG_CACHE_HOME=str(cwd / "no-cache"), OMP_NUM_THREADS="1")
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{argv[:4]} failed:\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_the_wheel_is_what_gets_imported(installed):
    where = _run([str(installed / "bin" / "python"), "-c", "import captioner; print(captioner.__file__)"],
                 cwd=installed.parent)
    assert Path(where.strip()).is_relative_to(installed)


def test_the_wheel_lists_every_shipped_model_inside_itself(installed):
    rows = [line.split() for line in _run([str(installed / "bin" / "captioner"), "models"], cwd=installed.parent)
            .splitlines()]
    assert [r[0] for r in rows] == ["default", *MODELS]
    assert all(Path(r[-1]).is_relative_to(installed) and Path(r[-1]).is_file() for r in rows)


def test_the_wheel_captions_with_the_default_model(installed, tmp_path):
    photo = ROOT / "demo" / "astronaut.jpg"
    out = _run([str(installed / "bin" / "captioner"), "caption", str(photo)], cwd=tmp_path)
    path, caption = out.rstrip("\n").split("\t")
    assert path == str(photo) and len(caption.split()) >= 3

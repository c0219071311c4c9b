"""Build hook: the wheel carries the repository's ``weights/*.safetensors`` as package data.

Everything else is in pyproject.toml. The weights stay in the top-level ``weights/`` folder (the checkout
and editable installs read them there); a built wheel gets a copy in ``captioner/shipped_weights/`` so an
install anywhere, without the checkout, still has every shipped model.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

WEIGHTS = Path("weights")  # relative to the project root, where the build backend runs
PACKAGE_WEIGHTS = Path("captioner") / "shipped_weights"  # must match captioner.model.registry.PACKAGE_WEIGHTS_DIR


class BuildPyWithWeights(build_py):
    """build_py that also copies the shipped checkpoints into the built package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's weights/ directly
            return
        files = sorted(WEIGHTS.glob("*.safetensors"))
        if not files:
            raise SystemExit(f"setup.py: no {WEIGHTS}/*.safetensors to ship; build from a full checkout or sdist")
        dest = Path(self.build_lib) / PACKAGE_WEIGHTS
        self.mkpath(str(dest))
        for f in files:
            self.copy_file(str(f), str(dest / f.name))


setup(cmdclass={"build_py": BuildPyWithWeights})

"""Installs axial_tf: `pip install -e .` (add `[torch]` to read PyTorch checkpoints)."""

import pathlib

import setuptools

_ROOT = pathlib.Path(__file__).parent


_TEST_ONLY = ("pytest", "execnet", "imgviz", "cmap", "pycocotools", "tensorflow-serving-api")


def _requirements():
    """The runtime pins of requirements.txt (test-only packages are extras)."""
    lines = (_ROOT / "requirements.txt").read_text().splitlines()
    pins = [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    return [pin for pin in pins if not pin.startswith(_TEST_ONLY)]


setuptools.setup(
      name="axial_tf",
      version="0.1.0",
      description="Axial-DeepLab and Axial-ResNet for TensorFlow 2 / Keras 3.",
      long_description=(_ROOT / "README.md").read_text(),
      long_description_content_type="text/markdown",
      packages=setuptools.find_packages(include=["axial_tf", "axial_tf.*"]),
      python_requires=">=3.11",
      install_requires=_requirements(),
      extras_require={
          "torch": ["torch>=2.4"],
          "coco": ["pycocotools==2.0.11"],
          "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "execnet==2.1.2"],
      },
      license="Apache-2.0",
)

"""Installs axial_tf as a library: `pip install ".[tensorflow]"` for everything, `pip install .` for the
Keras layers, models and losses alone (any Keras backend); other extras: `[onnx]`, `[openvino]`,
`[litert]` (exports and their runtimes), `[torch]`, `[coco]`, `[serving]`, `[test]`.

The package metadata declares the ranges axial_tf supports, so it resolves next to other packages;
requirements.txt holds the exact versions CI tests (`./run` installs those, then this package).
The wheel holds the `axial_tf` package and the experiment configs (as `axial_tf.configs`); tests,
their reference fixtures and the benchmarks stay in the repository.
"""

import pathlib

import setuptools

_ROOT = pathlib.Path(__file__).parent
_TOOLS = ("convert_checkpoint", "demo", "evaluate", "export", "model_summary", "predict", "train")

setuptools.setup(
    name="axial_tf",
    version="0.1.0",
    description="Axial-DeepLab and Axial-ResNet for TensorFlow 2 / Keras 3.",
    long_description=(_ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["axial_tf", "axial_tf.*"]) + ["axial_tf.configs"],
    # configs/ is a top-level folder of the repository; installed, it is the data package axial_tf.configs.
    package_dir={"axial_tf.configs": "configs"},
    package_data={"axial_tf.configs": ["*/*.yaml", "*/*.gin", "*/*.textproto"]},
    python_requires=">=3.11",
    # The layers, models and losses need Keras only and run on its TensorFlow, JAX and PyTorch
    # backends; the data pipelines, training, export and tools need TensorFlow: `[tensorflow]`.
    install_requires=[
        "keras>=3.6,<4",
        "numpy>=1.26,<3",
        "pillow>=10",
    ],
    extras_require={
        "tensorflow": [
            "tensorflow>=2.16,<2.22",  # the first releases with Keras 3 as tf.keras, up to the tested one
            "tensorboard>=2.16,<2.22",  # summaries; TensorFlow 2.21 no longer installs it
            "tensorflow-datasets>=4.9.4,<5",
            "importlib_resources>=6",  # tensorflow-datasets imports it without declaring it
            "gin-config>=0.5",
            "PyYAML>=6",
            "absl-py>=1.4",
        ],
        "onnx": ["tf2onnx>=1.17", "onnx>=1.17", "onnxruntime>=1.20"],
        "openvino": ["openvino>=2025.0"],
        "litert": ["ai-edge-litert>=2.0"],
        "torch": ["torch>=2.4"],
        "coco": ["pycocotools>=2.0.7"],
        "serving": ["tensorflow-serving-api>=2.16,<2.22"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "imgviz>=1.7", "pycocotools>=2.0.7"],
    },
    entry_points={
        "console_scripts": [
            f"axial-tf-{tool.replace('_', '-')}=axial_tf.tools.{tool}:console_main" for tool in _TOOLS
        ],
    },
    license="Apache-2.0",
)

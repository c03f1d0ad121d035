"""OpenVINO: conversion of an export graph with `openvino.convert_model`, and its run with OpenVINO Runtime.

OpenVINO's TensorFlow front end converts the whole graph, the panoptic post-processing included
(UnsortedSegmentSum, TopK, max-pool NMS), for images of any size. It has no UnsortedSegmentMin,
which numbering instances by their first pixel (`instance_numbering: by_first_appearance`) takes;
`write_converted` then ends the graph at the dense outputs and post-processes on the host. Two settings keep its
numbers those of TensorFlow: the weights are saved in float32 (`ov.save_model` compresses them
to float16 by default), and the CPU plugin is asked for float32 inference (on CPUs with AMX or
AVX512-BF16 it computes in bfloat16 by default: on the demo model that moved the center heatmap
by 0.03 and 149 of 1551 panoptic labels). `precision="bfloat16"` asks for bfloat16 instead
(`load_exported(..., precision=...)`, `tools/predict.py --precision`): faster on such CPUs,
ignored by the plugin on others (`OpenVinoSession.precision` says what it chose).
"""

import os
import re

import numpy as np

from axial_tf.export.formats import OPENVINO, ConversionError, import_package, unsupported_op_error

# The CPU plugin's INFERENCE_PRECISION_HINT for each `precision` of `OpenVinoSession`.
_PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16"}
_UNCONVERTED = re.compile(r"(?:No conversion rule found for operations|Conversion is failed for):\s*([\w, ]+)")


def convert_to_openvino(graph, directory):
    """Writes `graph` as `model.xml` and `model.bin` (float32 weights) into `directory`.

    Args:
        graph: An `ExportGraph`.
        directory: An existing folder.

    Raises:
        ConversionError: One line naming the first op OpenVINO cannot convert and its layer.
        ModuleNotFoundError: If openvino is not installed (one line with the install command).
    """
    openvino = import_package("openvino", "openvino", OPENVINO, "Exporting to OpenVINO")
    try:
        model = openvino.convert_model(graph.concrete_function)
    except Exception as error:  # OpConversionFailure and the front end's other errors
        raise _conversion_error(graph, str(error)) from None
    openvino.save_model(model, os.path.join(directory, OPENVINO.model_file), compress_to_fp16=False)


def _conversion_error(graph, text):
    """A one-line `ConversionError` from OpenVINO's report: the first unconverted op type and its first node."""
    match = _UNCONVERTED.search(text)
    if not match:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return ConversionError(f"{OPENVINO.title} conversion failed: {lines[-1] if lines else 'no message'}")
    op = match.group(1).split(",")[0].strip()
    nodes = [node.name for node in graph.concrete_function.graph.get_operations() if node.type == op]
    return unsupported_op_error(OPENVINO, op, nodes[0] if nodes else "?", "OpenVINO has no conversion for it")


class OpenVinoSession:
    """`model.xml` compiled for OpenVINO's CPU device.

    Args:
        output_names: The graph's output names (an OpenVINO output may carry several tensor names).
        path: The `.xml` file (its `.bin` beside it).
        threads: `INFERENCE_NUM_THREADS` (None: OpenVINO's default).
        precision: "float32" or "bfloat16", the plugin's `INFERENCE_PRECISION_HINT`.

    Attributes:
        precision: What the plugin computes in: "bfloat16" only where asked and the CPU has it.

    Raises:
        ModuleNotFoundError: If openvino is not installed.
        ValueError: If the file is not a model OpenVINO can read.
    """

    def __init__(self, output_names, path, threads=None, precision="float32"):
        openvino = import_package("openvino", "openvino", OPENVINO, f"Running {os.path.basename(path)}")
        core = openvino.Core()
        try:
            model = core.read_model(os.fspath(path))
        except RuntimeError as error:
            raise ValueError(f"{path} is not an OpenVINO model: {str(error).strip().splitlines()[-1]}") from None
        config = {"INFERENCE_PRECISION_HINT": _PRECISION_HINTS[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = core.compile_model(model, "CPU", config)
        chosen = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # "f32", "bf16"
        self.precision = "bfloat16" if chosen == "bf16" else "float32"
        self._outputs = {
            name: output for output in self._compiled.outputs for name in output.get_names() if name in output_names
        }

    def run(self, images):
        """The graph's outputs for uint8 images [N, H, W, 3], by name (NumPy)."""
        results = self._compiled(np.asarray(images, np.uint8))
        return {name: np.asarray(results[output]) for name, output in self._outputs.items()}

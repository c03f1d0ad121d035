"""ONNX: conversion of an export graph with tf2onnx, and its run with ONNX Runtime.

The panoptic post-processing stays on the host (`formats.ONNX.host_postprocessing`): tf2onnx
converts UnsortedSegmentSum only for rank-1 segment ids, and the merge step sums over [B, H, W]
ids (ONNX has no segment-sum op of its own). The graph takes images of any size (opset
`ONNX_OPSET`). tf2onnx logs a node it cannot convert and goes on, leaving a model that does not
load; here the first such node stops the export with one line naming the op and its layer.
"""

import contextlib
import logging
import os

import numpy as np

from axial_tf.export.formats import ONNX, import_package, unsupported_op_error

ONNX_OPSET = 17
_ORT_ERRORS_ONLY = 3  # onnxruntime log severity: tf2onnx's nearest resize uses an attribute it warns about


class _ConverterErrors(logging.Handler):
    """Collects tf2onnx's reports of nodes it could not convert, as (node name, op, detail)."""

    def __init__(self, graph):
        super().__init__(logging.ERROR)
        self.graph = graph
        self.failures = []

    def emit(self, record):
        message = record.msg
        if message.startswith("Tensorflow op [") and len(record.args) == 2:  # no conversion rule
            node_name, op = record.args
            self.failures.append((node_name, op, "tf2onnx has no conversion for it"))
        elif message.startswith("Failed to convert node") and record.args:  # the rule raised
            node_name = record.args[0]
            detail = str(record.exc_info[1]) if record.exc_info else ""
            self.failures.append((node_name, self._op_type(node_name), detail.replace("make_sure failure: ", "")))

    def _op_type(self, node_name):
        try:
            return self.graph.get_operation_by_name(node_name).type
        except KeyError:  # a node of a loop body
            return "?"


@contextlib.contextmanager
def _collected_converter_errors(graph):
    """Routes tf2onnx's log records to a `_ConverterErrors` (and not to the console) inside the block."""
    logger = logging.getLogger("tf2onnx")
    handler = _ConverterErrors(graph)
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.ERROR)
    try:
        yield handler
    finally:
        logger.handlers, logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


def convert_to_onnx(graph, directory):
    """Writes `graph` as `model.onnx` into `directory`.

    Args:
        graph: An `ExportGraph`.
        directory: An existing folder.

    Raises:
        ConversionError: One line naming the first op tf2onnx cannot convert and its layer.
        ModuleNotFoundError: If tf2onnx is not installed (one line with the install command).
    """
    tf2onnx = import_package("tf2onnx", "tf2onnx", ONNX, "Exporting to ONNX")
    with _collected_converter_errors(graph.concrete_function.graph) as errors:
        model_proto, _ = tf2onnx.convert.from_function(graph.function, input_signature=[graph.input_spec],
                                                       opset=ONNX_OPSET)
    if errors.failures:
        node_name, op, detail = errors.failures[0]
        raise unsupported_op_error(ONNX, op, node_name, detail)
    with open(os.path.join(directory, ONNX.model_file), "wb") as stream:
        stream.write(model_proto.SerializeToString())


class OnnxSession:
    """`model.onnx` in ONNX Runtime (its available providers, CPU last).

    Args:
        path: The `.onnx` file.
        threads: Intra-op threads (None: ONNX Runtime's default, one per core).

    Raises:
        ModuleNotFoundError: If onnxruntime is not installed.
        ValueError: If the file is not a model ONNX Runtime can load.
    """

    def __init__(self, path, threads=None):
        onnxruntime = import_package("onnxruntime", "onnxruntime", ONNX, f"Running {os.path.basename(path)}")
        onnxruntime.set_default_logger_severity(_ORT_ERRORS_ONLY)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = onnxruntime.InferenceSession(
                os.fspath(path), options, providers=onnxruntime.get_available_providers()
            )
        except Exception as error:  # onnxruntime raises its own error types (InvalidProtobuf, Fail, ...)
            raise ValueError(f"{path} is not an ONNX model that ONNX Runtime can load: {error}") from None
        self._outputs = [output.name for output in self._session.get_outputs()]

    def run(self, images):
        """The graph's outputs for uint8 images [N, H, W, 3], by name (NumPy)."""
        return dict(zip(self._outputs, self._session.run(self._outputs, {"images": np.asarray(images, np.uint8)})))

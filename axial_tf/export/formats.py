"""The export formats: their names, files, optional packages, and what their conversions report.

| format        | written by                       | model file(s)           | runs on          | post-processing |
| ------------- | -------------------------------- | ----------------------- | ---------------- | --------------- |
| `saved_model` | `tf.saved_model.save`            | a SavedModel folder     | TF, TF Serving   | in the graph    |
| `onnx`        | tf2onnx                          | `model.onnx`            | onnxruntime      | host (NumPy)    |
| `openvino`    | `openvino.convert_model`         | `model.xml`+`model.bin` | OpenVINO         | in the graph *  |
| `litert`      | `tf.lite.TFLiteConverter`        | `model.tflite`          | ai-edge-litert   | in the graph    |

* except with `instance_numbering: by_first_appearance` (DeepLab2's TF merge, the Cityscapes
presets): OpenVINO has no UnsortedSegmentMin, and `write_converted` moves the post-processing to
the host (the metadata's `host_postprocessing_because` says so); and for LiteRT with any batch
(`batch_size=None`): its converter takes the post-processing's strided slices at a fixed batch only.

The converted formats (all but `saved_model`) are written as a folder holding the model file(s)
and `axial_tf_export.json` (`EXPORT_INFO_FILENAME`: label space, pre- and post-processing, batch
and input size); `runtimes.load_exported` reads it.
"""

import dataclasses
import importlib

SAVED_MODEL = "saved_model"
NO_LAYER = "no layer (pre- or post-processing)"


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """What differs between the converted formats.

    Attributes:
        name: The `--format` value.
        title: Its name in messages.
        model_file: The file `load_exported` opens (the suffix identifies the format).
        files: Every file the model takes (OpenVINO keeps its weights apart).
        extra: The `pip install 'axial_tf[extra]'` that brings its packages.
        host_postprocessing: Whether the panoptic post-processing runs on the host (its converter
            cannot express the TF post-processing).
        any_input_size: Whether a graph may take images of any size (else `--input_size` fixes it).
    """

    name: str
    title: str
    model_file: str
    files: tuple
    extra: str
    host_postprocessing: bool
    any_input_size: bool


ONNX = ExportFormat("onnx", "ONNX", "model.onnx", ("model.onnx",), "onnx", host_postprocessing=True,
                    any_input_size=True)
OPENVINO = ExportFormat("openvino", "OpenVINO", "model.xml", ("model.xml", "model.bin"), "openvino",
                        host_postprocessing=False, any_input_size=True)
# TFLite: the pre-processing's `tf.ensure_shape` after a resize to a computed size is a Flex op;
# with a fixed input size it folds away.
LITERT = ExportFormat("litert", "LiteRT", "model.tflite", ("model.tflite",), "litert", host_postprocessing=False,
                      any_input_size=False)
CONVERTED_FORMATS = {export_format.name: export_format for export_format in (ONNX, OPENVINO, LITERT)}
FORMAT_NAMES = (SAVED_MODEL, *CONVERTED_FORMATS)


class ConversionError(RuntimeError):
    """A converter cannot express an op of the graph, or its result does not run (one line: op and layer).

    Attributes:
        op: The TensorFlow op type it could not convert (None when the result does not run).
        node: That op's node name.
    """

    def __init__(self, message, op=None, node=None):
        super().__init__(message)
        self.op = op
        self.node = node

    @property
    def outside_layers(self):
        """Whether the op lies outside the model's layers (in the pre- or post-processing)."""
        return self.node is not None and layer_of_node(self.node) == NO_LAYER


def converted_format(name):
    """The `ExportFormat` called `name`.

    Raises:
        ValueError: If `name` is not a converted format.
    """
    if name not in CONVERTED_FORMATS:
        raise ValueError(f"Unknown export format {name!r}; expected one of {', '.join(FORMAT_NAMES)}.")
    return CONVERTED_FORMATS[name]


def import_package(module_name, package, export_format, purpose):
    """Imports an optional package that a format needs, or fails with the install command.

    Args:
        module_name: What to import (e.g. "onnxruntime").
        package: Its name on PyPI (e.g. "onnxruntime").
        export_format: The `ExportFormat` it serves.
        purpose: What needs it (e.g. "Running model.onnx").

    Returns:
        The imported module.

    Raises:
        ModuleNotFoundError: One line, "<purpose> needs <package>: pip install 'axial_tf[<extra>]'".
    """
    try:
        return importlib.import_module(module_name)
    except ImportError:
        raise ModuleNotFoundError(
            f"{purpose} needs {package}: pip install 'axial_tf[{export_format.extra}]'", name=module_name
        ) from None


def layer_of_node(node_name):
    """The Keras layer path of a graph node (its name scopes), e.g. "axial_deep_lab/stem/conv1" .

    Keras adds "_1" to a scope it enters again while tracing; it is removed. A node outside every
    layer (the pre- or post-processing) gives "no layer (pre- or post-processing)".
    """
    scopes = [scope for scope in node_name.split("/")[:-1] if scope]
    if not scopes:
        return NO_LAYER
    return "/".join(scope[:-2] if scope.endswith("_1") else scope for scope in scopes)


def unsupported_op_error(export_format, op, node_name, detail=""):
    """The one-line `ConversionError`: the format, the op, its layer and the converter's reason."""
    reason = f": {detail}" if detail else ""
    message = (
        f"{export_format.title} conversion failed: op {op} (node {node_name}, layer {layer_of_node(node_name)}) "
        f"is not supported{reason}"
    )
    return ConversionError(message, op=op, node=node_name)

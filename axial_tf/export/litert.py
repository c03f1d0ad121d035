"""LiteRT (TFLite): conversion of an export graph with `tf.lite.TFLiteConverter`, and its run with ai-edge-litert.

Builtin ops only (no Flex delegate, so the plain LiteRT runtime runs the file); the panoptic
post-processing converts with them (UNSORTED_SEGMENT_SUM/MIN, TOPK_V2, MAX_POOL_2D, GATHER).
The input size is fixed at export (`formats.LITERT.any_input_size`): with an unknown size the
pre-processing's `tf.ensure_shape` after a resize to a computed size stays in the graph, and
TFLite has no builtin for it. TFLite kernels take at most 5-D tensors, which is why the attention
layer squeezes its block axis instead of slicing it.

The converter freezes the weights into constants (it is given the concrete function alone: with
a trackable object it keeps resource variables that its runtime leaves uninitialised) and names
the outputs `Identity`, `Identity_1`, ... in the order of the function's flat (sorted) outputs.

`convert_classifier_to_tflite` and `run_tflite_classifier` convert and run a classifier on
already pre-processed images (float32 [1, s, s, 3]), for callers that crop and resize themselves.
"""

import os

import numpy as np
import tensorflow as tf

from axial_tf.export.formats import LITERT, ConversionError, import_package, unsupported_op_error

TFLITE_OUTPUTS = ("classes", "probabilities", "logits")


def litert_flatbuffer(concrete_function):
    """Converts a concrete function to a LiteRT flatbuffer with builtin ops only.

    Args:
        concrete_function: A traced `tf.function` (variables are frozen).

    Returns:
        The model as bytes.

    Raises:
        ConversionError: One line naming the first op without a builtin and its layer.
    """
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return converter.convert()
    except Exception as error:  # ConverterError, and ValueError etc. from the Python side
        raise _conversion_error(error) from None


def _conversion_error(error):
    """A one-line `ConversionError` from the converter's error: the first op it could not legalise and its node."""
    for data in getattr(error, "errors", []):
        op = data.operator.name.removeprefix("tf.")
        if op:
            node_names = [call.name for call in data.location.call if call.name] or ["?"]
            detail = data.error_message.splitlines()[0] if data.error_message else ""
            return unsupported_op_error(LITERT, op, node_names[0], detail)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return ConversionError(f"{LITERT.title} conversion failed: {lines[0] if lines else type(error).__name__}")


def convert_to_litert(graph, directory):
    """Writes `graph` as `model.tflite` into `directory`.

    Args:
        graph: An `ExportGraph` with a fixed input size.
        directory: An existing folder.

    Raises:
        ConversionError: If an op has no builtin (one line: op and layer).
        ValueError: If the graph's input size is not fixed.
    """
    if None in graph.input_size:
        raise ValueError("LiteRT export needs a fixed input size (--input_size H,W).")
    with open(os.path.join(directory, LITERT.model_file), "wb") as stream:
        stream.write(litert_flatbuffer(graph.concrete_function))


class LiteRTSession:
    """A LiteRT model in the ai-edge-litert interpreter.

    Args:
        output_names: The function's output names, sorted (the order of `Identity`, `Identity_1`, ...).
        path: The `.tflite` file, or
        content: the model bytes.
        threads: The interpreter's threads (None: its default).

    Raises:
        ModuleNotFoundError: If ai-edge-litert is not installed.
        ValueError: If the file is not a LiteRT model.
    """

    def __init__(self, output_names, path=None, content=None, threads=None):
        purpose = f"Running {os.path.basename(path)}" if path else "Running a LiteRT model"
        interpreter_module = import_package("ai_edge_litert.interpreter", "ai-edge-litert", LITERT, purpose)
        try:
            self._interpreter = interpreter_module.Interpreter(
                model_path=None if path is None else os.fspath(path), model_content=content, num_threads=threads
            )
        except ValueError as error:
            raise ValueError(f"{path or 'The model'} is not a LiteRT model: {error}") from None
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        by_name = {detail["name"]: detail["index"] for detail in self._interpreter.get_output_details()}
        tensor_names = ["Identity"] + [f"Identity_{i}" for i in range(1, len(output_names))]
        self._outputs = {name: by_name[tensor] for name, tensor in zip(output_names, tensor_names)}

    @property
    def input_shape(self):
        """The shape the interpreter is allocated for (a batch the model leaves open counts as 1 until run)."""
        return tuple(int(side) for side in self._input["shape"])

    def run(self, images):
        """The model's outputs for `images` of its input shape (any batch where it leaves the batch open), by name."""
        images = np.asarray(images, self._input["dtype"])
        if images.shape != self.input_shape:
            # Only sides the model left open (-1 in its shape signature) may change; others raise here.
            self._interpreter.resize_tensor_input(self._input["index"], images.shape, strict=True)
            self._interpreter.allocate_tensors()
            self._input = self._interpreter.get_input_details()[0]
        self._interpreter.set_tensor(self._input["index"], images)
        self._interpreter.invoke()
        return {name: self._interpreter.get_tensor(index) for name, index in self._outputs.items()}


def convert_classifier_to_tflite(model, image_size, top_k=5):
    """Converts an `AxialResNetClassifier` on pre-processed images to a LiteRT flatbuffer that runs.

    The model takes `images` float32 [1, s, s, 3] in [0, 255], already center-cropped and resized
    as `classification_eval_image` does, and returns `TFLITE_OUTPUTS` (`run_tflite_classifier`).
    `tools/export.py --format litert` exports it with its pre-processing instead.

    Args:
        model: The classifier (float images in [0, 255] -> logits).
        image_size: Side of the square input.
        top_k: Classes returned (capped at the number of classes).

    Returns:
        The model as bytes.

    Raises:
        ConversionError: If an op has no builtin, or the runtime cannot run the result.
    """
    top_k = min(int(top_k), int(model.num_classes))

    @tf.function(input_signature=[tf.TensorSpec([1, image_size, image_size, 3], tf.float32, name="images")])
    def classify(images):
        logits = tf.cast(model(images, training=False), tf.float32)  # [1, num_classes]
        probabilities, classes = tf.math.top_k(tf.nn.softmax(logits, axis=-1), k=top_k)
        return {"classes": classes, "probabilities": probabilities, "logits": logits}

    flatbuffer = litert_flatbuffer(classify.get_concrete_function())
    try:
        run_tflite_classifier(flatbuffer, np.zeros([1, image_size, image_size, 3], np.float32))
    except (RuntimeError, ValueError) as error:
        raise ConversionError(f"{model.name} converts to LiteRT but the runtime cannot run it: {error}") from error
    return flatbuffer


def run_tflite_classifier(flatbuffer, images):
    """Runs a model from `convert_classifier_to_tflite`.

    Args:
        flatbuffer: The model bytes.
        images: float32 [1, s, s, 3] pre-processed images in [0, 255].

    Returns:
        Dict of `TFLITE_OUTPUTS` as NumPy arrays.
    """
    return LiteRTSession(sorted(TFLITE_OUTPUTS), content=flatbuffer).run(images)

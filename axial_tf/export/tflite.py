"""TFLite export of the classifier (optional).

The TFLite model takes one preprocessed image, `images` float32 [1, s, s, 3]
in [0, 255] (already center-cropped and resized as `classification_eval_image`
does; TFLite has no equivalent of that dynamic-size crop), and returns, in
this order, `classes` int32 [1, k], `probabilities` float32 [1, k] and
`logits` float32 [1, num_classes] (use `run_tflite_classifier` to get them by
name). Conversion freezes the weights and uses TFLite builtin ops only, so
the file runs with the plain TFLite runtime (no Flex delegate).

Status: the Axial-ResNet classifier converts and runs; every conversion is
checked by running the result once in the TFLite interpreter
(`TFLiteConversionError` otherwise, never a model that cannot run), and the
test compares it with Keras. TFLite kernels take at most 5-D tensors, which
is why the attention layer squeezes its block axis instead of slicing it.
The panoptic model is not offered for TFLite: its post-processing needs
dynamic shapes and loops.
"""

import warnings

import numpy as np
import tensorflow as tf

TFLITE_OUTPUTS = ("classes", "probabilities", "logits")


class TFLiteConversionError(RuntimeError):
    """The model could not be converted to a TFLite model that runs with builtin ops."""


def convert_classifier_to_tflite(model, image_size, top_k=5):
    """Converts an `AxialResNetClassifier` to a TFLite flatbuffer and checks that it runs.

    Args:
        model: The classifier (float images in [0, 255] -> logits).
        image_size: Side of the square input.
        top_k: Classes returned (capped at the number of classes).

    Returns:
        The TFLite model as bytes.

    Raises:
        TFLiteConversionError: With the converter's or the interpreter's
            message if an op has no TFLite builtin or a kernel rejects it.
    """
    top_k = min(int(top_k), int(model.num_classes))

    @tf.function(input_signature=[tf.TensorSpec([1, image_size, image_size, 3], tf.float32, name="images")])
    def classify(images):
        logits = tf.cast(model(images, training=False), tf.float32)  # [1, num_classes]
        probabilities, classes = tf.math.top_k(tf.nn.softmax(logits, axis=-1), k=top_k)
        return classes, probabilities, logits  # the order of TFLITE_OUTPUTS

    # Without a trackable object the converter freezes the variables into constants;
    # with one it keeps resource variables that its runtime leaves uninitialised.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([classify.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # the converter raises several error types (ConverterError, ValueError, ...)
        raise TFLiteConversionError(f"TFLite conversion of {model.name} failed: {error}") from error
    try:
        run_tflite_classifier(flatbuffer, np.zeros([1, image_size, image_size, 3], np.float32))
    except (RuntimeError, ValueError) as error:
        raise TFLiteConversionError(
            f"{model.name} converts to TFLite but the TFLite runtime cannot run it: {error}"
        ) from error
    return flatbuffer


def run_tflite_classifier(flatbuffer, images):
    """Runs a model from `convert_classifier_to_tflite` with the TFLite interpreter.

    Args:
        flatbuffer: The TFLite model bytes.
        images: float32 [1, s, s, 3] preprocessed image in [0, 255].

    Returns:
        Dict of `TFLITE_OUTPUTS` as NumPy arrays.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice in favour of ai_edge_litert
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.asarray(images, np.float32))
    interpreter.invoke()
    # The converter names the function's outputs Identity, Identity_1, ... in their order.
    by_name = {detail["name"]: interpreter.get_tensor(detail["index"]) for detail in interpreter.get_output_details()}
    names = ["Identity"] + [f"Identity_{i}" for i in range(1, len(TFLITE_OUTPUTS))]
    return {output: by_name[name] for output, name in zip(TFLITE_OUTPUTS, names)}

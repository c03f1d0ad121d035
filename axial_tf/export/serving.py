"""What every serving module shares: signature names, image decoding, weight tracking."""

import tensorflow as tf

SERVING_DEFAULT = "serving_default"
SERVING_ENCODED = "serving_encoded"
IMAGES_INPUT = "images"
IMAGE_BYTES_INPUT = "image_bytes"
IMAGES_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name=IMAGES_INPUT)
IMAGE_BYTES_SPEC = tf.TensorSpec([None], tf.string, name=IMAGE_BYTES_INPUT)


def decode_image(contents):
    """Decodes JPEG/PNG/GIF/BMP bytes to uint8 RGB [H, W, 3] (grey is expanded, alpha dropped).

    Args:
        contents: A string scalar tensor with the encoded file.

    Returns:
        uint8 [H, W, 3] (the first frame of an animation).
    """
    image = tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


class UntrackedReference:
    """Holds an object without making it a SavedModel dependency of its `tf.Module`."""

    def __init__(self, value):
        self.value = value


def _backing_tf_variable(variable):
    """The `tf.Variable` behind a Keras variable.

    Tracking the Keras wrapper would make `tf.saved_model.save` write a second,
    restorable copy of each variable (Keras exports the wrapper as a new
    `tf.Variable`) while the functions read the original: TF2's loader copes,
    but TF Serving and `saved_model_cli run` (the TF1 loader) then read
    uninitialised variables.
    """
    value = getattr(variable, "value", variable)
    if not isinstance(value, tf.Variable):
        raise TypeError(f"Variable {getattr(variable, 'path', variable)} is not backed by a tf.Variable.")
    return value


class ServingModule(tf.Module):
    """Base of the serving modules: the model's weights plus two serving signatures.

    Subclasses implement `_serve_images(images)` (uint8 [B, H, W, 3]) and
    `_serve_encoded(image_bytes)` (string [B]), each returning a dict of
    tensors. Only the weights are tracked, not the Keras model: saving the
    model object would also trace and store Keras' own serving functions. The
    tf.functions are not attributes either, so `tf.saved_model.save` stores
    the already traced signatures instead of tracing them again.

    Args:
        model: The Keras model.
        name: Module name.
    """

    def __init__(self, model, name):
        super().__init__(name=name)
        self._model = UntrackedReference(model)
        self.model_variables = [_backing_tf_variable(variable) for variable in model.variables]
        self._functions = UntrackedReference({})

    @property
    def model(self):
        """The wrapped Keras model."""
        return self._model.value

    def serve_images(self, images):
        """The `serving_default` signature: uint8 images [B, H, W, 3] -> dict of tensors."""
        return self.signature_function(SERVING_DEFAULT)(images)

    def serve_encoded(self, image_bytes):
        """The `serving_encoded` signature: [B] JPEG/PNG strings -> dict of tensors."""
        return self.signature_function(SERVING_ENCODED)(image_bytes)

    def signature_function(self, name):
        """The `tf.function` of signature `name` (traced once, then cached)."""
        functions = self._functions.value
        if name not in functions:
            implementations = {
                SERVING_DEFAULT: (self._serve_images, IMAGES_SPEC),
                SERVING_ENCODED: (self._serve_encoded, IMAGE_BYTES_SPEC),
            }
            if name not in implementations:
                raise ValueError(f"Unknown signature {name!r}; known: {sorted(implementations)}.")
            python_function, spec = implementations[name]
            functions[name] = tf.function(python_function, input_signature=[spec])
        return functions[name]

    def signatures(self):
        """The concrete functions to export, by signature name."""
        names = (SERVING_DEFAULT, SERVING_ENCODED)
        return {name: self.signature_function(name).get_concrete_function() for name in names}

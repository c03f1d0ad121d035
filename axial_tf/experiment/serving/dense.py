"""The servable dense predictor: uint8 images or encoded bytes in, per-pixel maps at each image's size out.

Everything between the client's pixels and the answer runs in the graph, with the functions
evaluation uses: `InferencePreprocessor.preprocess_image` (the resize/pad to the model input
size), the task's prediction (`predict`, e.g. model + multi-scale/flip averaging +
post-processing) and `InferencePreprocessor.restore` back to each image's own size. So the
exported maps are the evaluation predictions, bit for bit. The panoptic and semantic modules
differ only in `predict`, their output kinds and fill values.
"""

import tensorflow as tf

from axial_tf.data.inference import decode_image
from axial_tf.experiment.serving.base import DEFAULT_MAX_MEGAPIXELS, ServingModule, UntrackedReference

IMAGE_SIZE_OUTPUT = "image_size"


class DenseServingModule(ServingModule):
    """A dense model with evaluation's pre- and post-processing, as serving signatures.

    `serve_images` (exported as `serving_default`) takes a batch of same-sized
    uint8 images `[B, H, W, 3]`; `serve_encoded` (`serving_encoded`) takes
    `[B]` JPEG/PNG byte strings whose images may differ in size: each is
    decoded and preprocessed on its own, the batch runs through the model
    together (all images have the model input size after preprocessing), and
    each prediction is restored to its image's size and then padded at the
    bottom/right to the largest image of the batch (`fill_values`); the
    `image_size` output [B, 2] says how much of each map is valid. A batch
    needs at least one image, and may hold at most `max_megapixels` (B x
    largest height x largest width), checked from the image headers before
    decoding; see `ServingModule`.

    Subclasses set `OUTPUTS` (output name -> `InferencePreprocessor.restore`
    kind: "label", "logits" or "offsets") and implement `predict(prepared)`
    and `fill_values()`.

    Args:
        model: The Keras model (float images in [0, 255] -> dict of maps).
        preprocessor: The evaluation `InferencePreprocessor`.
        scales: Multi-scale inference factors (`evaluation.eval_scales`).
        flip: Average with the mirrored image (`evaluation.flip`).
        max_megapixels: Most pixels (millions) of one request.
        name: Module name.
    """

    OUTPUTS = {}

    def __init__(self, model, preprocessor, scales=(1.0,), flip=False, max_megapixels=DEFAULT_MAX_MEGAPIXELS,
                 name="dense_serving"):
        super().__init__(model, name=name, max_megapixels=max_megapixels)
        self._preprocessor = preprocessor
        self._scales = tuple(float(s) for s in scales)
        self._flip = bool(flip)
        # Both signatures call this one tf.function (same input shapes), so the model, with
        # all its scales and flips, is traced and stored once instead of once per signature.
        self._predict_and_restore_function = UntrackedReference(tf.function(self._predict_and_restore))

    @property
    def preprocessor(self):
        """The `InferencePreprocessor` baked into the graph."""
        return self._preprocessor

    @property
    def scales(self):
        """Multi-scale inference factors."""
        return self._scales

    @property
    def flip(self):
        """Whether the mirrored image is averaged in."""
        return self._flip

    def predict(self, prepared):
        """The task's predictions (a dict holding every `OUTPUTS` name) of float32 [B, h, w, 3] images."""
        raise NotImplementedError

    def fill_values(self):
        """What pads a smaller image's maps in a mixed-size batch, by output name."""
        raise NotImplementedError

    def _serve_images(self, images):
        """Prediction of a batch of same-sized uint8 RGB images [B, H, W, 3]."""
        prepared, meta = self._preprocessor.preprocess_image(images)  # [B, h, w, 3] float32
        batch = tf.shape(images)[0]
        original_sizes = tf.tile(meta["original_size"][tf.newaxis], [batch, 1])  # [B, 2]
        valid_sizes = tf.tile(meta["valid_size"][tf.newaxis], [batch, 1])  # [B, 2]
        return self._predict_and_restore_function.value(prepared, original_sizes, valid_sizes, meta["original_size"])

    def _serve_encoded(self, image_bytes):
        """Prediction of [B] encoded images (any mix of sizes), plus `image_size` [B, 2]."""
        input_spec = tf.TensorSpec([*self._preprocessor.size, 3], tf.float32)
        size_spec = tf.TensorSpec([2], tf.int32)

        def decode_and_prepare(contents):
            prepared, meta = self._preprocessor.preprocess_image(decode_image(contents))
            return prepared, meta["original_size"], meta["valid_size"]

        prepared, original_sizes, valid_sizes = tf.map_fn(
            decode_and_prepare, image_bytes, fn_output_signature=(input_spec, size_spec, size_spec)
        )  # [B, h, w, 3], [B, 2], [B, 2]
        output_size = tf.reduce_max(original_sizes, axis=0)  # the signature's check refuses an empty batch
        outputs = self._predict_and_restore_function.value(prepared, original_sizes, valid_sizes, output_size)
        outputs[IMAGE_SIZE_OUTPUT] = original_sizes
        return outputs

    def _predict_and_restore(self, prepared, original_sizes, valid_sizes, output_size):
        """Evaluation's prediction on preprocessed images, each mapped back to its own size.

        Args:
            prepared: float32 [B, h, w, 3] at the model input size.
            original_sizes: int32 [B, 2] size of each image before preprocessing.
            valid_sizes: int32 [B, 2] size of its content inside `prepared`.
            output_size: int32 [2] (height, width) every output is padded to.

        Returns:
            Dict of the `OUTPUTS`, [B, output_size..., ...].
        """
        predictions = self.predict(prepared)
        predictions = {name: predictions[name] for name in self.OUTPUTS}
        fill_values = self.fill_values()

        def restore_one(elements):
            maps, original_size, valid_size = elements
            meta = {"original_size": original_size, "valid_size": valid_size}
            restored = {}
            for name, kind in self.OUTPUTS.items():
                value = self._preprocessor.restore(maps[name], meta, kind=kind)
                restored[name] = _pad_to(value, output_size, fill_values[name])
            return restored

        output_spec = {
            name: tf.TensorSpec([None, None, *value.shape[3:]], value.dtype) for name, value in predictions.items()
        }
        return tf.map_fn(
            restore_one, (predictions, original_sizes, valid_sizes), fn_output_signature=output_spec
        )

    def dense_label_space(self):
        """The input-side facts of `label_space` shared by dense modules."""
        return {
            "input_size": list(self._preprocessor.size),
            "resize_policy": self._preprocessor.resize_policy,
            "eval_scales": list(self._scales),
            "flip": self._flip,
            "max_megapixels": self.max_megapixels,
        }


def _pad_to(value, size, fill_value):
    """Pads [h, w, ...] at the bottom/right to [size[0], size[1], ...] with `fill_value`."""
    shape = tf.shape(value)
    paddings = [[0, size[0] - shape[0]], [0, size[1] - shape[1]]] + [[0, 0]] * (value.shape.rank - 2)
    return tf.pad(value, paddings, constant_values=tf.cast(fill_value, value.dtype))

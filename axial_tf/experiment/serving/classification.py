"""The servable classifier: images or encoded bytes in, top-k classes and probabilities out."""

import os

import tensorflow as tf

from axial_tf.data.inference import classification_eval_image, decode_image
from axial_tf.experiment.serving.base import DEFAULT_MAX_MEGAPIXELS, ServingModule


class ClassificationServingModule(ServingModule):
    """An `AxialResNetClassifier` with evaluation's preprocessing and a top-k, as serving signatures.

    Each image gets the evaluation preprocessing (`classification_eval_image`:
    central crop of `crop_fraction` of the shorter side, bilinear resize to
    `image_size`), so images of any size, and in `serve_encoded` any mix of
    sizes, are accepted. Outputs: `classes` int32 [B, k] and `probabilities`
    float32 [B, k] (softmax, best first), `class_names` string [B, k] and
    `logits` float32 [B, num_classes], with k = min(top_k, num_classes).

    Args:
        model: An `AxialResNetClassifier` (float images in [0, 255] -> logits).
        image_size: Side of the square model input (`data.crop_size[0]`).
        top_k: Number of classes returned per image.
        class_names: Name of each class id (None: the ids as strings).
        crop_fraction: Central crop fraction of evaluation.
        max_megapixels: Most pixels (millions) of one request.

    Example:
        >>> module = ClassificationServingModule(classifier, image_size=224, top_k=5)
        >>> module.serve_images(tf.zeros([2, 300, 400, 3], tf.uint8))["classes"]  # [2, 5]
    """

    def __init__(
        self, model, image_size, top_k=5, class_names=None, crop_fraction=0.875,
        max_megapixels=DEFAULT_MAX_MEGAPIXELS,
    ):
        super().__init__(model, name="axial_resnet_classifier_serving", max_megapixels=max_megapixels)
        num_classes = int(model.num_classes)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}.")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for a model with {num_classes} classes.")
        self._image_size = int(image_size)
        self._top_k = min(int(top_k), num_classes)
        self._crop_fraction = float(crop_fraction)
        self._class_names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(num_classes))

    @property
    def image_size(self):
        """Side of the square model input."""
        return self._image_size

    @property
    def top_k(self):
        """Classes returned per image."""
        return self._top_k

    @property
    def class_names(self):
        """Name of each class id."""
        return self._class_names

    def label_space(self, info=None):
        """What a client needs to read the outputs (written to the export's metadata); `info` is unused."""
        del info  # the class names are the module's own
        return {
            "task": "classification",
            "class_names": list(self._class_names),
            "image_size": self._image_size,
            "top_k": self._top_k,
            "max_megapixels": self.max_megapixels,
        }

    def preprocess(self, image):
        """Evaluation preprocessing of one uint8 [H, W, 3] image -> float32 [s, s, 3] (or of a same-sized batch)."""
        return classification_eval_image(image, self._image_size, self._crop_fraction)

    def classify(self, prepared):
        """Top-k of preprocessed float32 [B, s, s, 3] images (no resizing)."""
        logits = tf.cast(self.model(prepared, training=False), tf.float32)  # [B, num_classes]
        probabilities, classes = tf.math.top_k(tf.nn.softmax(logits, axis=-1), k=self._top_k)
        names = tf.gather(tf.constant(self._class_names, tf.string), classes)
        return {"classes": classes, "probabilities": probabilities, "class_names": names, "logits": logits}

    def _serve_images(self, images):
        """Top-k classes of a batch of same-sized uint8 RGB images [B, H, W, 3]."""
        return self.classify(self._prepare_each(lambda image: image, images))

    def _serve_encoded(self, image_bytes):
        """Top-k classes of [B] JPEG/PNG byte strings (any mix of sizes)."""
        return self.classify(self._prepare_each(decode_image, image_bytes))

    def _prepare_each(self, to_image, elements):
        spec = tf.TensorSpec([self._image_size, self._image_size, 3], tf.float32)
        return tf.map_fn(lambda element: self.preprocess(to_image(element)), elements, fn_output_signature=spec)


def classification_record(outputs, path):
    """The JSON-ready record of one classified image: file, top-k ids, names and probabilities."""
    return {
        "file": os.fspath(path),
        "classes": outputs["classes"].tolist(),
        "class_names": [name.decode() for name in outputs["class_names"].tolist()],
        "probabilities": [float(p) for p in outputs["probabilities"]],
    }

"""The servable semantic segmenter: uint8 images or encoded bytes in, class maps out, and its prediction files."""

import numpy as np
import tensorflow as tf

from axial_tf.experiment.serving.base import DEFAULT_MAX_MEGAPIXELS
from axial_tf.experiment.serving.dense import DenseServingModule
from axial_tf.models.inference import predict_semantic
from axial_tf.utils import visualization

# Output name -> `InferencePreprocessor.restore` kind.
SEMANTIC_OUTPUTS = {"semantic_pred": "label", "semantic_probs": "logits"}


class SemanticServingModule(DenseServingModule):
    """An `AxialSemanticDeepLab` with evaluation's pre-processing and averaging, as serving signatures.

    Inputs and batching as `DenseServingModule`. Outputs, at the input resolution:
    `semantic_pred` (int32 [B, H, W]) and `semantic_probs` (float32 [B, H, W, C]), plus
    `image_size` [B, 2] from `serving_encoded`; smaller images of a mixed batch are padded with
    the void label and zeros.

    Args:
        model: An `AxialSemanticDeepLab`.
        preprocessor: The evaluation `InferencePreprocessor`.
        void_label: The dataset's ignore label (pads smaller images of a mixed batch).
        scales: Multi-scale inference factors (`evaluation.eval_scales`).
        flip: Average with the mirrored image (`evaluation.flip`).
        max_megapixels: Most pixels (millions) of one request.

    Example:
        >>> module = SemanticServingModule(model, preprocessor, void_label=255)
        >>> module.serve_images(tf.zeros([1, 33, 47, 3], tf.uint8))["semantic_pred"].shape  # [1, 33, 47]
    """

    OUTPUTS = SEMANTIC_OUTPUTS

    def __init__(self, model, preprocessor, void_label, scales=(1.0,), flip=False,
                 max_megapixels=DEFAULT_MAX_MEGAPIXELS):
        super().__init__(model, preprocessor, scales=scales, flip=flip, max_megapixels=max_megapixels,
                         name="axial_semantic_deeplab_serving")
        self._void_label = int(void_label)

    def predict(self, prepared):
        return predict_semantic(self.model, prepared, scales=self.scales, flip=self.flip)

    def fill_values(self):
        """The void label and zeros."""
        return {"semantic_pred": self._void_label, "semantic_probs": 0.0}

    def label_space(self, info):
        """What a client needs to read the outputs (written to the export's metadata).

        Args:
            info: The dataset's `PanopticDatasetInfo` (class names).

        Returns:
            A JSON-serialisable dict.
        """
        return {"task": "semantic", "class_names": list(info.class_names), "void_label": self._void_label,
                **self.dense_label_space()}


def write_semantic_prediction(outputs, image, output_base, info, file_format="png", overlay=False, alpha=0.5):
    """Writes one image's semantic prediction files.

    Files (`output_base` + suffix): "png": `_semantic.png`, the 8-bit class map; "npy":
    `_semantic.npy`, int32 [H, W]; with `overlay`: `_overlay.png`, the image with the class
    colours blended in.

    Args:
        outputs: One image's `serving_default` outputs (no batch dim).
        image: The uint8 [H, W, 3] input image.
        output_base: Path prefix of the files.
        info: The export's `label_space` dict (class names, void label).
        file_format: "png" or "npy".
        overlay: Also write the colourised overlay.
        alpha: Opacity of the overlay colours.

    Returns:
        List of the written paths.
    """
    semantic = outputs["semantic_pred"]  # [H, W] int32
    written = []
    if file_format == "png":
        written.append(f"{output_base}_semantic.png")
        tf.io.write_file(written[-1], tf.io.encode_png(semantic.astype(np.uint8)[..., np.newaxis]))
    elif file_format == "npy":
        written.append(f"{output_base}_semantic.npy")
        with tf.io.gfile.GFile(written[-1], "wb") as stream:
            np.save(stream, semantic.astype(np.int32))
    else:
        raise ValueError(f"file_format must be 'png' or 'npy', got {file_format!r}.")
    if overlay:
        palette = visualization.class_palette(len(info["class_names"]), info["class_names"])
        # A semantic map is a panoptic map with divisor 1 and no instances: nothing is outlined.
        blended = visualization.overlay_panoptic(image, semantic, 1, palette, void_label=info["void_label"],
                                                 alpha=alpha)
        written.append(f"{output_base}_overlay.png")
        tf.io.write_file(written[-1], tf.io.encode_png(blended))
    return written

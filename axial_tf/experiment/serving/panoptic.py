"""The servable panoptic model: uint8 images or encoded bytes in, panoptic maps out, and its prediction files.

The module runs evaluation's `predict_panoptic` (model, multi-scale and flip averaging,
Panoptic-DeepLab post-processing) inside `DenseServingModule`'s pre-processing and restore, so
the exported `panoptic_pred` is the evaluation prediction, bit for bit.
"""

import numpy as np
import tensorflow as tf

from axial_tf.experiment.serving.base import DEFAULT_MAX_MEGAPIXELS
from axial_tf.experiment.serving.dense import DenseServingModule
from axial_tf.models.inference import predict_panoptic
from axial_tf.utils import visualization

LABEL_FORMATS = ("png", "npy")
# Output name -> `InferencePreprocessor.restore` kind.
PANOPTIC_OUTPUTS = {
    "panoptic_pred": "label",
    "semantic_pred": "label",
    "instance_pred": "label",
    "semantic_probs": "logits",
    "center_heatmap": "logits",
    "offset_map": "offsets",
}


class PanopticServingModule(DenseServingModule):
    """An `AxialDeepLab` with evaluation's pre- and post-processing, as serving signatures.

    Inputs and batching as `DenseServingModule`. Outputs, at the input resolution:
    `panoptic_pred`, `semantic_pred`, `instance_pred` (int32 [B, H, W]), `semantic_probs`
    (float32 [B, H, W, C]), `center_heatmap` (float32 [B, H, W]) and `offset_map` (float32
    [B, H, W, 2], (dy, dx) in pixels of the output resolution), plus `image_size` [B, 2] from
    `serving_encoded`. Smaller images of a mixed batch are padded with void and zeros.

    Args:
        model: An `AxialDeepLab` (float images in [0, 255] -> dict of maps).
        postprocess_options: `PostProcessOptions` of evaluation.
        preprocessor: The evaluation `InferencePreprocessor`.
        scales: Multi-scale inference factors (`evaluation.eval_scales`).
        flip: Average with the mirrored image (`evaluation.flip`).
        max_megapixels: Most pixels (millions) of one request.

    Example:
        >>> module = PanopticServingModule(model, options, preprocessor)
        >>> outputs = module.serve_images(tf.zeros([1, 33, 47, 3], tf.uint8))
        >>> tf.saved_model.save(module, "export/1", signatures=module.signatures())
    """

    OUTPUTS = PANOPTIC_OUTPUTS

    def __init__(
        self, model, postprocess_options, preprocessor, scales=(1.0,), flip=False,
        max_megapixels=DEFAULT_MAX_MEGAPIXELS,
    ):
        super().__init__(model, preprocessor, scales=scales, flip=flip, max_megapixels=max_megapixels,
                         name="axial_deeplab_serving")
        self._postprocess_options = postprocess_options

    @property
    def postprocess_options(self):
        """The `PostProcessOptions` baked into the graph."""
        return self._postprocess_options

    def predict(self, prepared):
        return predict_panoptic(self.model, prepared, self._postprocess_options, scales=self.scales, flip=self.flip)

    def fill_values(self):
        """Void labels and zeros."""
        options = self._postprocess_options
        return {
            "panoptic_pred": options.void_label * options.label_divisor,
            "semantic_pred": options.void_label,
            "instance_pred": 0,
            "semantic_probs": 0.0,
            "center_heatmap": 0.0,
            "offset_map": 0.0,
        }

    def label_space(self, info):
        """What a client needs to read the outputs (written to the export's metadata).

        Args:
            info: The dataset's `PanopticDatasetInfo` (class names, the dataset's category ids).

        Returns:
            A JSON-serialisable dict.
        """
        options = self._postprocess_options
        return {
            "task": "panoptic",
            "class_names": list(info.class_names),
            "category_ids": list(info.category_ids),
            "thing_class_ids": list(options.thing_class_ids),
            "label_divisor": options.label_divisor,
            "void_label": options.void_label,
            "postprocessing": options.to_dict(),
            **self.dense_label_space(),
        }


def write_panoptic_prediction(outputs, image, output_base, info, file_format="png", overlay=False, alpha=0.5):
    """Writes one image's panoptic prediction files.

    Files (`output_base` + suffix):
      - "png": `_panoptic.png`, the panoptic label RGB-encoded as COCO
        encodes ids (label = R + 256 G + 256^2 B, see
        `visualization.encode_panoptic_rgb`), and `_semantic.png`, the 8-bit
        semantic class map;
      - "npy": `_panoptic.npy` and `_semantic.npy`, int32 [H, W];
      - with `overlay`: `_overlay.png`, the image with stable class colours
        (shaded per instance) and instance outlines.

    Args:
        outputs: One image's `serving_default` outputs (no batch dim).
        image: The uint8 [H, W, 3] input image.
        output_base: Path prefix of the files.
        info: `label_space_info` dict (class names, label divisor, void label).
        file_format: One of LABEL_FORMATS.
        overlay: Also write the colourised overlay.
        alpha: Opacity of the overlay colours.

    Returns:
        List of the written paths.
    """
    if file_format not in LABEL_FORMATS:
        raise ValueError(f"file_format must be one of {LABEL_FORMATS}, got {file_format!r}.")
    panoptic = outputs["panoptic_pred"]  # [H, W] int32
    semantic = outputs["semantic_pred"]  # [H, W] int32
    written = []
    if file_format == "png":
        encoded = {
            "panoptic": tf.io.encode_png(visualization.encode_panoptic_rgb(panoptic)),
            "semantic": tf.io.encode_png(semantic.astype(np.uint8)[..., np.newaxis]),
        }
        for name, png in encoded.items():
            written.append(f"{output_base}_{name}.png")
            tf.io.write_file(written[-1], png)
    else:
        for name, value in (("panoptic", panoptic), ("semantic", semantic)):
            written.append(f"{output_base}_{name}.npy")
            with tf.io.gfile.GFile(written[-1], "wb") as stream:
                np.save(stream, value.astype(np.int32))
    if overlay:
        written.append(write_panoptic_overlay(panoptic, image, output_base, info, alpha=alpha))
    return written


def write_panoptic_overlay(panoptic, image, output_base, info, alpha=0.5):
    """Writes `output_base` + `_overlay.png`: the image with stable class colours and instance outlines.

    Args:
        panoptic: The int32 [H, W] panoptic prediction.
        image: The uint8 [H, W, 3] input image.
        output_base: Path prefix of the file.
        info: `label_space_info` dict (class names, label divisor, void label).
        alpha: Opacity of the colours.

    Returns:
        The written path.
    """
    palette = visualization.class_palette(len(info["class_names"]), info["class_names"])
    blended = visualization.overlay_panoptic(
        image, panoptic, info["label_divisor"], palette, void_label=info["void_label"], alpha=alpha
    )
    path = f"{output_base}_overlay.png"
    tf.io.write_file(path, tf.io.encode_png(blended))
    return path

"""The graphs handed to the ONNX, OpenVINO and LiteRT converters: a serving module's work without its checks.

`export_graph(module, ...)` traces what the module's `serving_default` computes (the evaluation
pre-processing, the model with its scales and flips, the post-processing and the restore to the
input size) as one `tf.function` whose only input is `images`, uint8 [N, H, W, 3], and whose
outputs are a flat dict of numeric tensors. It differs from the signature in what converters need:

  - No request checks: they are string ops (`tf.debugging.Assert` with formatted text) that no
    converter takes; the runtime loader (`runtimes.py`) checks shapes on the host.
  - No loops (a loop is a `While` over a TensorList that tf2onnx cannot convert): no attention
    is split into chunks (`runtime_settings(max_chunk_logits=None)`; the chunk bound needs
    static sizes and would trace a loop otherwise), and the per-image steps run on the whole
    batch (`restore_batch`; the classifier's crop). So the batch may be fixed (`batch_size`,
    default 1) or left open (`batch_size=None`: any number of images per call), and H and W
    left unknown (`input_size`) where the format allows it. Unsplit attention bounds the model
    sizes that convert: Axial-DeepLab-S at 1025 x 2049 (attention over 513 and 1025 positions)
    took tf2onnx past 12 GB within 50 s; MaX-S-backbone models at that size convert.
  - Label maps are restored to the input size by a gather of TensorFlow's own nearest-neighbour
    source rows and columns, not by resizing the int32 map: TFLite has no int32
    ResizeNearestNeighbor. The values are those of `InferencePreprocessor.restore`.
  - With `host_postprocessing` (ONNX: tf2onnx converts UnsortedSegmentSum only for rank-1 segment
    ids, and the merge step sums over [B, H, W] ids; OpenVINO when the instance numbering needs
    UnsortedSegmentMin, see `formats.py`), a panoptic graph ends at the dense outputs:
    besides the restored `semantic_probs`, `center_heatmap` and `offset_map` it returns the
    model-resolution maps that `panoptic_postprocess_numpy` takes (`HOST_INPUTS`) and the source
    rows and columns of the label restore (`LABEL_ROWS`, `LABEL_COLS`).
  - Classifiers return `classes`, `probabilities` and `logits`; the class names (strings) come
    from the export's metadata.

No convolution is split into row bands either (`max_im2col_elements=None`, a CPU-only branch of
TensorFlow with oneDNN): the graph holds only the model's math.
"""

import dataclasses

import tensorflow as tf

from axial_tf.experiment.serving.classification import ClassificationServingModule
from axial_tf.experiment.serving.panoptic import PANOPTIC_OUTPUTS, PanopticServingModule
from axial_tf.experiment.serving.semantic import SEMANTIC_OUTPUTS, SemanticServingModule
from axial_tf.layers.runtime import runtime_settings
from axial_tf.models.inference import predict_dense

IMAGES = "images"
LABEL_ROWS = "label_rows"
LABEL_COLS = "label_cols"
# Graph output -> `panoptic_postprocess_numpy` argument, at the model input size.
HOST_INPUTS = {
    "model_semantic_pred": "semantic",
    "model_center_heatmap": "center_heatmap",
    "model_offset_map": "offset_map",
}
# The panoptic label maps the host computes and restores when the graph ends at the dense outputs.
HOST_LABELS = ("panoptic_pred", "semantic_pred", "instance_pred")
CLASSIFICATION_OUTPUTS = ("classes", "probabilities", "logits")
# What a runtime does after the graph (`ExportGraph.host_step`).
HOST_POSTPROCESSING = "panoptic_postprocessing"  # post-process the `HOST_INPUTS`, restore with the label rows/cols
HOST_CLASS_NAMES = "class_names"  # name the `classes` from the export's metadata


@dataclasses.dataclass(frozen=True)
class ExportGraph:
    """A traced graph for a converter, and what a runtime needs to know to use it.

    Attributes:
        function: The `tf.function`, `images` uint8 [N, H, W, 3] -> dict of tensors, traced
            once for its input signature (`concrete_function`).
        batch_size: N, or None for any number of images per call.
        input_size: (H, W), None where any size is accepted.
        host_step: What the runtime completes after the graph: None, HOST_POSTPROCESSING or
            HOST_CLASS_NAMES.
        movable_postprocessing: Whether the graph holds a post-processing that
            `export_graph(..., host_postprocessing=True)` leaves to the host instead.
    """

    function: object
    batch_size: int | None
    input_size: tuple
    host_step: str | None = None
    movable_postprocessing: bool = False

    @property
    def concrete_function(self):
        """The traced graph."""
        return self.function.get_concrete_function()

    @property
    def input_spec(self):
        """The `tf.TensorSpec` of `images`."""
        return self.function.input_signature[0]

    @property
    def output_names(self):
        """The names of the graph's outputs, in the order of its flat outputs (sorted)."""
        return sorted(self.concrete_function.structured_outputs)


def export_graph(module, batch_size=1, input_size=(None, None), host_postprocessing=False):
    """Traces a serving module's `serving_default` work for a converter.

    Args:
        module: A `PanopticServingModule`, `SemanticServingModule` or
            `ClassificationServingModule`.
        batch_size: Images per call, N >= 1; None for any number.
        input_size: (H, W) of the input images; None (per side) for any size.
        host_postprocessing: End a panoptic graph at the dense outputs (see the
            module docstring); the other modules have no post-processing to move.

    Returns:
        An `ExportGraph`.

    Raises:
        ValueError: If `batch_size` or `input_size` is not positive.
        TypeError: If `module` is not one of those serving modules.
    """
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1 (or None: any), got {batch_size}.")
    batch_size = None if batch_size is None else int(batch_size)
    input_size = tuple(None if side is None else int(side) for side in input_size)
    if len(input_size) != 2 or any(side is not None and side < 1 for side in input_size):
        raise ValueError(f"input_size must be two positive sides (or None), got {input_size}.")
    movable = isinstance(module, PanopticServingModule)
    host_postprocessing = bool(host_postprocessing) and movable
    if isinstance(module, ClassificationServingModule):
        body, host_step = (lambda images: _classify(module, images)), HOST_CLASS_NAMES
    elif isinstance(module, (PanopticServingModule, SemanticServingModule)):
        body = lambda images: _segment(module, images, host_postprocessing)  # noqa: E731
        host_step = HOST_POSTPROCESSING if host_postprocessing else None
    else:
        raise TypeError(f"No export graph for a {type(module).__name__}.")
    spec = tf.TensorSpec([batch_size, *input_size, 3], tf.uint8, name=IMAGES)
    with runtime_settings(max_im2col_elements=None, max_chunk_logits=None):
        function = tf.function(body, input_signature=[spec])
        function.get_concrete_function()
    return ExportGraph(function, batch_size, input_size, host_step, movable and not host_postprocessing)


def _classify(module, images):
    """Top-k classes of each image, with the classifier's evaluation pre-processing."""
    prepared = module.preprocess(images)  # [N, s, s, 3]
    outputs = module.classify(prepared)
    return {name: outputs[name] for name in CLASSIFICATION_OUTPUTS}


def _segment(module, images, host_postprocessing):
    """Dense predictions restored to the input size (see `export_graph`).

    Semantic classes are `tf.argmax` of the probabilities, as `panoptic_postprocess` takes them:
    `keras.ops.argmax` (in `predict_semantic`) adds a BitwiseAnd for -0.0, which TFLite lacks,
    and softmax probabilities are never -0.0, so both give the same classes.
    """
    prepared, meta = module.preprocessor.preprocess_image(images)  # [N, h, w, 3]
    rows = _nearest_sources(meta["valid_size"][0], meta["original_size"][0])  # [H]
    cols = _nearest_sources(meta["valid_size"][1], meta["original_size"][1])  # [W]
    if isinstance(module, PanopticServingModule) and not host_postprocessing:
        predictions, kinds = module.predict(prepared), PANOPTIC_OUTPUTS
    else:
        dense = predict_dense(module.model, prepared, module.scales, module.flip)
        semantic_pred = tf.argmax(dense["semantic_probs"], axis=-1, output_type=tf.int32)  # [N, h, w]
        if host_postprocessing:
            restored = {name: module.preprocessor.restore_batch(dense[name], meta, kind=kind)
                        for name, kind in PANOPTIC_OUTPUTS.items() if kind != "label"}
            model_maps = {"model_semantic_pred": semantic_pred, "model_center_heatmap": dense["center_heatmap"],
                          "model_offset_map": dense["offset_map"]}
            return {**restored, **model_maps, LABEL_ROWS: rows, LABEL_COLS: cols}
        predictions, kinds = {**dense, "semantic_pred": semantic_pred}, SEMANTIC_OUTPUTS
    return {
        name: _gather_labels(predictions[name], rows, cols) if kind == "label"
        else module.preprocessor.restore_batch(predictions[name], meta, kind=kind)
        for name, kind in kinds.items()
    }


def _nearest_sources(valid_length, original_length):
    """int32 [original_length]: the row (column) of the valid region that nearest-neighbour resizing reads.

    TensorFlow's own resize of a ramp of indices, so the mapping is exactly that of
    `tf.image.resize(..., method="nearest")` in `InferencePreprocessor.restore`.
    """
    ramp = tf.cast(tf.range(valid_length), tf.float32)[tf.newaxis, :, tf.newaxis, tf.newaxis]  # [1, v, 1, 1]
    size = tf.stack([original_length, 1])
    return tf.cast(tf.image.resize(ramp, size, method="nearest")[0, :, 0, 0], tf.int32)


def _gather_labels(labels, rows, cols):
    """Label maps [N, h, w] restored to [N, H, W] by their nearest-neighbour source `rows` [H] and `cols` [W]."""
    return tf.gather(tf.gather(labels, rows, axis=1), cols, axis=2)

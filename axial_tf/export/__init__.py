"""Export for TF Serving (SavedModel), ONNX, OpenVINO and LiteRT, and prediction from exports or checkpoints.

Typical use (what `tools/export.py` runs):

    from axial_tf.export import export_model
    from axial_tf.experiment.config import load_config

    module, saved_model_dir = export_model(
        "exports/demo", config=load_config("configs/demo/panoptic_shapes.yaml"), model_dir="runs/demo"
    )  # writes exports/demo/<next version>, atomically

The SavedModel has two signatures: `serving_default` (uint8 images
[B, H, W, 3]) and `serving_encoded` (JPEG/PNG/GIF/BMP/WebP bytes [B]); see
each task's serving module (`axial_tf.experiment.serving`: `PanopticServingModule`,
`SemanticServingModule`, `ClassificationServingModule`) for their outputs.
Both check their input at run time and refuse requests over `max_megapixels`
before decoding. Pre- and post-processing run inside the graph with the
functions evaluation uses, and the graph holds only stock TensorFlow ops.

The same graph, without the request checks, converts to ONNX, OpenVINO and
LiteRT (`export_converted`, `tools/export.py --format`; see `formats.py` for
where each format runs the post-processing), and `load_exported(path)` runs
any export in its runtime with the outputs of `serving_default`:

    from axial_tf.export import export_converted, load_exported

    export_converted("exports/demo_onnx", "onnx", config=config, model_dir="runs/demo")
    outputs = load_exported("exports/demo_onnx")(images)  # uint8 [B, H, W, 3] -> dict of NumPy arrays
"""

from axial_tf.utils.optional_imports import tensorflow_installed, tensorflow_needed

if not tensorflow_installed():
    raise tensorflow_needed("axial_tf.export (SavedModel, ONNX, OpenVINO and LiteRT export)")

from axial_tf.experiment.serving.base import (
    DEFAULT_MAX_MEGAPIXELS,
    IMAGE_BYTES_INPUT,
    IMAGES_INPUT,
    SERVING_DEFAULT,
    SERVING_ENCODED,
    ServingModule,
)
from axial_tf.experiment.serving.classification import ClassificationServingModule
from axial_tf.experiment.serving.panoptic import PanopticServingModule
from axial_tf.experiment.serving.semantic import SemanticServingModule
from axial_tf.export.converted import (
    check_converted_output_dir,
    default_input_size,
    export_converted,
    write_converted,
    write_graph,
)
from axial_tf.export.exporter import (
    build_serving_module,
    check_model_source,
    export_info,
    export_model,
    signature_contract,
)
from axial_tf.export.formats import CONVERTED_FORMATS, FORMAT_NAMES, SAVED_MODEL, ConversionError, ExportFormat
from axial_tf.export.graphs import ExportGraph, export_graph
from axial_tf.export.litert import TFLITE_OUTPUTS, convert_classifier_to_tflite, run_tflite_classifier
from axial_tf.export.predictor import (
    DOWNSCALE_MAX_FACTOR,
    IMAGE_EXTENSIONS,
    ImageTooLargeError,
    Predictor,
    fitted_size,
    list_images,
    output_stems,
    read_downscaled_image_file,
    read_image_file,
)
from axial_tf.export.saved_model import (
    EXPORT_INFO_FILENAME,
    check_output_dir,
    export_info_path,
    holds_model_dir,
    holds_versions,
    is_saved_model,
    read_export_info,
    resolve_export_dir,
    resolve_saved_model,
    save_serving_module,
    saved_model_op_types,
    staged_export,
    write_saved_model,
)
from axial_tf.export.runtimes import ExportedModel, load_exported

__all__ = [
    "CONVERTED_FORMATS",
    "ClassificationServingModule",
    "ConversionError",
    "DEFAULT_MAX_MEGAPIXELS",
    "DOWNSCALE_MAX_FACTOR",
    "EXPORT_INFO_FILENAME",
    "ExportFormat",
    "ExportGraph",
    "ExportedModel",
    "FORMAT_NAMES",
    "IMAGES_INPUT",
    "IMAGE_BYTES_INPUT",
    "IMAGE_EXTENSIONS",
    "ImageTooLargeError",
    "PanopticServingModule",
    "Predictor",
    "SERVING_DEFAULT",
    "SAVED_MODEL",
    "SERVING_ENCODED",
    "SemanticServingModule",
    "ServingModule",
    "TFLITE_OUTPUTS",
    "build_serving_module",
    "check_converted_output_dir",
    "check_model_source",
    "check_output_dir",
    "convert_classifier_to_tflite",
    "default_input_size",
    "export_converted",
    "export_graph",
    "export_info",
    "export_info_path",
    "export_model",
    "fitted_size",
    "holds_model_dir",
    "holds_versions",
    "is_saved_model",
    "list_images",
    "load_exported",
    "output_stems",
    "read_downscaled_image_file",
    "read_export_info",
    "read_image_file",
    "resolve_export_dir",
    "resolve_saved_model",
    "run_tflite_classifier",
    "save_serving_module",
    "saved_model_op_types",
    "signature_contract",
    "staged_export",
    "write_converted",
    "write_graph",
    "write_saved_model",
]

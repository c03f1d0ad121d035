"""Export for TF Serving (SavedModel), TFLite (classifier) and the shared inference set-up.

Typical use (what `tools/export.py` runs):

    from axial_tf.export import export_model
    from axial_tf.training.config import load_config

    module, saved_model_dir = export_model(
        "exports/demo", config=load_config("configs/demo/panoptic_shapes.yaml"), model_dir="runs/demo"
    )  # writes exports/demo/<next version>, atomically

The SavedModel has two signatures: `serving_default` (uint8 images
[B, H, W, 3]) and `serving_encoded` (JPEG/PNG/GIF/BMP/WebP bytes [B]); see
`PanopticServingModule` and `ClassificationServingModule` for their outputs.
Both check their input at run time and refuse requests over `max_megapixels`
before decoding. Pre- and post-processing run inside the graph with the
functions evaluation uses, and the graph holds only stock TensorFlow ops.
"""

from axial_tf.data.inference import ENCODED_IMAGE_FORMATS, decode_image, encoded_image_header

from axial_tf.export.classification import ClassificationServingModule
from axial_tf.utils.errors import error_line
from axial_tf.export.exporter import (
    build_serving_module,
    check_model_source,
    export_info,
    export_model,
    is_classifier,
    label_space_info,
    serving_module_from_config,
    signature_contract,
)
from axial_tf.export.loading import (
    dataset_info_from_config,
    experiment_config_for,
    inference_preprocessor_from_config,
    load_keras_model,
    load_model,
    postprocess_options_from_config,
    resolve_checkpoint,
    restore_weights,
)
from axial_tf.export.panoptic import IMAGE_SIZE_OUTPUT, PANOPTIC_OUTPUTS, PanopticServingModule
from axial_tf.export.predictor import (
    DOWNSCALE_MAX_FACTOR,
    IMAGE_EXTENSIONS,
    LABEL_FORMATS,
    ImageTooLargeError,
    Predictor,
    classification_record,
    fitted_size,
    list_images,
    output_stems,
    read_downscaled_image_file,
    read_image_file,
    write_panoptic_prediction,
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
from axial_tf.export.serving import (
    DEFAULT_MAX_MEGAPIXELS,
    IMAGE_BYTES_INPUT,
    IMAGES_INPUT,
    SERVING_DEFAULT,
    SERVING_ENCODED,
    ServingModule,
    checked_image_bytes,
    checked_images,
    max_pixels_from_megapixels,
)
from axial_tf.export.tflite import (
    TFLITE_OUTPUTS,
    TFLiteConversionError,
    convert_classifier_to_tflite,
    run_tflite_classifier,
)

__all__ = [
    "ClassificationServingModule",
    "DEFAULT_MAX_MEGAPIXELS",
    "DOWNSCALE_MAX_FACTOR",
    "ENCODED_IMAGE_FORMATS",
    "EXPORT_INFO_FILENAME",
    "IMAGES_INPUT",
    "IMAGE_BYTES_INPUT",
    "IMAGE_EXTENSIONS",
    "IMAGE_SIZE_OUTPUT",
    "ImageTooLargeError",
    "LABEL_FORMATS",
    "PANOPTIC_OUTPUTS",
    "PanopticServingModule",
    "Predictor",
    "SERVING_DEFAULT",
    "SERVING_ENCODED",
    "ServingModule",
    "TFLITE_OUTPUTS",
    "TFLiteConversionError",
    "build_serving_module",
    "check_model_source",
    "check_output_dir",
    "checked_image_bytes",
    "checked_images",
    "classification_record",
    "convert_classifier_to_tflite",
    "dataset_info_from_config",
    "decode_image",
    "encoded_image_header",
    "error_line",
    "experiment_config_for",
    "export_info",
    "export_info_path",
    "export_model",
    "fitted_size",
    "holds_model_dir",
    "holds_versions",
    "inference_preprocessor_from_config",
    "is_classifier",
    "is_saved_model",
    "label_space_info",
    "list_images",
    "load_keras_model",
    "load_model",
    "max_pixels_from_megapixels",
    "output_stems",
    "postprocess_options_from_config",
    "read_downscaled_image_file",
    "read_export_info",
    "read_image_file",
    "resolve_checkpoint",
    "resolve_export_dir",
    "resolve_saved_model",
    "restore_weights",
    "run_tflite_classifier",
    "save_serving_module",
    "saved_model_op_types",
    "serving_module_from_config",
    "signature_contract",
    "staged_export",
    "write_panoptic_prediction",
    "write_saved_model",
]

"""Export for TF Serving (SavedModel), TFLite (classifier) and the shared inference set-up.

Typical use (what `tools/export.py` runs):

    from axial_tf.export import export_model
    from axial_tf.training.config import load_config

    export_model("exports/demo/1", config=load_config("configs/demo/panoptic_shapes.yaml"),
                 model_dir="runs/demo")

The SavedModel has two signatures: `serving_default` (uint8 images
[B, H, W, 3]) and `serving_encoded` (JPEG/PNG bytes [B]); see
`PanopticServingModule` and `ClassificationServingModule` for their outputs.
Pre- and post-processing run inside the graph with the functions evaluation
uses, and the graph holds only stock TensorFlow ops.
"""

from axial_tf.export.classification import ClassificationServingModule
from axial_tf.export.exporter import (
    build_serving_module,
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
    IMAGE_EXTENSIONS,
    LABEL_FORMATS,
    Predictor,
    classification_record,
    list_images,
    output_stems,
    read_image_file,
    write_panoptic_prediction,
)
from axial_tf.export.saved_model import (
    EXPORT_INFO_FILENAME,
    export_info_path,
    read_export_info,
    save_serving_module,
    saved_model_op_types,
)
from axial_tf.export.serving import (
    IMAGE_BYTES_INPUT,
    IMAGES_INPUT,
    SERVING_DEFAULT,
    SERVING_ENCODED,
    ServingModule,
    decode_image,
)
from axial_tf.export.tflite import (
    TFLITE_OUTPUTS,
    TFLiteConversionError,
    convert_classifier_to_tflite,
    run_tflite_classifier,
)

__all__ = [
    "ClassificationServingModule",
    "EXPORT_INFO_FILENAME",
    "IMAGES_INPUT",
    "IMAGE_BYTES_INPUT",
    "IMAGE_EXTENSIONS",
    "IMAGE_SIZE_OUTPUT",
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
    "classification_record",
    "convert_classifier_to_tflite",
    "dataset_info_from_config",
    "decode_image",
    "experiment_config_for",
    "export_info",
    "export_info_path",
    "export_model",
    "inference_preprocessor_from_config",
    "is_classifier",
    "label_space_info",
    "list_images",
    "load_keras_model",
    "load_model",
    "output_stems",
    "postprocess_options_from_config",
    "read_export_info",
    "read_image_file",
    "resolve_checkpoint",
    "restore_weights",
    "run_tflite_classifier",
    "save_serving_module",
    "saved_model_op_types",
    "serving_module_from_config",
    "signature_contract",
    "write_panoptic_prediction",
]

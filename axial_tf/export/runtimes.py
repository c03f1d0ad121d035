"""Running an export in its own runtime: `load_exported(path)` for SavedModel, ONNX, OpenVINO and LiteRT files.

    from axial_tf.export import load_exported

    model = load_exported("exports/demo_onnx")         # or .../model.onnx, model.xml, model.tflite, a SavedModel
    outputs = model(images)                            # uint8 [B, H, W, 3] -> dict of NumPy arrays
    outputs["panoptic_pred"]                           # int32 [B, H, W], as `serving_default` returns it
    model.format, model.info["class_names"]            # "onnx", the label space of the export

Whatever the format, the call returns the outputs of the SavedModel's `serving_default`
signature for the same images (panoptic: `PANOPTIC_OUTPUTS`; semantic: `SEMANTIC_OUTPUTS`;
classification: classes, probabilities, class_names, logits), to the converters' round-off:
where the graph ends at the dense outputs (ONNX), the panoptic post-processing runs here, in
NumPy (`panoptic_postprocess_numpy`), and its label maps are restored to the input size with the
graph's nearest-neighbour source rows and columns. A converted graph takes any number of images
per call, or a fixed number (`batch_size` at export): a batch is then run that many at a time
(the last part padded with copies of its last image, whose outputs are dropped).

`precision="bfloat16"` runs an OpenVINO export with the CPU plugin's bfloat16 inference hint,
and a SavedModel in a TensorFlow session whose Grappler rewrites it with oneDNN bfloat16
auto-mixed precision (that model only; TF Serving sets the same rewrite option in its platform
config's `session_config`). Both are fast only on CPUs with AVX512-BF16 or AMX, and change
results by bfloat16's round-off (BENCHMARKS.md, "CPU serving", counts the panoptic pixels that
change). ONNX Runtime's and LiteRT's CPU kernels have no such option.
"""

import json
import os

import numpy as np
import tensorflow as tf

from axial_tf.export.formats import CONVERTED_FORMATS, ONNX, OPENVINO, SAVED_MODEL
from axial_tf.export.graphs import (
    HOST_CLASS_NAMES,
    HOST_INPUTS,
    HOST_LABELS,
    HOST_POSTPROCESSING,
    LABEL_COLS,
    LABEL_ROWS,
)
from axial_tf.export.saved_model import (
    EXPORT_INFO_FILENAME,
    holds_versions,
    is_saved_model,
    read_export_info,
    resolve_saved_model,
)
from axial_tf.experiment.serving.base import IMAGES_INPUT, SERVING_DEFAULT
from axial_tf.postprocessing.host import panoptic_postprocess_numpy
from axial_tf.postprocessing.options import PostProcessOptions

PRECISIONS = ("float32", "bfloat16")
# The formats whose runtime can compute in bfloat16 on request.
_BFLOAT16_FORMATS = (SAVED_MODEL, OPENVINO.name)
_EXPECTED = (
    "expected a .onnx, OpenVINO .xml or .tflite file, a folder holding one with axial_tf_export.json "
    "(tools/export.py --format onnx|openvino|litert), or a SavedModel folder"
)


class ExportedModel:
    """An export loaded in its runtime; calling it gives the `serving_default` outputs.

    Attributes:
        path: The model file (or SavedModel folder).
        format: "saved_model", "onnx", "openvino" or "litert".
        precision: "float32" or "bfloat16": what the runtime computes in (OpenVINO: what its CPU
            plugin chose; it keeps float32 on CPUs without bfloat16).
        info: The export's metadata (`axial_tf_export.json`): task, label space, pre- and
            post-processing, and for converted formats `graph` (batch size or None, input size,
            what the host completes after the graph: `host_step`, output names).

    Args:
        path, export_format, info: As the attributes.
        session: The runtime: `.run(uint8 [N, H, W, 3])` -> dict of the graph's outputs.
    """

    def __init__(self, path, export_format, info, session):
        self.path = path
        self.format = export_format
        self.info = info
        self.precision = getattr(session, "precision", "float32")
        self._session = session
        graph = info.get("graph", {})
        self._batch_size = graph.get("batch_size")
        self._input_size = tuple(graph.get("input_size", (None, None)))
        self._host_step = graph.get("host_step")

    @property
    def task(self):
        """"panoptic", "semantic" or "classification"."""
        return self.info["task"]

    def __call__(self, images):
        """The `serving_default` outputs of a batch of same-sized images.

        Args:
            images: uint8 [B, H, W, 3] RGB, or float in [0, 255] (rounded to uint8, which is what
                the serving signature takes).

        Returns:
            Dict of NumPy arrays with a leading batch axis B.

        Raises:
            ValueError: If `images` is not [B, H, W, 3] with B, H, W >= 1, holds values outside
                [0, 255], or is not of the size a fixed-size export takes.
        """
        images = self._checked(images)
        if self._batch_size is None:
            return self._finish(self._session.run(images))
        parts = []
        for start in range(0, len(images), self._batch_size):
            part = images[start : start + self._batch_size]
            padding = self._batch_size - len(part)
            padded = np.concatenate([part, np.repeat(part[-1:], padding, axis=0)]) if padding else part
            parts.append({name: value[: len(part)] for name, value in self._finish(self._session.run(padded)).items()})
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def _checked(self, images):
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or 0 in images.shape:
            raise ValueError(f"images must be [B, H, W, 3] with B, H, W >= 1, got shape {images.shape}.")
        if images.dtype != np.uint8:
            if images.size and (np.min(images) < 0 or np.max(images) > 255):
                raise ValueError(f"images must hold values in [0, 255], got {np.min(images)}..{np.max(images)}.")
            images = np.rint(images).astype(np.uint8)
        expected = self._input_size
        for side, size, fixed in zip(("height", "width"), images.shape[1:3], expected):
            if fixed is not None and size != fixed:
                raise ValueError(
                    f"{self.path} takes images of {expected[0]}x{expected[1]} (fixed at export: --input_size), "
                    f"got {images.shape[1]}x{images.shape[2]} ({side} {size})."
                )
        return images

    def _finish(self, outputs):
        """The serving outputs from one run's graph outputs."""
        if self._host_step == HOST_POSTPROCESSING:
            return self._postprocess(outputs)
        if self._host_step == HOST_CLASS_NAMES:
            names = np.array([name.encode() for name in self.info["class_names"]], dtype=object)
            return {**outputs, "class_names": names[outputs["classes"]]}
        return outputs

    def _postprocess(self, outputs):
        """Panoptic post-processing on the host, restored to the input size."""
        options = PostProcessOptions.from_dict(self.info["postprocessing"])
        arguments = {argument: outputs[name] for name, argument in HOST_INPUTS.items()}
        panoptic = panoptic_postprocess_numpy(options=options, **arguments)
        rows, cols = outputs[LABEL_ROWS], outputs[LABEL_COLS]
        dense = {name: value for name, value in outputs.items() if name not in (*HOST_INPUTS, LABEL_ROWS, LABEL_COLS)}
        return {**dense, **{name: panoptic[name][:, rows][:, :, cols] for name in HOST_LABELS}}


def numpy_signature(function):
    """A serving signature as a function of a uint8 NumPy batch, returning NumPy arrays."""

    def predict_batch(images):
        return {name: value.numpy() for name, value in function(**{IMAGES_INPUT: tf.constant(images)}).items()}

    return predict_batch


class _SavedModelSession:
    """The `serving_default` signature of a SavedModel, in float32."""

    precision = "float32"

    def __init__(self, path):
        self._loaded = tf.saved_model.load(path)  # keeps the signature's variables alive
        self.run = numpy_signature(self._loaded.signatures[SERVING_DEFAULT])


class _BFloat16SavedModelSession:
    """The `serving_default` signature of a SavedModel in a session whose Grappler rewrites it to bfloat16.

    Grappler's oneDNN auto-mixed precision is a `ConfigProto` rewrite option: set on this
    session's config, not on the process (`tf.config.optimizer`), it changes this model only.
    The session is how TF Serving runs a SavedModel.
    """

    precision = "bfloat16"

    def __init__(self, path, threads=None):
        from tensorflow.core.protobuf import rewriter_config_pb2

        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads or 0,
                                          inter_op_parallelism_threads=threads or 0)
        rewrites = config.graph_options.rewrite_options
        rewrites.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
        graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=graph, config=config)
        verbosity = tf.get_logger().level
        tf.get_logger().setLevel("ERROR")  # the TF1 loader's deprecation notice
        try:
            with graph.as_default():
                signature = tf.compat.v1.saved_model.load(self._session, ["serve"], path).signature_def[SERVING_DEFAULT]
        finally:
            tf.get_logger().setLevel(verbosity)
        self._images = signature.inputs[IMAGES_INPUT].name
        self._outputs = {name: tensor.name for name, tensor in signature.outputs.items()}

    def run(self, images):
        return self._session.run(self._outputs, {self._images: images})


def _converted_session(export_format, path, info, threads, precision):
    if export_format is ONNX:
        from axial_tf.export.onnx import OnnxSession

        return OnnxSession(path, threads)
    if export_format is OPENVINO:
        from axial_tf.export.openvino import OpenVinoSession

        return OpenVinoSession(info["graph"]["outputs"], path, threads, precision)
    from axial_tf.export.litert import LiteRTSession

    return LiteRTSession(info["graph"]["outputs"], path=path, threads=threads)


def _format_of_file(path):
    """The converted format whose model file has `path`'s suffix, or None."""
    suffix = os.path.splitext(path)[1].lower()
    return next((f for f in CONVERTED_FORMATS.values() if os.path.splitext(f.model_file)[1] == suffix), None)


def _model_file_in(folder):
    """The model file of a converted export folder, or None."""
    present = [f.model_file for f in CONVERTED_FORMATS.values() if os.path.isfile(os.path.join(folder, f.model_file))]
    return os.path.join(folder, present[0]) if len(present) == 1 else None


def read_converted_info(model_file, export_format):
    """The `axial_tf_export.json` beside a converted model file, checked against its format.

    Raises:
        ValueError: If the file is missing or describes another format.
    """
    info_path = os.path.join(os.path.dirname(os.path.abspath(model_file)), EXPORT_INFO_FILENAME)
    if not os.path.isfile(info_path):
        raise ValueError(
            f"{model_file} has no {EXPORT_INFO_FILENAME} beside it (the label space and processing of the export); "
            f"export it with tools/export.py --format {export_format.name}."
        )
    with open(info_path) as stream:
        info = json.load(stream)
    if info.get("format") != export_format.name:
        raise ValueError(f"{info_path} describes a {info.get('format')!r} export, but {model_file} is "
                         f"{export_format.title}.")
    return info


def load_exported(path, threads=None, precision="float32"):
    """Loads an export of `tools/export.py` in its runtime.

    Args:
        path: A `.onnx`, OpenVINO `.xml` or `.tflite` file with `axial_tf_export.json` beside it,
            the folder holding them, or a SavedModel folder (or a serving base folder of versions:
            its highest).
        threads: CPU threads of a converted model's runtime (ONNX Runtime's intra-op threads,
            OpenVINO's `INFERENCE_NUM_THREADS`, LiteRT's interpreter); None: the runtime's default.
            A float32 SavedModel runs on TensorFlow's threads, which are per process
            (`tf.config.threading`); a bfloat16 one in a session with these threads.
        precision: "float32", or "bfloat16" for an OpenVINO export or a SavedModel (see the
            module docstring).

    Returns:
        An `ExportedModel`.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If `path` is not an export (says what it got and what was expected), or its
            model file cannot be read by its runtime, or its runtime has no such `precision`.
        ModuleNotFoundError: If the format's runtime is not installed (one line: the install command).
    """
    path = os.fspath(path)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist.")
    if os.path.isdir(path):
        if is_saved_model(path) or holds_versions(path):
            saved_model_dir = resolve_saved_model(path)
            session = (_BFloat16SavedModelSession(saved_model_dir, threads) if precision == "bfloat16"
                       else _SavedModelSession(saved_model_dir))
            return ExportedModel(saved_model_dir, SAVED_MODEL, read_export_info(saved_model_dir), session)
        model_file = _model_file_in(path)
        if model_file is None:
            entries = ", ".join(sorted(os.listdir(path))[:8]) or "nothing"
            raise ValueError(f"{path} is a folder holding {entries}: not an export; {_EXPECTED}.")
        path = model_file
    export_format = _format_of_file(path)
    if export_format is None:
        raise ValueError(f"{path} is not an exported model; {_EXPECTED}.")
    info = read_converted_info(path, export_format)
    if precision != "float32" and export_format.name not in _BFLOAT16_FORMATS:
        raise ValueError(f"{path}: {export_format.title} runs in float32 only; precision={precision!r} is offered for "
                         f"OpenVINO exports and SavedModels.")
    session = _converted_session(export_format, path, info, threads, precision)
    return ExportedModel(path, export_format.name, info, session)


"""Exports to ONNX, OpenVINO and LiteRT: a folder with the model file(s) and `axial_tf_export.json`, atomically.

    from axial_tf.export import export_converted

    folder = export_converted("exports/demo_onnx", "onnx", config=config, model_dir="runs/demo")

The folder is written next to its target (`.tmp-<name>-<pid>`), checked by loading it in its
runtime and running one batch of zeros, and only then renamed into place: a failed conversion
leaves nothing half-written, and the previous export as it was. `overwrite` replaces an earlier
converted export only (a folder holding nothing but the files these exports write).
"""

import json
import os
import shutil

import numpy as np

import axial_tf
from axial_tf.experiment.serving.base import DEFAULT_MAX_MEGAPIXELS, max_pixels_from_megapixels
from axial_tf.export.exporter import build_serving_module, check_model_source
from axial_tf.export.formats import CONVERTED_FORMATS, ConversionError, converted_format
from axial_tf.export.graphs import export_graph
from axial_tf.export.litert import convert_to_litert
from axial_tf.export.onnx import convert_to_onnx
from axial_tf.export.openvino import convert_to_openvino
from axial_tf.export.runtimes import load_exported
from axial_tf.export.saved_model import EXPORT_FORMAT_VERSION, EXPORT_INFO_FILENAME

_CONVERTERS = {"onnx": convert_to_onnx, "openvino": convert_to_openvino, "litert": convert_to_litert}
# Everything a converted export writes; `overwrite` deletes a folder only if it holds nothing else.
CONVERTED_ENTRIES = frozenset(
    {EXPORT_INFO_FILENAME, *(name for f in CONVERTED_FORMATS.values() for name in f.files)}
)


def check_converted_output_dir(output_dir, overwrite=False):
    """Fails early unless `output_dir` may receive a converted export.

    Args:
        output_dir: The folder to write.
        overwrite: Whether an earlier converted export there may be replaced.

    Raises:
        FileExistsError: If `output_dir` is a file, or holds files and may not be replaced.
    """
    output_dir = os.fspath(output_dir)
    if not os.path.exists(output_dir):
        return
    if not os.path.isdir(output_dir):
        raise FileExistsError(f"Export target {output_dir} is a file, not a folder.")
    entries = set(os.listdir(output_dir))
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(f"Export folder {output_dir} is not empty; pass overwrite=True (--overwrite).")
    foreign = sorted(entries - CONVERTED_ENTRIES)
    if foreign or EXPORT_INFO_FILENAME not in entries:
        shown = ", ".join(foreign) or f"no {EXPORT_INFO_FILENAME}"
        raise FileExistsError(
            f"Refusing to overwrite {output_dir}: it is not an ONNX/OpenVINO/LiteRT export ({shown}); "
            "--overwrite only replaces an earlier one."
        )


def default_input_size(module, export_format, input_size=None):
    """The input size a graph is traced for: `input_size`, else any size, else the model's own.

    A format that takes any size gets (None, None) unless a size is given; LiteRT gets the model
    input size of a dense module (`InferencePreprocessor.size`) or the classifier's square side.
    """
    if input_size is not None:
        return tuple(input_size)
    if export_format.any_input_size:
        return (None, None)
    preprocessor = getattr(module, "preprocessor", None)
    return tuple(preprocessor.size) if preprocessor is not None else (module.image_size, module.image_size)


def write_converted(module, output_dir, export_format, info=None, batch_size=1, input_size=None, overwrite=False,
                    source=None):
    """Converts a serving module's graph and writes it as a checked export folder, atomically.

    Args:
        module: A task's serving module.
        output_dir: The folder to write.
        export_format: "onnx", "openvino" or "litert".
        info: The dataset descriptor (dense tasks: the class names).
        batch_size: Images per call of the graph (default 1); None: any number.
        input_size: (H, W) of the input images; default `default_input_size`.
        overwrite: Replace an earlier converted export at `output_dir`.
        source: What the weights came from (written to the metadata).

    A panoptic graph whose post-processing the format cannot express (an op outside the model's
    layers) is converted again ending at the dense outputs; its post-processing then runs on the
    host, and the metadata says why (`host_postprocessing_because`).

    Returns:
        `output_dir`.

    Raises:
        ConversionError: If the converter cannot express an op (one line: op and layer), or the
            result does not run in its runtime.
        FileExistsError: If `output_dir` may not be written.
        ModuleNotFoundError: If the format's packages are missing (one line: the install command).
    """
    export_format = converted_format(export_format)
    check_converted_output_dir(output_dir, overwrite)
    input_size = default_input_size(module, export_format, input_size)
    graph = export_graph(module, batch_size, input_size, export_format.host_postprocessing)
    metadata = {"axial_tf_version": axial_tf.__version__, "source": source, **module.label_space(info)}
    try:
        return write_graph(graph, output_dir, export_format.name, metadata, overwrite)
    except ConversionError as error:
        if not (graph.movable_postprocessing and error.outside_layers):
            raise
        # The post-processing needs an op the format lacks (OpenVINO: UnsortedSegmentMin, which
        # numbering instances by first appearance takes): the graph ends at the dense outputs.
        graph = export_graph(module, batch_size, input_size, host_postprocessing=True)
        metadata["host_postprocessing_because"] = str(error)
        return write_graph(graph, output_dir, export_format.name, metadata, overwrite)


def write_graph(graph, output_dir, export_format, metadata, overwrite=False):
    """Converts an `ExportGraph` into the folder `output_dir`, with its metadata, checked and atomically.

    The files are written to `.tmp-<name>-<pid>` beside `output_dir`, the export is loaded in its
    runtime and run once on zeros, and the folder is then renamed into place; on any failure the
    temporary folder is deleted and `output_dir` is left as it was.

    Args:
        graph: The `ExportGraph`.
        output_dir: The folder to write.
        export_format: "onnx", "openvino" or "litert".
        metadata: The label space and provenance, written to `axial_tf_export.json` with the
            format and the graph's contract (`graph`: batch size, input size, what the host
            completes, outputs).
        overwrite: Replace an earlier converted export at `output_dir`.

    Returns:
        `output_dir`.
    """
    export_format = converted_format(export_format)
    output_dir = os.fspath(output_dir).rstrip("/") or "/"
    check_converted_output_dir(output_dir, overwrite)
    parent, name = os.path.split(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".tmp-{name}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)  # left by an earlier process with the same pid
    os.makedirs(staging)
    try:
        _CONVERTERS[export_format.name](graph, staging)
        contract = {
            "batch_size": graph.batch_size,
            "input_size": list(graph.input_size),
            "host_step": graph.host_step,
            "outputs": graph.output_names,
        }
        described = {"format_version": EXPORT_FORMAT_VERSION, "format": export_format.name,
                     "model_file": export_format.model_file, **metadata, "graph": contract}
        with open(os.path.join(staging, EXPORT_INFO_FILENAME), "w") as stream:
            json.dump(described, stream, indent=2, sort_keys=True)
        _check_runs(staging, graph)
        check_converted_output_dir(output_dir, overwrite)  # another process may have written it meanwhile
        _move_into_place(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def _check_runs(folder, graph):
    """Runs the written export once on zeros (2 images where any batch is taken); a `ConversionError` if it cannot."""
    height, width = (side or 32 for side in graph.input_size)
    model = load_exported(folder)
    try:
        model(np.zeros([graph.batch_size or 2, height, width, 3], np.uint8))
    except Exception as error:  # each runtime raises its own error types
        text = str(error).strip().splitlines()
        raise ConversionError(
            f"The {model.format} export converts but its runtime cannot run it: {text[0] if text else error!r}"
        ) from None


def _move_into_place(staging, output_dir):
    """Renames `staging` to `output_dir`; an existing `output_dir` is set aside and deleted once that worked."""
    if not os.path.exists(output_dir):
        os.rename(staging, output_dir)
        return
    parent, name = os.path.split(os.path.abspath(output_dir))
    aside = os.path.join(parent, f".old-{name}-{os.getpid()}")
    os.rename(output_dir, aside)
    try:
        os.rename(staging, output_dir)
    except BaseException:
        os.rename(aside, output_dir)
        raise
    shutil.rmtree(aside)


def export_converted(
    output_dir,
    export_format,
    config=None,
    model_dir=None,
    checkpoint=None,
    keras_model=None,
    top_k=5,
    image_size=None,
    batch_size=1,
    input_size=None,
    overwrite=False,
    max_megapixels=DEFAULT_MAX_MEGAPIXELS,
):
    """Exports a trained model to ONNX, OpenVINO or LiteRT (what `tools/export.py --format` runs).

    Args:
        output_dir: The folder to write (model file(s) and `axial_tf_export.json`).
        export_format: "onnx", "openvino" or "litert".
        config, model_dir, checkpoint, keras_model, top_k, image_size, max_megapixels: As for
            `build_serving_module`.
        batch_size, input_size, overwrite: As for `write_converted`.

    Returns:
        A tuple `(module, output_dir)`.
    """
    converted_format(export_format)
    check_converted_output_dir(output_dir, overwrite)  # everything that can be checked before loading the model
    check_model_source(model_dir=model_dir, checkpoint=checkpoint, keras_model=keras_model)
    max_pixels_from_megapixels(max_megapixels)
    module, info = build_serving_module(
        config, model_dir=model_dir, checkpoint=checkpoint, keras_model=keras_model, top_k=top_k,
        image_size=image_size, max_megapixels=max_megapixels,
    )
    source = str(model_dir or checkpoint or keras_model)
    write_converted(module, output_dir, export_format, info=info, batch_size=batch_size, input_size=input_size,
                    overwrite=overwrite, source=source)
    return module, os.fspath(output_dir)

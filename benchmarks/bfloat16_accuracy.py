"""bfloat16 serving accuracy: PQ, SQ, RQ and mIoU of one trained model's exports in float32 and bfloat16.

    ./run demo && python benchmarks/bfloat16_accuracy.py                # the demo's run, runs/demo
    python benchmarks/bfloat16_accuracy.py --model_dir runs/cityscapes  # any trained panoptic run

The serving benchmark (`serving_speed.py`) times random-weight models, whose near-uniform logits
make any round-off flip labels; the accuracy cost of bfloat16 needs trained weights. This script
exports the run's latest checkpoint as a SavedModel and as an OpenVINO folder (in a temporary
folder), runs the evaluation split through `load_exported(..., precision=...)` in float32 and in
bfloat16, and scores each against the ground truth with `PanopticEvaluator` (the dataset's thing
classes, label divisor and ignore label). It also counts the pixels whose panoptic label differs
from the same format's float32 prediction. Writes benchmarks/results/bfloat16_accuracy.json, which
`report.py` renders.
"""

import argparse
import datetime
import json
import os
import pathlib
import sys
import tempfile

import numpy as np
from bench_utils import REPO_ROOT, setup_tensorflow, versions

RESULT = REPO_ROOT / "benchmarks" / "results" / "bfloat16_accuracy.json"
FORMATS = ("saved_model", "openvino")
PRECISIONS = ("float32", "bfloat16")


def evaluation_examples(config):
    """The evaluation split's (image uint8 [H, W, 3], ground-truth panoptic [H, W]) pairs."""
    from axial_tf import data
    from axial_tf.data import records
    from axial_tf.experiment.builders import builder_from_config

    split = data.read_split(data.prepare(builder_from_config(config)), config.data.eval_split)
    return [(example[records.IMAGE_KEY], example[records.PANOPTIC_LABEL_KEY]) for example in split.as_numpy_iterator()]


def export_both(config, model_dir, directory):
    """SavedModel and OpenVINO exports of the run's latest checkpoint; {format: path}."""
    from axial_tf.export import export_converted, export_model

    _, saved_model = export_model(os.path.join(directory, "saved_model"), config=config, model_dir=model_dir)
    _, openvino = export_converted(os.path.join(directory, "openvino"), "openvino", config=config, model_dir=model_dir)
    return {"saved_model": saved_model, "openvino": openvino}


def score(model, examples, info):
    """PQ/SQ/RQ/mIoU of `model`'s panoptic maps on `examples`, and the maps themselves."""
    from axial_tf.metrics import PanopticEvaluator

    evaluator = PanopticEvaluator(len(info.class_names), info.thing_class_ids, label_divisor=info.label_divisor,
                                  ignore_label=info.ignore_label)
    predictions = []
    for image, groundtruth in examples:
        panoptic = model(image[np.newaxis])["panoptic_pred"]  # [1, H, W]
        evaluator.update_state(groundtruth[np.newaxis], panoptic)
        predictions.append(panoptic[0])
    report = evaluator.report()
    return {key: float(report[key]) for key in ("pq", "sq", "rq", "miou")}, predictions


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", default=str(REPO_ROOT / "runs" / "demo"), help="A training run (config.yaml).")
    parser.add_argument("--output", default=str(RESULT))
    args = parser.parse_args()
    setup_tensorflow()
    from axial_tf.experiment.config import experiment_config_for
    from axial_tf.experiment.tasks import task_for_config
    from axial_tf.export import load_exported

    if not os.path.isfile(os.path.join(args.model_dir, "config.yaml")):
        sys.exit(f"error: {args.model_dir} holds no config.yaml: train it first (./run demo writes runs/demo).")
    config = experiment_config_for(None, args.model_dir, [])
    info = task_for_config(config).info
    examples = evaluation_examples(config)
    started = datetime.datetime.now()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        exports = export_both(config, args.model_dir, directory)
        for export_format, path in exports.items():
            float32_maps = None
            for precision in PRECISIONS:
                model = load_exported(path, threads=2, precision=precision)
                metrics, maps = score(model, examples, info)
                float32_maps = maps if precision == "float32" else float32_maps
                differing = sum(int(np.sum(a != b)) for a, b in zip(maps, float32_maps))
                rows.append({"format": export_format, "precision": precision, "precision_used": model.precision,
                             **metrics, "pixels_differing_from_float32": differing,
                             "pixels": sum(int(m.size) for m in maps)})
                print(rows[-1])
    result = {
        "started": started.isoformat(), "model_dir": os.path.relpath(args.model_dir, REPO_ROOT),
        "command": " ".join(["python", "benchmarks/bfloat16_accuracy.py", *sys.argv[1:]]),
        "dataset": info.name, "split": config.data.eval_split, "images": len(examples),
        "versions": versions(), "rows": rows,
    }
    pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

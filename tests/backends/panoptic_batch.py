"""Writes one training batch of the demo experiment to an .npz, for the TensorFlow-free tests.

Run under the TensorFlow interpreter (the backend environment has no TensorFlow):

    .venv/bin/python tests/backends/panoptic_batch.py OUT.npz --batch_size 4 --crop_size 65 65

The batch comes from the existing pipeline, unchanged: the demo config
(configs/demo/panoptic_shapes.yaml) with the `tiny` panoptic_shapes build, read by
`PanopticTask.train_dataset_fn` (augmentation, crop, then `PanopticTargetGenerator` with the
demo's center sigma and small-instance area). The .npz holds `image` float32 [B, h, w, 3] in
[0, 255], every target of the pipeline (`semantic_label`, `center_heatmap`, `offset_map`,
`semantic_weights`, `center_weights`, `offset_weights`, `thing_mask`, `crowd_mask`,
`panoptic_label`) and `num_classes` (a scalar).
"""

import argparse
import tempfile

import axial_tf  # noqa: F401  (before TensorFlow: sets the oneDNN default)
import numpy as np

from axial_tf.experiment.config import load_config
from axial_tf.experiment.config import shipped_config
from axial_tf.experiment.tasks import task_for_config


def panoptic_batch(batch_size, crop_size, data_dir):
    """The first training batch of the demo experiment on the tiny dataset, as numpy arrays."""
    config = load_config(
        shipped_config("demo/panoptic_shapes.yaml"),
        overrides=[
            "data.builder_options={config: tiny}",
            f"data.data_dir={data_dir}",
            f"data.crop_size=[{crop_size[0]}, {crop_size[1]}]",
            "data.cache=false",
        ],
    )
    task = task_for_config(config)
    dataset = task.train_dataset_fn(batch_size)()
    batch = {name: value.numpy() for name, value in next(iter(dataset)).items()}
    batch["num_classes"] = np.int32(config.model.num_classes)
    return batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="the .npz file to write")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--crop_size", type=int, nargs=2, default=(65, 65), metavar=("H", "W"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="axial_tf_tfds_") as data_dir:
        batch = panoptic_batch(args.batch_size, args.crop_size, data_dir)
    np.savez(args.output, **batch)


if __name__ == "__main__":
    main()

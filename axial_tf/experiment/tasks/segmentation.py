"""What the dense tasks share: panoptic datasets in, per-pixel maps out.

The panoptic and semantic tasks read the same panoptic datasets through the same pipelines
(training crops with the Panoptic-DeepLab targets, evaluation images resized to
`data.crop_size`), draw the same TensorBoard picture and write label-map PNGs.
"""

import tensorflow as tf

from axial_tf import data
from axial_tf.experiment import builders
from axial_tf.experiment.tasks.base import Task
from axial_tf.utils.visualization import class_palette


class SegmentationTask(Task):
    """Base of the tasks trained on panoptic datasets (`PanopticTask`, `SemanticTask`)."""

    draws_overlays = True

    def train_dataset_fn(self, global_batch_size):
        c = self.config
        target_generator = data.default_target_generator(
            self.info,
            sigma=c.losses.center_sigma,
            small_instance_area=c.losses.small_instance_area,
            small_instance_weight=c.losses.small_instance_weight,
        )
        return data.panoptic_train_dataset_fn(
            self.builder, c.data.train_split, self.info, global_batch_size,
            crop_size=tuple(c.data.crop_size), seed=c.training.seed,
            augmentation=builders.augmentation_from_config(c.data.augmentation),
            target_generator=target_generator, shuffle_buffer_size=c.data.shuffle_buffer_size, cache=c.data.cache,
        )

    def eval_dataset_fn(self, global_batch_size, split=None):
        return data.panoptic_eval_dataset_fn(
            self.builder, split or self.config.data.eval_split, self.info, global_batch_size,
            builders.inference_preprocessor_from_config(self.config),
        )

    def summary_image(self, batch, predictions):
        """Image | semantic prediction side by side, uint8 [1, H, 2W, 3], of the first example."""
        image = tf.cast(tf.clip_by_value(batch["image"], 0, 255), tf.uint8)
        palette = tf.constant(class_palette(256), tf.uint8)
        colours = tf.gather(palette, tf.clip_by_value(predictions["semantic_pred"], 0, 255))
        return tf.concat([image, colours], axis=2)

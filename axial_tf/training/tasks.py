"""Tasks: what differs between panoptic segmentation and classification in training.

A task knows its dataset, builds the model, computes the losses of a batch and
runs one evaluation step into its metrics. The trainer is task-agnostic.
"""

import keras
import tensorflow as tf

from axial_tf import data
from axial_tf.export.loading import (
    builder_from_config,
    dataset_info_from_config,
    inference_preprocessor_from_config,
    postprocess_options_from_config,
)
from axial_tf.losses import PanopticLoss
from axial_tf.metrics import PanopticEvaluator
from axial_tf.models.factory import build_model
from axial_tf.models.inference import predict_panoptic


def _augmentation(aug):
    photometric = {} if aug.photometric else dict(
        brightness_delta=0.0, contrast_range=(1.0, 1.0), saturation_range=(1.0, 1.0), hue_delta=0.0
    )
    return data.AugmentationOptions(
        min_scale=aug.min_scale,
        max_scale=aug.max_scale,
        scale_step=aug.scale_step,
        flip_probability=0.5 if aug.horizontal_flip else 0.0,
        autoaugment_probability=0.2 if aug.autoaugment else 0.0,
        **photometric,
    )


class _Task:
    """Prepares the experiment's dataset and builds its model."""

    def __init__(self, config):
        self.config = config
        self.builder = data.prepare(builder_from_config(config), manual_dir=config.data.manual_dir)
        self.info = dataset_info_from_config(config)
        if config.model.num_classes != self.info.num_classes:
            raise ValueError(
                f"model.num_classes is {config.model.num_classes} but dataset {config.data.dataset!r} has "
                f"{self.info.num_classes} classes ({', '.join(self.info.class_names)})."
            )

    def build_model(self):
        return build_model(self.config.model, sync_batch_norm=self.config.training.sync_batch_norm)


class PanopticTask(_Task):
    """Panoptic-DeepLab training and PQ/mIoU evaluation on a panoptic dataset."""

    name = "panoptic"

    def __init__(self, config):
        super().__init__(config)
        losses = config.losses
        self.loss = PanopticLoss(
            semantic_weight=losses.semantic_weight,
            center_weight=losses.center_weight,
            offset_weight=losses.offset_weight,
            top_k_percent=losses.semantic_top_k_percent,
            ignore_label=self.info.ignore_label,
        )
        # The same pre- and post-processing as export and prediction.
        self.postprocess_options = postprocess_options_from_config(config, self.info)
        self.preprocessor = inference_preprocessor_from_config(config)

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
            crop_size=tuple(c.data.crop_size), seed=c.training.seed, augmentation=_augmentation(c.data.augmentation),
            target_generator=target_generator, shuffle_buffer_size=c.data.shuffle_buffer_size, cache=c.data.cache,
        )

    def eval_dataset_fn(self, global_batch_size, split=None):
        return data.panoptic_eval_dataset_fn(
            self.builder, split or self.config.data.eval_split, self.info, global_batch_size, self.preprocessor
        )

    def losses(self, model, batch, training=True):
        predictions = model(batch["image"], training=training)
        return self.loss(batch, predictions)

    def make_metrics(self):
        return PanopticEvaluator(
            self.info.num_classes, self.info.thing_class_ids, label_divisor=self.info.label_divisor,
            ignore_label=self.info.ignore_label,
        )

    def predict(self, model, images):
        e = self.config.evaluation
        return predict_panoptic(model, images, self.postprocess_options, scales=tuple(e.eval_scales), flip=e.flip)

    def eval_step(self, model, batch, metrics):
        predictions = self.predict(model, batch["image"])
        metrics.update_state(batch["panoptic_label"], predictions["panoptic_pred"])
        return predictions

    def report(self, metrics):
        report = metrics.report()
        return {key: report[key] for key in ("pq", "sq", "rq", "pq_things", "pq_stuff", "miou") if key in report}, report


class ClassificationTask(_Task):
    """Image classification with cross-entropy and top-1/top-5 accuracy."""

    name = "classification"

    def train_dataset_fn(self, global_batch_size):
        c = self.config
        return data.classification_train_dataset_fn(
            self.builder, c.data.train_split, global_batch_size, image_size=c.data.crop_size[0], seed=c.training.seed,
        )

    def eval_dataset_fn(self, global_batch_size, split=None):
        c = self.config
        return data.classification_eval_dataset_fn(
            self.builder, split or c.data.eval_split, global_batch_size, image_size=c.data.crop_size[0]
        )

    def losses(self, model, batch, training=True):
        logits = tf.cast(model(batch["image"], training=training), tf.float32)
        # The functional form: Keras' Loss objects also divide by the replica count
        # inside tf.distribute, and the trainer already does that.
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(batch["label"], logits, from_logits=True))
        return {"classification_loss": loss, "total_loss": loss}

    def make_metrics(self):
        return _TopKMetrics()

    def predict(self, model, images):
        return {"logits": tf.cast(model(images, training=False), tf.float32)}

    def eval_step(self, model, batch, metrics):
        predictions = self.predict(model, batch["image"])
        metrics.update_state(batch["label"], predictions["logits"])
        return predictions

    def report(self, metrics):
        report = metrics.report()
        return report, report


class _TopKMetrics:
    def __init__(self):
        self.top1 = keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1")
        self.top5 = keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5")

    def update_state(self, labels, logits):
        self.top1.update_state(labels, logits)
        self.top5.update_state(labels, logits)

    def reset_state(self):
        self.top1.reset_state()
        self.top5.reset_state()

    def report(self):
        return {"top1": float(self.top1.result()), "top5": float(self.top5.result())}


def make_task(config):
    """The task of an experiment config."""
    return ClassificationTask(config) if config.model.task == "classification" else PanopticTask(config)

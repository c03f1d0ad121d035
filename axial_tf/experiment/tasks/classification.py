"""Image classification: an Axial-ResNet classifier with cross-entropy and top-1/top-5 accuracy."""

import keras
import tensorflow as tf

from axial_tf import data
from axial_tf.experiment import builders
from axial_tf.experiment.serving.base import DEFAULT_MAX_MEGAPIXELS
from axial_tf.experiment.serving.classification import ClassificationServingModule, classification_record
from axial_tf.experiment.tasks.base import Task
from axial_tf.models import AxialResNetClassifier

DEFAULT_IMAGE_SIZE = 224  # input side of a classifier exported without its config


class ClassificationTask(Task):
    """Image classification with cross-entropy and top-1/top-5 accuracy.

    Example:
        >>> task = ClassificationTask(load_config("configs/imagenet/axial_resnet_s.yaml"))
        >>> logits = task.predict(task.build_model(), images)["logits"]  # [B, 1000]
    """

    name = "classification"
    model_class = AxialResNetClassifier
    metric_names = ("top1", "top5")
    default_metrics = ("top1", "top5")

    @classmethod
    def config_problems(cls, config):
        crop_height, crop_width = config.data.crop_size
        if crop_height != crop_width:
            return [(("data", "crop_size"), f"classification uses square crops, got {config.data.crop_size}")]
        return []

    def build_model(self, sync_batch_norm=None):
        model = self.config.model
        sync = self._sync_batch_norm(sync_batch_norm)
        return AxialResNetClassifier(
            model.backbone,
            num_classes=model.num_classes,
            backbone_overrides=builders.backbone_overrides_from_config(model, sync),
            dropout=model.classifier_dropout,
        )

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
        return TopKAccuracy()

    def predict(self, model, images):
        return {"logits": tf.cast(model(images, training=False), tf.float32)}

    def eval_step(self, model, batch, metrics):
        predictions = self.predict(model, batch["image"])
        metrics.update_state(batch["label"], predictions["logits"])
        return predictions

    def serving_module(self, model, top_k=5, max_megapixels=DEFAULT_MAX_MEGAPIXELS):
        return ClassificationServingModule(
            model, image_size=self.config.data.crop_size[0], top_k=top_k, class_names=self.info.class_names,
            max_megapixels=max_megapixels,
        )

    @classmethod
    def serving_module_without_config(cls, model, top_k=5, image_size=None, max_megapixels=DEFAULT_MAX_MEGAPIXELS):
        """Class ids as names and the input side `image_size` (default 224)."""
        return ClassificationServingModule(
            model, image_size=image_size or DEFAULT_IMAGE_SIZE, top_k=top_k, max_megapixels=max_megapixels
        )

    @classmethod
    def write_prediction(cls, outputs, image, output_base, info, source, file_format="png", overlay=False,
                         alpha=0.5):
        """The top-k record; no files (the prediction tool gathers the records in predictions.json)."""
        del image, output_base, info, file_format, overlay, alpha
        return classification_record(outputs, source)


class TopKAccuracy:
    """Top-1 and top-5 accuracy of integer labels against logits."""

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

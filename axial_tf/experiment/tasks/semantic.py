"""Semantic segmentation: an Axial backbone + the semantic decoder, hard-pixel cross-entropy and mIoU.

It reads the panoptic datasets (COCO-panoptic folders, Cityscapes, panoptic_shapes) for their
semantic labels (`SegmentationTask`): the loss reads the pipeline's `semantic_label` and
`semantic_weights` (small instances weighted up, as DeepLab2 does), evaluation compares with
`panoptic_label // label_divisor`.
"""

import dataclasses

import tensorflow as tf

from axial_tf.experiment import builders
from axial_tf.experiment.serving.base import DEFAULT_MAX_MEGAPIXELS
from axial_tf.experiment.serving.semantic import SemanticServingModule, write_semantic_prediction
from axial_tf.experiment.tasks.base import write_label_pngs
from axial_tf.experiment.tasks.segmentation import SegmentationTask
from axial_tf.losses import average_top_k_loss, semantic_pixel_loss
from axial_tf.metrics import SemanticMeanIoU
from axial_tf.models import AxialSemanticDeepLab
from axial_tf.models.inference import predict_semantic


class SemanticTask(SegmentationTask):
    """Semantic segmentation trained with top-k cross-entropy and evaluated by mIoU.

    Uses `model.semantic_decoder`, `losses.semantic_weight`, `losses.semantic_top_k_percent`,
    `losses.small_instance_area/weight` and `evaluation.eval_scales/flip`.

    Example:
        >>> task = SemanticTask(load_config("configs/demo/semantic_shapes.yaml"))
        >>> task.predict(task.build_model(), images)["semantic_pred"]  # int32 [B, H, W]
    """

    name = "semantic"
    model_class = AxialSemanticDeepLab
    metric_names = ("miou",)
    default_metrics = ("miou",)

    def build_model(self, sync_batch_norm=None):
        model = self.config.model
        sync = self._sync_batch_norm(sync_batch_norm)
        return AxialSemanticDeepLab(
            model.backbone,
            num_classes=model.num_classes,
            backbone_overrides=builders.backbone_overrides_from_config(model, sync),
            semantic_decoder=dataclasses.asdict(model.semantic_decoder),
            sync_batch_norm=sync,
        )

    def losses(self, model, batch, training=True):
        logits = model(batch["image"], training=training)["semantic_logits"]  # [B, H, W, C]
        pixel_loss = semantic_pixel_loss(
            batch["semantic_label"], logits, batch["semantic_weights"], self.info.ignore_label
        )  # [B, H, W], in float32
        per_image = average_top_k_loss(pixel_loss, self.config.losses.semantic_top_k_percent)  # [B]
        loss = self.config.losses.semantic_weight * tf.reduce_mean(per_image)
        return {"semantic_loss": loss, "total_loss": loss}

    def make_metrics(self):
        return SemanticMeanIoU(self.info.num_classes, label_divisor=1, ignore_label=self.info.ignore_label)

    def predict(self, model, images):
        e = self.config.evaluation
        return predict_semantic(model, images, scales=tuple(e.eval_scales), flip=e.flip)

    def eval_step(self, model, batch, metrics):
        predictions = self.predict(model, batch["image"])
        semantic_label = tf.math.floordiv(batch["panoptic_label"], self.info.label_divisor)  # [B, H, W]
        metrics.update_state(semantic_label, predictions["semantic_pred"])
        return predictions

    def report(self, metrics):
        report = metrics.report()
        return {"miou": report["miou"]}, report

    def write_eval_predictions(self, batch, predictions, directory):
        """8-bit class-map PNGs."""
        write_label_pngs(batch, predictions["semantic_pred"], directory,
                         lambda semantic: tf.cast(semantic, tf.uint8)[..., tf.newaxis])

    def serving_module(self, model, top_k=5, max_megapixels=DEFAULT_MAX_MEGAPIXELS):
        del top_k  # classification only
        e = self.config.evaluation
        return SemanticServingModule(
            model, builders.inference_preprocessor_from_config(self.config), void_label=self.info.ignore_label,
            scales=e.eval_scales, flip=e.flip, max_megapixels=max_megapixels,
        )

    @classmethod
    def write_prediction(cls, outputs, image, output_base, info, source, file_format="png", overlay=False,
                         alpha=0.5):
        del source
        write_semantic_prediction(outputs, image, output_base, info, file_format=file_format, overlay=overlay,
                                  alpha=alpha)
        return None

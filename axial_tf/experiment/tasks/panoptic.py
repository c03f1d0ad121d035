"""Panoptic segmentation: Axial-DeepLab with Panoptic-DeepLab's targets, losses, PQ and post-processing."""

import dataclasses

from axial_tf.experiment import builders
from axial_tf.experiment.serving.base import DEFAULT_MAX_MEGAPIXELS
from axial_tf.experiment.serving.panoptic import (
    PanopticServingModule,
    write_panoptic_overlay,
    write_panoptic_prediction,
)
from axial_tf.experiment.serving.result_formats import RESULT_FORMATS, write_result_prediction
from axial_tf.experiment.tasks.base import write_label_pngs
from axial_tf.experiment.tasks.segmentation import SegmentationTask
from axial_tf.losses import PanopticLoss
from axial_tf.metrics import PanopticEvaluator
from axial_tf.models import AxialDeepLab
from axial_tf.models.inference import predict_panoptic
from axial_tf.utils.visualization import encode_panoptic_rgb

HEADLINE_METRICS = ("pq", "sq", "rq", "pq_things", "pq_stuff", "miou")


class PanopticTask(SegmentationTask):
    """Panoptic-DeepLab training and PQ/mIoU evaluation on a panoptic dataset.

    Example:
        >>> task = PanopticTask(load_config("configs/demo/panoptic_shapes.yaml"))
        >>> predictions = task.predict(task.build_model(), images)  # panoptic_pred, semantic_pred, ...
    """

    name = "panoptic"
    model_class = AxialDeepLab
    metric_names = ("pq", "miou", "ap")
    default_metrics = ("pq", "miou")
    # The official result formats `write_prediction` writes besides the raw label maps (png, npy).
    result_formats = RESULT_FORMATS

    def __init__(self, config):
        super().__init__(config)
        self._loss = None

    def build_model(self, sync_batch_norm=None):
        model = self.config.model
        sync = self._sync_batch_norm(sync_batch_norm)
        return AxialDeepLab(
            model.backbone,
            num_classes=model.num_classes,
            backbone_overrides=builders.backbone_overrides_from_config(model, sync),
            semantic_decoder=dataclasses.asdict(model.semantic_decoder),
            instance_decoder=dataclasses.asdict(model.instance_decoder),
            sync_batch_norm=sync,
        )

    @property
    def postprocess_options(self):
        """The post-processing of evaluation, export and prediction."""
        return builders.postprocess_options_from_config(self.config, self.info)

    def losses(self, model, batch, training=True):
        if self._loss is None:
            losses = self.config.losses
            self._loss = PanopticLoss(
                semantic_weight=losses.semantic_weight,
                center_weight=losses.center_weight,
                offset_weight=losses.offset_weight,
                top_k_percent=losses.semantic_top_k_percent,
                ignore_label=self.info.ignore_label,
            )
        return self._loss(batch, model(batch["image"], training=training))

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
        return {key: report[key] for key in HEADLINE_METRICS if key in report}, report

    def write_eval_predictions(self, batch, predictions, directory):
        """COCO-encoded panoptic PNGs (label = R + 256 G + 256^2 B)."""
        write_label_pngs(batch, predictions["panoptic_pred"], directory, encode_panoptic_rgb)

    def serving_module(self, model, top_k=5, max_megapixels=DEFAULT_MAX_MEGAPIXELS):
        del top_k  # classification only
        e = self.config.evaluation
        return PanopticServingModule(
            model, self.postprocess_options, builders.inference_preprocessor_from_config(self.config),
            scales=e.eval_scales, flip=e.flip, max_megapixels=max_megapixels,
        )

    @classmethod
    def write_prediction(cls, outputs, image, output_base, info, source, file_format="png", overlay=False,
                         alpha=0.5):
        """The label maps (png, npy; no record), or a result format's files and its predictions-JSON entry."""
        if file_format not in RESULT_FORMATS:
            write_panoptic_prediction(outputs, image, output_base, info, file_format=file_format, overlay=overlay,
                                      alpha=alpha)
            return None
        annotation = write_result_prediction(outputs, output_base, info, source, file_format)
        if overlay:
            write_panoptic_overlay(outputs["panoptic_pred"], image, output_base, info, alpha=alpha)
        return annotation


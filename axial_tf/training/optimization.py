"""Learning-rate schedules, optimizers, weight decay and gradient handling."""

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="axial_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A poly, cosine, step or constant decay over all steps, with an optional linear warm-up.

    As in DeepLab2's trainer: before `warmup_steps` the rate is
    `base_learning_rate * step / warmup_steps`; from then on it is the decay
    over `total_steps` read at the raw step (the decay does not restart after
    the warm-up), e.g. poly: `(base - end) * (1 - step / total_steps)**power + end`.

    Args:
        base_learning_rate: rate of the decay at step 0, and the warm-up's target.
        total_steps: training steps (decay ends there).
        schedule: "poly", "cosine", "step" or "constant".
        warmup_steps: warm-up length.
        poly_power: exponent of the poly decay.
        end_learning_rate: final rate of poly/cosine.
        step_boundaries: steps where the step schedule multiplies by `step_decay_factor`.
        step_decay_factor: factor per step boundary.
    """

    def __init__(self, base_learning_rate, total_steps, schedule="poly", warmup_steps=0, poly_power=0.9,
                 end_learning_rate=0.0, step_boundaries=(), step_decay_factor=0.1):
        self.base_learning_rate = float(base_learning_rate)
        self.total_steps = int(total_steps)
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.poly_power = float(poly_power)
        self.end_learning_rate = float(end_learning_rate)
        self.step_boundaries = [int(b) for b in step_boundaries]
        self.step_decay_factor = float(step_decay_factor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rate = self._decayed(step)
        if self.warmup_steps:
            rate = tf.where(step < self.warmup_steps, self.base_learning_rate * step / self.warmup_steps, rate)
        return rate

    def _decayed(self, step):
        """The decay at `step`, ignoring the warm-up."""
        base, end = self.base_learning_rate, self.end_learning_rate
        progress = tf.clip_by_value(step / max(self.total_steps, 1), 0.0, 1.0)
        if self.schedule == "poly":
            return (base - end) * (1.0 - progress) ** self.poly_power + end
        if self.schedule == "cosine":
            return end + 0.5 * (base - end) * (1.0 + tf.cos(math.pi * progress))
        if self.schedule == "step":
            boundaries = tf.constant(self.step_boundaries, tf.float32, shape=[len(self.step_boundaries)])
            passed = tf.reduce_sum(tf.cast(step >= boundaries, tf.float32))
            return base * self.step_decay_factor**passed
        return tf.constant(base)

    def get_config(self):
        return dict(
            base_learning_rate=self.base_learning_rate, total_steps=self.total_steps, schedule=self.schedule,
            warmup_steps=self.warmup_steps, poly_power=self.poly_power, end_learning_rate=self.end_learning_rate,
            step_boundaries=self.step_boundaries, step_decay_factor=self.step_decay_factor,
        )


def build_schedule(optimizer_config, total_steps, multiplier=1.0):
    """The `WarmupSchedule` of an `OptimizerConfig`, scaled by `multiplier`."""
    c = optimizer_config
    return WarmupSchedule(
        c.learning_rate * multiplier, total_steps, c.schedule, c.warmup_steps, c.poly_power,
        c.end_learning_rate * multiplier, c.step_boundaries, c.step_decay_factor,
    )


def _make_optimizer(optimizer_config, schedule):
    c = optimizer_config
    if c.name == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=c.momentum, nesterov=c.nesterov)
    elif c.name == "adamw":
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=c.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(schedule)
    # `OptimizerGroup.apply` sums the gradients over replicas itself, so that clipping
    # sees the global gradient (Keras clips each replica's share, then sums);
    # the TF backend's own all-reduce would sum them a second time.
    optimizer._all_reduce_sum_gradients = lambda grads_and_vars: grads_and_vars
    return optimizer


def is_decayed(variable):
    """Weight decay applies to kernels and embeddings, not to biases or BN parameters."""
    return len(variable.shape) > 1


class OptimizerGroup:
    """One or two optimizers: backbone variables may use a scaled learning rate.

    Adam-type optimizers ignore a gradient scale, so a backbone learning-rate
    multiplier needs its own optimizer; with a multiplier of 1 there is one.
    Weight decay is decoupled (AdamW) or an L2 penalty (`l2_penalty`, for adam
    and sgd). Gradients are summed over replicas and clipped by their global
    norm here, before the optimizers see them.

    Args:
        optimizer_config: an `OptimizerConfig`.
        total_steps: training steps (for the schedule).
        backbone_variables: the backbone's trainable variables.
        mixed_float16: wrap the optimizers in loss scaling.
    """

    def __init__(self, optimizer_config, total_steps, backbone_variables=(), mixed_float16=False):
        self.config = optimizer_config
        self.schedule = build_schedule(optimizer_config, total_steps)
        self.main = _make_optimizer(optimizer_config, self.schedule)
        multiplier = optimizer_config.backbone_lr_multiplier
        self.backbone = None
        self.backbone_ids = set()
        if multiplier != 1.0 and backbone_variables:
            self.backbone = _make_optimizer(optimizer_config, build_schedule(optimizer_config, total_steps, multiplier))
            self.backbone_ids = {id(v) for v in backbone_variables}
        if mixed_float16:
            self.main = keras.optimizers.LossScaleOptimizer(self.main)
            if self.backbone is not None:
                self.backbone = keras.optimizers.LossScaleOptimizer(self.backbone)

    @property
    def iterations(self):
        return self.main.iterations

    def checkpoint_items(self):
        items = {"optimizer": self.main}
        if self.backbone is not None:
            items["backbone_optimizer"] = self.backbone
        return items

    def build(self, variables):
        for optimizer, group in self._groups(variables):
            inner = getattr(optimizer, "inner_optimizer", optimizer)
            if self.config.name == "adamw":  # keep BN parameters and biases out of the decay
                inner.exclude_from_weight_decay(var_list=[v for v in group if not is_decayed(v)])
            optimizer.build(group)

    def l2_penalty(self, variables):
        """The L2 weight-decay term for adam/sgd (0 for adamw, whose decay is decoupled)."""
        if self.config.weight_decay == 0.0 or self.config.name == "adamw":
            return tf.constant(0.0)
        return self.config.weight_decay * 0.5 * tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                                                           for v in variables if is_decayed(v)] or [0.0])

    def scale_loss(self, loss):
        return self.main.scale_loss(loss) if isinstance(self.main, keras.optimizers.LossScaleOptimizer) else loss

    def apply(self, gradients, variables):
        """Sums gradients (of the scaled loss) over replicas, clips them, applies them.

        Clipping uses the global norm of all gradients together (backbone
        included), as on a single device, whatever the replica count.

        Returns:
            The unscaled global norm of the summed gradients, before clipping.
        """
        gradients = [tf.convert_to_tensor(g) if g is not None else tf.zeros_like(v) for g, v in zip(gradients, variables)]
        replica_context = tf.distribute.get_replica_context()
        if replica_context is not None and replica_context.num_replicas_in_sync > 1:
            gradients = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        loss_scale = 1.0
        if isinstance(self.main, keras.optimizers.LossScaleOptimizer):
            loss_scale = tf.cast(self.main.dynamic_scale, tf.float32)
        norm = tf.linalg.global_norm(gradients)
        if self.config.clip_gradient_norm is not None:
            # A non-finite norm makes every clipped gradient NaN, so loss scaling skips the step.
            gradients, _ = tf.clip_by_global_norm(gradients, self.config.clip_gradient_norm * loss_scale, norm)
        elif self.backbone is not None:
            # Each group's loss-scale optimizer checks only its own gradients: make one of
            # them non-finite -> all non-finite, so both skip the step and keep equal scales.
            gradients = [tf.where(tf.math.is_finite(norm), g, tf.constant(float("nan"), g.dtype)) for g in gradients]
        norm = norm / loss_scale
        pairs = dict(zip([id(v) for v in variables], gradients))
        for optimizer, group in self._groups(variables):
            optimizer.apply_gradients([(pairs[id(v)], v) for v in group])
        return norm

    def _groups(self, variables):
        if self.backbone is None:
            return [(self.main, list(variables))]
        backbone = [v for v in variables if id(v) in self.backbone_ids]
        rest = [v for v in variables if id(v) not in self.backbone_ids]
        return [(self.main, rest), (self.backbone, backbone)]

    def learning_rate(self):
        return self.schedule(self.main.iterations)

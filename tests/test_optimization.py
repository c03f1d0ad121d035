"""Tests of schedules, optimizer groups, weight decay and clipping (axial_tf.training.optimization).

Every expected value is a closed form worked out here (hand-written schedule
values, SGD's `v - lr * g`, Adam's first step `~lr * sign(g)`, Keras' AdamW
decay `v - v * wd * lr`), never the code's own output. The MirroredStrategy
test runs in a subprocess because logical CPU devices must be configured
before TensorFlow initialises.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT

from axial_tf.experiment.config import OptimizerConfig
from axial_tf.training.optimization import OptimizerGroup, WarmupSchedule, build_schedule


def _sgd_config(**overrides):
    """Plain SGD (no momentum) at a constant 0.1: one step moves a variable by exactly 0.1 * gradient."""
    fields = dict(name="sgd", learning_rate=0.1, schedule="constant", momentum=0.0)
    return OptimizerConfig(**{**fields, **overrides})


def _variables(arrays):
    return [keras.Variable(np.asarray(a, np.float32)) for a in arrays]


def _global_norm(arrays):
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))


# ----------------------------------------------------------------- schedules

POLY_WARMUP = dict(base_learning_rate=0.1, total_steps=100, schedule="poly", warmup_steps=10, poly_power=0.9,
                   end_learning_rate=0.01)
POLY = dict(base_learning_rate=0.1, total_steps=100, schedule="poly", poly_power=2.0)
COSINE_WARMUP = dict(base_learning_rate=0.1, total_steps=100, schedule="cosine", warmup_steps=10,
                     end_learning_rate=0.01)
COSINE = dict(base_learning_rate=0.1, total_steps=100, schedule="cosine")
STEP_WARMUP = dict(base_learning_rate=0.1, total_steps=100, schedule="step", warmup_steps=10,
                   step_boundaries=[30, 60, 90], step_decay_factor=0.5)
STEP = dict(base_learning_rate=0.1, total_steps=100, schedule="step", step_boundaries=[60, 30],
            step_decay_factor=0.1)
CONSTANT_WARMUP = dict(base_learning_rate=0.2, total_steps=50, schedule="constant", warmup_steps=4)
CONSTANT = dict(base_learning_rate=0.2, total_steps=50, schedule="constant")

# (schedule arguments, step, expected rate), each rate worked out by hand. After a
# warm-up the decay is read at the raw step over all steps (DeepLab2's definition):
# it does not restart at the base rate when the warm-up ends.
SCHEDULE_CASES = {
    "poly_warmup": (POLY_WARMUP, [
        (0, 0.0), (5, 0.05), (9, 0.09),
        (10, 0.09 * 0.9**0.9 + 0.01),   # 10 of the 100 steps done
        (50, 0.09 * 0.5**0.9 + 0.01),
        (75, 0.09 * 0.25**0.9 + 0.01),
        (100, 0.01), (500, 0.01),
    ]),
    "poly": (POLY, [(0, 0.1), (50, 0.1 * 0.5**2), (90, 0.1 * 0.1**2), (100, 0.0), (150, 0.0)]),
    "cosine_warmup": (COSINE_WARMUP, [
        (0, 0.0), (5, 0.05),
        (10, 0.01 + 0.045 * (1.0 + math.cos(math.pi / 10))),
        (25, 0.01 + 0.045 * (1.0 + math.cos(math.pi / 4))),
        (50, 0.055),                     # cos(pi / 2) = 0: the mid-point of base and end
        (100, 0.01), (300, 0.01),
    ]),
    "cosine": (COSINE, [(0, 0.1), (25, 0.05 * (1.0 + math.cos(math.pi / 4))), (50, 0.05), (100, 0.0),
                        (120, 0.0)]),
    "step_warmup": (STEP_WARMUP, [
        (0, 0.0), (5, 0.05), (10, 0.1), (29, 0.1), (30, 0.05), (59, 0.05), (60, 0.025), (89, 0.025),
        (90, 0.0125), (100, 0.0125), (1000, 0.0125),
    ]),
    # Boundaries given out of order count the same.
    "step": (STEP, [(0, 0.1), (29, 0.1), (30, 0.01), (60, 0.001), (100, 0.001), (400, 0.001)]),
    "constant_warmup": (CONSTANT_WARMUP, [(0, 0.0), (1, 0.05), (3, 0.15), (4, 0.2), (50, 0.2), (1000, 0.2)]),
    "constant": (CONSTANT, [(0, 0.2), (25, 0.2), (50, 0.2), (1000, 0.2)]),
}


@pytest.mark.parametrize("name", sorted(SCHEDULE_CASES))
@pytest.mark.sweep
def test_schedule_matches_hand_worked_rates(name):
    arguments, expected = SCHEDULE_CASES[name]
    schedule = WarmupSchedule(**arguments)
    for step, rate in expected:
        # The optimizer calls the schedule with its int64 `iterations`.
        actual = float(schedule(tf.constant(step, tf.int64)))
        np.testing.assert_allclose(actual, rate, rtol=1e-6, atol=1e-9, err_msg=f"{name} at step {step}")


@pytest.mark.parametrize("name", sorted(SCHEDULE_CASES))
@pytest.mark.sweep
def test_schedule_config_round_trip_gives_the_same_rates(name):
    arguments, expected = SCHEDULE_CASES[name]
    schedule = WarmupSchedule(**arguments)
    rebuilt = WarmupSchedule(**schedule.get_config())
    deserialized = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(deserialized, WarmupSchedule)
    for step, _ in expected:
        rate = float(schedule(step))
        assert float(rebuilt(step)) == rate
        assert float(deserialized(step)) == rate


def test_build_schedule_multiplier_scales_base_and_end_rates():
    config = OptimizerConfig(learning_rate=0.1, end_learning_rate=0.01, schedule="poly", warmup_steps=10,
                             poly_power=0.9)
    scaled = build_schedule(config, 100, multiplier=0.5)
    assert scaled.base_learning_rate == pytest.approx(0.05)
    assert scaled.end_learning_rate == pytest.approx(0.005)
    # Half of the POLY_WARMUP rates, warm-up and decay alike.
    for step, rate in SCHEDULE_CASES["poly_warmup"][1]:
        np.testing.assert_allclose(float(scaled(step)), 0.5 * rate, rtol=1e-6, atol=1e-9, err_msg=f"step {step}")


def _deeplab2_learning_rate(step, base, total_steps, policy, warmup_steps, power=0.9, end=0.0):
    """DeepLab2's rate, re-derived from its trainer: Keras' PolynomialDecay (cycle off) or
    CosineDecay (alpha 0, so no end rate) over all `total_steps`, wrapped by its linear
    WarmUp, which returns `base * step / warmup_steps` before `warmup_steps` and the
    decay read at the raw step from then on (not multiplied by a warm-up factor)."""
    if step < warmup_steps:
        return base * step / warmup_steps
    fraction = min(step, total_steps) / total_steps
    if policy == "poly":
        return (base - end) * (1.0 - fraction) ** power + end
    return base * 0.5 * (1.0 + np.cos(np.pi * fraction))


@pytest.mark.parametrize("policy, base, total_steps, warmup_steps, power, end", [
    ("poly", 5e-4, 200000, 2000, 0.9, 0.0),    # DeepLab2's COCO Panoptic-DeepLab solver
    ("poly", 0.1, 1000, 100, 2.0, 1e-3),
    ("poly", 1e-4, 60000, 0, 0.9, 0.0),        # its Cityscapes solver (no warm-up)
    ("cosine", 0.1, 1000, 100, None, 0.0),
])
def test_schedule_matches_deeplab2_before_at_and_after_warmup(policy, base, total_steps, warmup_steps, power, end):
    schedule = WarmupSchedule(base, total_steps, schedule=policy, warmup_steps=warmup_steps,
                              poly_power=power or 0.9, end_learning_rate=end)
    steps = {0, 1, warmup_steps // 2, max(warmup_steps - 1, 0), warmup_steps, warmup_steps + 1, total_steps // 2,
             total_steps - 1, total_steps, total_steps + 10}
    for step in sorted(steps):
        expected = _deeplab2_learning_rate(step, base, total_steps, policy, warmup_steps, power, end)
        # Both compute in float32: near the end, 1 - step / total_steps keeps ~1e-7 absolute precision.
        np.testing.assert_allclose(float(schedule(tf.constant(step, tf.int64))), expected, rtol=2e-6,
                                   atol=base * 1e-6, err_msg=f"{policy} at step {step}")


# ------------------------------------------------- backbone learning-rate multiplier

@pytest.mark.parametrize("multiplier", [0.25, 0.0])
def test_sgd_backbone_variables_move_by_the_multiplied_rate(multiplier):
    rng = np.random.default_rng(0)
    initial = [rng.normal(size=(2, 3)), rng.normal(size=(3,)), rng.normal(size=(3, 1)), rng.normal(size=(1,))]
    gradients = [rng.normal(size=np.shape(a)).astype(np.float32) for a in initial]
    backbone_kernel, backbone_bias, head_kernel, head_bias = variables = _variables(initial)
    group = OptimizerGroup(_sgd_config(backbone_lr_multiplier=multiplier), 10,
                           backbone_variables=[backbone_kernel, backbone_bias])
    group.build(variables)
    group.apply([tf.constant(g) for g in gradients], variables)
    rates = [0.1 * multiplier, 0.1 * multiplier, 0.1, 0.1]
    for variable, start, gradient, rate in zip(variables, initial, gradients, rates):
        np.testing.assert_allclose(variable.numpy(), start - rate * gradient, rtol=1e-6, atol=1e-7)
    # The reported rate is the main (head) one.
    assert float(group.learning_rate()) == pytest.approx(0.1)


def test_adam_first_step_is_the_multiplied_rate_whatever_the_gradient_scale():
    # Adam's first step is lr * g / (|g| + eps'), ~lr * sign(g): a gradient scale cancels,
    # so only a separate optimizer with a scaled rate can slow the backbone down.
    initial = [np.zeros((2, 2)), np.zeros((3,))]
    gradients = [np.array([[0.3, -2.0], [5.0, -0.05]], np.float32), np.array([40.0, -0.2, 1.0], np.float32)]
    backbone, head = variables = _variables(initial)
    config = OptimizerConfig(name="adam", learning_rate=0.01, schedule="constant", backbone_lr_multiplier=0.1)
    group = OptimizerGroup(config, 10, backbone_variables=[backbone])
    group.build(variables)
    group.apply([tf.constant(g) for g in gradients], variables)
    np.testing.assert_allclose(backbone.numpy(), -0.01 * 0.1 * np.sign(gradients[0]), rtol=1e-4)
    np.testing.assert_allclose(head.numpy(), -0.01 * np.sign(gradients[1]), rtol=1e-4)


@pytest.mark.parametrize("multiplier, has_backbone_variables, expected_items", [
    (1.0, True, {"optimizer"}),
    (0.5, False, {"optimizer"}),
    (0.5, True, {"optimizer", "backbone_optimizer"}),
])
def test_a_backbone_optimizer_exists_only_when_needed(multiplier, has_backbone_variables, expected_items):
    backbone, head = _variables([np.ones((2, 2)), np.ones((2,))])
    group = OptimizerGroup(_sgd_config(backbone_lr_multiplier=multiplier), 10,
                           backbone_variables=[backbone] if has_backbone_variables else ())
    assert set(group.checkpoint_items()) == expected_items
    assert (group.backbone is not None) == ("backbone_optimizer" in expected_items)


# --------------------------------------------------------------- weight decay

@pytest.mark.parametrize("multiplier", [1.0, 0.5])
def test_adamw_decays_kernels_but_not_biases_or_batch_norm_parameters(multiplier):
    rng = np.random.default_rng(1)
    initial = [rng.normal(size=(2, 3)), rng.normal(size=(3, 3, 2, 4)), rng.normal(size=(3,)), rng.normal(size=(4,))]
    backbone_kernel, head_kernel, head_bias, batch_norm_gamma = variables = _variables(initial)
    weight_decay, learning_rate = 0.1, 0.05
    config = OptimizerConfig(name="adamw", learning_rate=learning_rate, schedule="constant",
                             weight_decay=weight_decay, backbone_lr_multiplier=multiplier)
    group = OptimizerGroup(config, 10, backbone_variables=[backbone_kernel, batch_norm_gamma])
    group.build(variables)
    # A zero gradient makes Adam's own step exactly 0, so only the decoupled decay acts.
    group.apply([tf.zeros_like(v) for v in variables], variables)
    initial = [np.asarray(a, np.float32) for a in initial]
    # Keras' AdamW: v - v * wd * lr, with the lr of the optimizer owning the variable.
    np.testing.assert_allclose(backbone_kernel.numpy(),
                               initial[0] - initial[0] * weight_decay * learning_rate * multiplier, rtol=1e-6)
    np.testing.assert_allclose(head_kernel.numpy(), initial[1] - initial[1] * weight_decay * learning_rate,
                               rtol=1e-6)
    np.testing.assert_array_equal(head_bias.numpy(), initial[2])
    np.testing.assert_array_equal(batch_norm_gamma.numpy(), initial[3])
    assert float(group.l2_penalty(variables)) == 0.0  # decoupled: nothing is added to the loss


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_l2_penalty_sums_squared_kernels_only(name):
    rng = np.random.default_rng(2)
    kernels = [rng.normal(size=(3, 3, 2, 4)), rng.normal(size=(5, 2))]
    vectors = [rng.normal(size=(4,)), rng.normal(size=(2,))]
    variables = _variables(kernels + vectors)
    weight_decay = 0.003
    group = OptimizerGroup(OptimizerConfig(name=name, weight_decay=weight_decay), 10)
    expected = weight_decay * 0.5 * sum(float(np.sum(np.square(k.astype(np.float32), dtype=np.float64)))
                                        for k in kernels)
    np.testing.assert_allclose(float(group.l2_penalty(variables)), expected, rtol=1e-5)
    no_decay = OptimizerGroup(OptimizerConfig(name=name, weight_decay=0.0), 10)
    assert float(no_decay.l2_penalty(variables)) == 0.0


# ------------------------------------------------------------ gradient clipping

@pytest.mark.parametrize("gradient_scale", [10.0, 0.1], ids=["clipped", "below_the_limit"])
def test_clipping_uses_one_global_norm_over_all_variables(gradient_scale):
    rng = np.random.default_rng(3)
    initial = [rng.normal(size=(2, 3)), rng.normal(size=(3,))]
    gradients = [gradient_scale * rng.normal(size=np.shape(a)).astype(np.float32) for a in initial]
    variables = _variables(initial)
    clip = 1.0
    group = OptimizerGroup(_sgd_config(clip_gradient_norm=clip), 10)
    group.build(variables)
    norm = float(group.apply([tf.constant(g) for g in gradients], variables))
    expected_norm = _global_norm(gradients)
    assert (expected_norm > clip) == (gradient_scale > 1.0)  # the case tests what its id says
    np.testing.assert_allclose(norm, expected_norm, rtol=1e-6)  # reported before clipping
    factor = clip / max(expected_norm, clip)
    for variable, start, gradient in zip(variables, initial, gradients):
        np.testing.assert_allclose(variable.numpy(), start - 0.1 * factor * gradient, rtol=1e-5, atol=1e-6)


def test_clipping_spans_the_backbone_group_which_then_gets_its_multiplier():
    # A large backbone gradient and a small head gradient: clipping each group on its
    # own would leave the head untouched, one global norm shrinks both alike.
    backbone_gradient = np.array([[3.0, -4.0], [0.0, 12.0]], np.float32)  # norm 13
    head_gradient = np.array([0.6, 0.8], np.float32)                     # norm 1
    backbone, head = variables = _variables([np.ones((2, 2)), np.ones((2,))])
    clip, multiplier = 0.5, 0.25
    group = OptimizerGroup(_sgd_config(clip_gradient_norm=clip, backbone_lr_multiplier=multiplier), 10,
                           backbone_variables=[backbone])
    group.build(variables)
    norm = float(group.apply([tf.constant(backbone_gradient), tf.constant(head_gradient)], variables))
    expected_norm = math.sqrt(13.0**2 + 1.0)
    np.testing.assert_allclose(norm, expected_norm, rtol=1e-6)
    factor = clip / expected_norm
    np.testing.assert_allclose(backbone.numpy(), 1.0 - 0.1 * multiplier * factor * backbone_gradient, rtol=1e-6)
    np.testing.assert_allclose(head.numpy(), 1.0 - 0.1 * factor * head_gradient, rtol=1e-6)


def test_a_missing_gradient_counts_as_zero():
    moved, frozen = variables = _variables([np.ones((2,)), np.ones((3,))])
    group = OptimizerGroup(_sgd_config(clip_gradient_norm=10.0), 10)
    group.build(variables)
    norm = float(group.apply([tf.constant([3.0, 4.0]), None], variables))
    np.testing.assert_allclose(norm, 5.0, rtol=1e-6)
    np.testing.assert_allclose(moved.numpy(), [1.0 - 0.3, 1.0 - 0.4], rtol=1e-6)
    np.testing.assert_array_equal(frozen.numpy(), np.ones(3, np.float32))


# ------------------------------------------------- MirroredStrategy, 2 replicas

_DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from axial_tf.experiment.config import OptimizerConfig
    from axial_tf.training.optimization import OptimizerGroup

    inputs = json.loads(sys.argv[1])
    config = OptimizerConfig(name="sgd", learning_rate=inputs["learning_rate"], schedule="constant",
                             momentum=0.0, clip_gradient_norm=inputs["clip"],
                             backbone_lr_multiplier=inputs["multiplier"])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        backbone = keras.Variable(np.asarray(inputs["backbone"], np.float32))
        head = keras.Variable(np.asarray(inputs["head"], np.float32))
        variables = [backbone, head]
        group = OptimizerGroup(config, 10, backbone_variables=[backbone])
        group.build(variables)
    # [replica, ...]: each replica draws its own gradients.
    backbone_gradients = tf.constant(inputs["backbone_gradients"], tf.float32)
    head_gradients = tf.constant(inputs["head_gradients"], tf.float32)

    @tf.function
    def step():
        def replica_fn():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            gradients = [tf.gather(backbone_gradients, replica), tf.gather(head_gradients, replica)]
            return group.apply(gradients, variables)
        return strategy.run(replica_fn)

    norms = strategy.experimental_local_results(step())
    result = {
        "norms": [float(n) for n in norms],
        "backbone": [v.numpy().tolist() for v in strategy.experimental_local_results(backbone.value)],
        "head": [v.numpy().tolist() for v in strategy.experimental_local_results(head.value)],
        "iterations": [int(group.main.iterations.numpy()), int(group.backbone.iterations.numpy())],
    }
    print("RESULT", json.dumps(result))
    """
)


@pytest.mark.full
def test_mirrored_replicas_apply_the_clipped_sum_of_their_gradients():
    rng = np.random.default_rng(4)
    inputs = dict(
        learning_rate=0.1, clip=1.0, multiplier=0.5,
        backbone=rng.normal(size=(2, 3)).tolist(), head=rng.normal(size=(3,)).tolist(),
        # Different per replica (and with opposite signs in places, so the sum is not 2x one of them).
        backbone_gradients=rng.normal(size=(2, 2, 3)).tolist(), head_gradients=rng.normal(size=(2, 3)).tolist(),
    )
    completed = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTED_SCRIPT, json.dumps(inputs)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, completed.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT "):])

    summed = [np.sum(np.asarray(inputs["backbone_gradients"], np.float32), axis=0),
              np.sum(np.asarray(inputs["head_gradients"], np.float32), axis=0)]
    norm = _global_norm(summed)
    assert norm > inputs["clip"]  # clipping is active
    factor = inputs["clip"] / norm
    expected_backbone = np.asarray(inputs["backbone"], np.float32) - 0.1 * 0.5 * factor * summed[0]
    expected_head = np.asarray(inputs["head"], np.float32) - 0.1 * factor * summed[1]
    np.testing.assert_allclose(result["norms"], [norm, norm], rtol=1e-6)
    for replica in range(2):
        np.testing.assert_allclose(result["backbone"][replica], expected_backbone, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(result["head"][replica], expected_head, rtol=1e-6, atol=1e-6)
    assert result["iterations"] == [1, 1]  # one step, not one per replica


# --------------------------------------------------------- mixed precision

def _quadratic_loss_and_gradients(variables, targets):
    """loss = 0.5 * sum((v - t)^2) over all variables; its gradient is v - t."""
    loss = 0.5 * tf.add_n([tf.reduce_sum(tf.square(v - t)) for v, t in zip(variables, targets)])
    return loss, [np.asarray(v.numpy() - t, np.float32) for v, t in zip(variables, targets)]


@pytest.mark.parametrize("clip, multiplier", [(None, 1.0), (1.0, 1.0), (1.0, 0.5), (None, 0.5)])
def test_loss_scaling_gives_the_unscaled_update_and_norm(clip, multiplier):
    rng = np.random.default_rng(5)
    initial = [rng.normal(size=(2, 3)), rng.normal(size=(3,))]
    targets = [np.asarray(rng.normal(size=np.shape(a)), np.float32) for a in initial]
    backbone, head = variables = _variables(initial)
    group = OptimizerGroup(_sgd_config(clip_gradient_norm=clip, backbone_lr_multiplier=multiplier), 10,
                           backbone_variables=[backbone], mixed_float16=True)
    group.build(variables)
    assert float(group.main.dynamic_scale) > 1.0  # the loss really is scaled
    with tf.GradientTape() as tape:
        loss, gradients = _quadratic_loss_and_gradients(variables, targets)
        scaled = group.scale_loss(loss)
    norm = float(group.apply(tape.gradient(scaled, variables), variables))
    expected_norm = _global_norm(gradients)
    np.testing.assert_allclose(norm, expected_norm, rtol=1e-5)
    factor = 1.0 if clip is None else clip / max(expected_norm, clip)
    assert clip is None or factor < 1.0  # clipping is active when set
    rates = [0.1 * multiplier, 0.1]
    for variable, start, gradient, rate in zip(variables, initial, gradients, rates):
        np.testing.assert_allclose(variable.numpy(), np.float32(start) - rate * factor * gradient,
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("clip, multiplier", [(None, 1.0), (1.0, 1.0), (1.0, 0.5), (None, 0.5)])
def test_a_non_finite_gradient_skips_the_step_and_halves_the_loss_scale(clip, multiplier):
    backbone, head = variables = _variables([np.ones((2, 2)), np.ones((3,))])
    group = OptimizerGroup(_sgd_config(clip_gradient_norm=clip, backbone_lr_multiplier=multiplier), 10,
                           backbone_variables=[backbone], mixed_float16=True)
    group.build(variables)
    optimizers = [group.main] + ([group.backbone] if group.backbone is not None else [])
    scales = [float(o.dynamic_scale) for o in optimizers]
    group.apply([tf.ones((2, 2)), tf.constant([np.inf, 1.0, 1.0])], variables)
    np.testing.assert_array_equal(backbone.numpy(), np.ones((2, 2), np.float32))
    np.testing.assert_array_equal(head.numpy(), np.ones(3, np.float32))
    assert [float(o.dynamic_scale) for o in optimizers] == [s / 2 for s in scales]
    assert int(group.iterations) == 0

"""What the parity tests measure of a model, computed with the native tools of each Keras backend.

`measure(model, inputs, cotangents)` runs the model once in inference mode and once in
training mode and returns, as numpy arrays keyed by name:

    inference/<output>   outputs with training=False
    training/<output>    outputs with training=True
    moving/<path>        batch-norm moving statistics after that one training-mode call
    grad/input           d loss / d inputs, with loss = sum over outputs of sum(output * cotangent)
    grad/<path>          d loss / d every trainable variable (training mode), by variable path

A model's outputs are a tensor (named "output") or a dict of tensors. Gradients use
`tf.GradientTape` on TensorFlow (the reference), `jax.value_and_grad` over a jitted
`model.stateless_call` on JAX and autograd on the variables' torch tensors on PyTorch.
Only `keras` is imported at module level, so this file loads with any backend installed.
"""

import keras
import numpy as np

MOVING_STATISTICS = ("moving_mean", "moving_variance")


def output_dict(outputs):
    """A model's outputs as a dict: a single tensor is named "output"."""
    return dict(outputs) if isinstance(outputs, dict) else {"output": outputs}


def measure(model, inputs, cotangents):
    """The inference outputs, training outputs, moving statistics and gradients of `model`.

    Args:
        model: a built Keras model.
        inputs: numpy float32 array, the model's input.
        cotangents: dict of numpy arrays, one per output (see `output_dict`), shaped as it.
    """
    training_step = {"tensorflow": _tensorflow_step, "jax": _jax_step, "torch": _torch_step}[keras.backend.backend()]
    inference = output_dict(predict(model, inputs))
    outputs, moving, input_gradient, variable_gradients = training_step(model, inputs, cotangents)
    record = {f"inference/{k}": v for k, v in inference.items()}
    record |= {f"training/{k}": v for k, v in outputs.items()}
    record |= {f"moving/{k}": v for k, v in moving.items()}
    record["grad/input"] = input_gradient
    record |= {f"grad/{k}": v for k, v in variable_gradients.items()}
    return {key: keras.ops.convert_to_numpy(value) for key, value in record.items()}


def predict(model, inputs):
    """The model's inference outputs (jitted on JAX, where eager execution is slow)."""
    if keras.backend.backend() != "jax":
        return model(inputs, training=False)
    import jax

    @jax.jit
    def call(trainable, non_trainable, images):
        return model.stateless_call(trainable, non_trainable, images, training=False)[0]

    return call([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables], inputs)


def _loss(outputs, cotangents):
    return sum(keras.ops.sum(outputs[k] * cotangents[k]) for k in cotangents)


def _moving_statistics(model, values=None):
    """{path: value} of the batch-norm moving statistics (`values` replaces the variables' own, in order)."""
    values = values if values is not None else [v.value for v in model.non_trainable_variables]
    return {
        v.path: value
        for v, value in zip(model.non_trainable_variables, values, strict=True)
        if v.path.endswith(MOVING_STATISTICS)
    }


def _tensorflow_step(model, inputs, cotangents):
    import tensorflow as tf

    images = tf.constant(inputs)
    with tf.GradientTape() as tape:
        tape.watch(images)
        outputs = output_dict(model(images, training=True))
        loss = _loss(outputs, cotangents)
    variables = [v.value for v in model.trainable_variables]
    input_gradient, *gradients = tape.gradient(loss, [images, *variables])
    gradients = {
        v.path: tf.zeros_like(v.value) if g is None else tf.convert_to_tensor(g)
        for v, g in zip(model.trainable_variables, gradients, strict=True)
    }
    return outputs, _moving_statistics(model), input_gradient, gradients


def _jax_step(model, inputs, cotangents):
    import jax

    def loss(trainable, non_trainable, images):
        outputs, non_trainable = model.stateless_call(trainable, non_trainable, images, training=True)
        outputs = output_dict(outputs)
        return _loss(outputs, cotangents), (outputs, non_trainable)

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 2), has_aux=True))
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    (_, (outputs, non_trainable)), (gradients, input_gradient) = step(trainable, non_trainable, inputs)
    gradients = {v.path: g for v, g in zip(model.trainable_variables, gradients, strict=True)}
    return outputs, _moving_statistics(model, non_trainable), input_gradient, gradients


def _torch_step(model, inputs, cotangents):
    import torch

    images = torch.tensor(inputs, requires_grad=True)
    outputs = output_dict(model(images, training=True))
    loss = _loss(outputs, {k: torch.as_tensor(v) for k, v in cotangents.items()})
    variables = [v.value for v in model.trainable_variables]
    input_gradient, *gradients = torch.autograd.grad(loss, [images, *variables], allow_unused=True)
    gradients = {
        v.path: torch.zeros_like(v.value) if g is None else g
        for v, g in zip(model.trainable_variables, gradients, strict=True)
    }
    outputs = {k: v.detach() for k, v in outputs.items()}
    return outputs, _moving_statistics(model), input_gradient, gradients


def relative_error(actual, reference, scale=None):
    """max |actual - reference| / max(1, scale); `scale` defaults to max |reference|."""
    actual, reference = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    if scale is None:
        scale = np.max(np.abs(reference), initial=0.0)
    return float(np.max(np.abs(actual - reference), initial=0.0)) / max(1.0, float(scale))

"""Training on the JAX backend: panoptic `model.fit` and `keras.distribution.DataParallel`.

The panoptic batch comes from the TensorFlow pipeline (`panoptic_batch.py`, run by the
TensorFlow interpreter, see conftest.py); the training runs here, without TensorFlow.
"""

import os
import pathlib
import textwrap

import keras
import numpy as np
import pytest

from axial_tf.losses import PanopticLoss
from axial_tf.models import AxialDeepLab

# Both tests start a second Python (the TensorFlow pipeline, the two-device run): the full tier.
pytestmark = [
    pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX backend tests"),
    pytest.mark.full,
]

BACKENDS_DIR = pathlib.Path(__file__).resolve().parent
TINY_DEEPLAB = {
    "width_multiplier": 0.0625,
    "stem_width_multiplier": 0.125,
    "backbone_layer_multiplier": 0.34,
    "attention": {"num_heads": 2},
}
OUTPUT_KEYS = ("semantic_logits", "center_heatmap", "offset_map")


@pytest.fixture(scope="module")
def panoptic_batch(run_script, tmp_path_factory):
    """Four 65x65 demo images and their Panoptic-DeepLab targets, made by the TensorFlow pipeline."""
    path = tmp_path_factory.mktemp("panoptic_batch") / "batch.npz"
    run_script(BACKENDS_DIR / "panoptic_batch.py", path, "--batch_size", 4, "--crop_size", 65, 65)
    return dict(np.load(path))


def test_axial_deeplab_fits_the_panoptic_losses(panoptic_batch):
    """A tiny AxialDeepLab overfits one fixed batch with `model.fit` and `PanopticLoss.keras_losses`.

    Each epoch is one step on the same batch, so the history holds the loss of every step: it must
    fall to well under half its start, each of the three terms must fall (every head learns), and
    Keras' `loss` must be the sum of the three logged terms (no other term, e.g. a regularisation
    loss, enters it).
    """
    steps = 24
    keras.utils.set_random_seed(0)
    model = AxialDeepLab(
        "axial_deeplab_s", num_classes=int(panoptic_batch["num_classes"]), backbone_overrides=TINY_DEEPLAB
    )
    loss = PanopticLoss()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss.keras_losses())
    history = model.fit(
        panoptic_batch["image"], loss.fit_targets(panoptic_batch), batch_size=4, epochs=steps, verbose=0
    ).history

    total = np.array(history["loss"])  # [steps]
    terms = np.array([history[f"{key}_loss"] for key in OUTPUT_KEYS])  # [3, steps]
    assert total.shape == (steps,) and np.all(np.isfinite(total))
    assert np.all(terms > 0), "every panoptic term should take part in the loss"
    np.testing.assert_allclose(total, terms.sum(axis=0), rtol=1e-5)
    first, last = total[:5].mean(), total[-5:].mean()
    assert last < 0.5 * first, f"the loss did not fall: first 5 steps {total[:5]}, last 5 {total[-5:]}"
    for key, term in zip(OUTPUT_KEYS, terms):
        assert term[-5:].mean() < term[:5].mean(), f"the {key} loss did not fall: {term}"


# Trains the same model from the same initial weights on the same global batches, once on one
# device and once under DataParallel over the host's two devices, and saves the weights.
DATA_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import sys

    import jax
    import keras
    import numpy as np

    from axial_tf.layers import AxialBlock

    GLOBAL_BATCH, STEPS, SIZE = 8, 3, 16


    def build_model():
        inputs = keras.Input((SIZE, SIZE, 3))
        x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        x = AxialBlock([8, 8, 16], attention={"num_heads": 2})(x)  # [B, 16, 16, 16]
        outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
        return keras.Model(inputs, outputs)


    def train(initial_weights, images, labels):
        model = build_model()
        model.set_weights(initial_weights)
        model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(images, labels, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
        return model


    assert len(jax.devices()) == 2, jax.devices()
    rng = np.random.default_rng(0)
    images = rng.normal(size=(STEPS, 2, GLOBAL_BATCH // 2, SIZE, SIZE, 3)).astype("float32")
    images[:, 1] = 3.0 * images[:, 1] + 2.0  # the second device's half of each batch: other statistics
    images = images.reshape(STEPS * GLOBAL_BATCH, SIZE, SIZE, 3)
    labels = rng.integers(0, 4, size=STEPS * GLOBAL_BATCH)

    keras.utils.set_random_seed(0)
    initial = build_model().get_weights()
    single = train(initial, images, labels)
    with keras.distribution.DataParallel(devices=keras.distribution.list_devices()).scope():
        parallel = train(initial, images, labels)
    mesh_sizes = {variable.value.sharding.mesh.size for variable in parallel.weights}
    assert mesh_sizes == {2}, mesh_sizes
    runs = {"initial": initial, "single": single.get_weights(), "parallel": parallel.get_weights()}
    np.savez(
        sys.argv[1],
        names=np.array([variable.path for variable in single.weights]),
        **{f"{run}/{index}": weight for run, weights in runs.items() for index, weight in enumerate(weights)},
    )
    """
)


def test_data_parallel_matches_one_device(run_script, tmp_path, monkeypatch):
    """DataParallel over two host devices ends on the weights of the one-device run, batch norms included.

    A model with batch norm and an `AxialBlock` (whose attention has batch norms of its own) trains
    3 SGD steps of global batch 8 twice from the same initial weights: on one device, and under
    `keras.distribution.DataParallel` on two (XLA's forced host devices), which replicates the
    variables and gives each device 4 examples of every batch. Compared: every weight after
    training, trainable ones and the batch norms' moving means and variances. The two halves of
    each batch have different means and scales, so batch statistics taken per device (the mean of
    the two halves' variances, not the batch variance) would change the normalised activations,
    the gradients and the moving variances; under JAX's sharded jit Keras computes them over the
    global batch, and the weights agree within float32 round-off.
    """
    path = tmp_path / "weights.npz"
    script = tmp_path / "data_parallel.py"
    script.write_text(DATA_PARALLEL_SCRIPT)
    xla_flags = os.environ.get("XLA_FLAGS", "")  # the tier's compile settings (conftest.py), kept
    monkeypatch.setenv("XLA_FLAGS", f"{xla_flags} --xla_force_host_platform_device_count=2".strip())
    run_script(script, path, backend="jax")
    saved = np.load(path)
    names = saved["names"]
    initial, single, parallel = ([saved[f"{run}/{index}"] for index in range(len(names))]
                                 for run in ("initial", "single", "parallel"))

    assert any(name.endswith("moving_variance") for name in names)
    moved = max(np.max(np.abs(after - before)) for after, before in zip(single, initial))
    assert moved > 1e-2, "training should move the weights"
    differences = {name: np.max(np.abs(a - b)) for name, a, b in zip(names, single, parallel)}
    print(f"largest weight difference, one device vs DataParallel: {max(differences.values()):.3g}")
    for name, a, b in zip(names, single, parallel):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5, err_msg=name)

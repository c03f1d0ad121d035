"""A user's own functional model with an `AxialBlock` trains with `model.fit`, saves and loads."""

import keras
import numpy as np

from axial_tf.layers import AxialBlock
from backend_gradients import relative_error


def _separable_images(rng, count):
    """`count` noisy [12, 12, 3] images and their labels: a fixed pattern added (1) or subtracted (0)."""
    pattern = rng.normal(size=(12, 12, 3))
    labels = rng.integers(0, 2, size=count)
    images = rng.normal(size=(count, 12, 12, 3)) + np.where(labels, 1.0, -1.0)[:, None, None, None] * pattern
    return images.astype("float32"), labels


def _classifier():
    """[B, 12, 12, 3] images -> [B, 2] logits."""
    images = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(images)  # [B, 6, 6, 8]
    x = AxialBlock([8, 4, 16], attention={"num_heads": 2})(x)  # [B, 6, 6, 16]
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))  # [B, 16]
    return keras.Model(images, keras.layers.Dense(2)(x))


def test_fit_then_save_and_load(tmp_path):
    keras.utils.set_random_seed(0)
    images, labels = _separable_images(np.random.default_rng(0), 64)
    model = _classifier()
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    losses = model.fit(images, labels, batch_size=16, epochs=6, verbose=0).history["loss"]  # [epochs]

    assert losses[-1] < 0.5 * losses[0], losses
    model.save(tmp_path / "classifier.keras")
    loaded = keras.models.load_model(tmp_path / "classifier.keras", safe_mode=True)
    expected = model.predict(images, verbose=0)  # [64, 2]
    assert relative_error(loaded.predict(images, verbose=0), expected) <= 1e-5

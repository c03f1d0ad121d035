"""`.keras` files move between backends: a model saved here loads under TensorFlow and the other backend.

With test_parity.py (saved by TensorFlow, loaded here) the two backend sessions cover every
(saving, loading) pair of TensorFlow, JAX and PyTorch.
"""

import pathlib

import keras
import numpy as np
import pytest

from axial_tf.layers import AxialAttention2D, AxialBlock, ConvBN
from backend_gradients import output_dict, predict, relative_error
from tf_reference import randomize_batch_norms

TOLERANCE = 1e-5
SCRIPT = pathlib.Path(__file__).with_name("tf_reference.py")
OTHER_BACKEND = {"jax": "torch", "torch": "jax"}.get(keras.backend.backend())


def _model():
    """[B, 12, 12, 3] -> features [B, 3, 3, 16] and logits [B, 5]."""
    images = keras.Input((12, 12, 3))
    x = ConvBN(8, kernel_size=3, strides=2, activation="relu", name="stem")(images)  # [B, 6, 6, 8]
    x = AxialBlock([8, 4, 16], attention={"num_heads": 2, "span": 3}, name="block")(x)  # [B, 6, 6, 16]
    features = AxialAttention2D(8, num_heads=2, strides=2, name="attention")(keras.layers.ReLU()(x))  # [B, 3, 3, 16]
    logits = keras.layers.Dense(5, name="classifier")(keras.layers.GlobalAveragePooling2D()(features))
    return keras.Model(images, {"features": features, "logits": logits}, name="portable")


@pytest.fixture(scope="module")
def saved_here(tmp_path_factory):
    """(folder with model.keras and inputs.npz, this backend's outputs {name: array})."""
    folder = tmp_path_factory.mktemp("portability")
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    model = _model()
    randomize_batch_norms(model, rng)
    inputs = rng.uniform(size=(2, 12, 12, 3)).astype("float32")
    model.save(folder / "model.keras")
    np.savez(folder / "inputs.npz", input=inputs)
    outputs = {k: keras.ops.convert_to_numpy(v) for k, v in output_dict(predict(model, inputs)).items()}
    return folder, outputs


@pytest.mark.parametrize("backend", ["tensorflow", OTHER_BACKEND])
def test_loads_on_another_backend(saved_here, run_script, backend):
    folder, outputs = saved_here
    loaded_path = folder / f"outputs_{backend}.npz"

    run_script(SCRIPT, "predict", folder / "model.keras", folder / "inputs.npz", loaded_path, backend=backend)

    loaded = np.load(loaded_path)
    assert sorted(loaded.files) == sorted(f"output/{name}" for name in outputs)
    for name, expected in outputs.items():
        assert relative_error(loaded[f"output/{name}"], expected) <= TOLERANCE, name

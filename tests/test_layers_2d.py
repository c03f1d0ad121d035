"""AxialAttention2D, AxialBlock, ConvBN and DropPath: shapes, saving, training, XLA, precision."""

import subprocess
import sys

import numpy as np
import pytest

import keras
import tensorflow as tf
from axial_tf.layers import AxialAttention2D, AxialBlock, ConvBN, DropPath, runtime, runtime_settings


def _image(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("height,width", [(9, 11), (7, 4), (1, 5), (16, 15)])
@pytest.mark.parametrize("strides", [1, 2, 3])
@pytest.mark.sweep
def test_strided_attention_shapes(height, width, strides):
    layer = AxialAttention2D(filters=4, num_heads=2, strides=strides, span=(None, 3))
    y = layer(_image((2, height, width, 5)))
    expected = (2, -(-height // strides), -(-width // strides), 8)
    assert tuple(y.shape) == expected
    assert layer.compute_output_shape((2, height, width, 5)) == expected


def test_two_passes_equal_manual_composition():
    layer = AxialAttention2D(filters=4, num_heads=2, strides=2)
    x = _image((2, 5, 7, 3))
    y = np.asarray(layer(x))
    columns = np.transpose(x, (0, 2, 1, 3)).reshape(14, 5, 3)
    h = np.asarray(layer.height_axis(columns)).reshape(2, 7, 5, 8)[:, :, ::2]
    rows = np.transpose(h, (0, 2, 1, 3)).reshape(6, 7, 8)
    w = np.asarray(layer.width_axis(rows))[:, ::2].reshape(2, 3, 4, 8)
    np.testing.assert_allclose(y, w, atol=1e-5)


@pytest.mark.parametrize("kernel,strides,dilation,size", [(3, 2, 1, 9), (3, 2, 1, 10), (7, 2, 1, 11), (3, 1, 2, 8), (1, 2, 1, 7)])
def test_conv_bn_matches_deeplab_padding(kernel, strides, dilation, size):
    layer = ConvBN(3, kernel_size=kernel, strides=strides, dilation_rate=dilation, use_batch_norm=False)
    x = _image((1, size, size, 2))
    y = np.asarray(layer(x))
    effective = kernel + (kernel - 1) * (dilation - 1)
    before = (effective - 1) // 2
    padded = np.pad(x, ((0, 0), (before, effective - 1 - before), (before, effective - 1 - before), (0, 0)))
    expected = tf.nn.conv2d(padded, layer.conv.kernel, strides, "VALID", dilations=dilation) + layer.conv.bias
    np.testing.assert_allclose(y, expected, atol=1e-5)
    assert y.shape[1] == -(-size // strides)


def _record_band_calls(monkeypatch):
    """The arguments of every `ConvBN._convolve_bands` call from now on."""
    band_calls = []
    convolve_bands = ConvBN._convolve_bands
    monkeypatch.setattr(ConvBN, "_convolve_bands", lambda self, *a: band_calls.append(a) or convolve_bands(self, *a))
    return band_calls


@pytest.mark.parametrize("kernel,strides,dilation,size", [(3, 1, 1, (9, 7)), (3, 2, 1, (9, 7)), (3, 2, 1, (8, 8)),
                                                         (5, 1, 2, (11, 6)), (3, 1, 1, (1, 5))])
@pytest.mark.parametrize("use_batch_norm", [True, False])
@pytest.mark.sweep
def test_conv_bn_row_bands_equal_one_call(kernel, strides, dilation, size, use_batch_norm, monkeypatch):
    """Where row bands apply (oneDNN on the CPU), a convolution over the im2col bound runs on
    row bands: same outputs and gradients."""
    monkeypatch.setattr(runtime, "convolutions_on_onednn_cpu", lambda: True)
    band_calls = _record_band_calls(monkeypatch)
    whole = ConvBN(4, kernel, strides=strides, dilation_rate=dilation, use_batch_norm=use_batch_norm)
    banded = ConvBN(4, kernel, strides=strides, dilation_rate=dilation, use_batch_norm=use_batch_norm)
    x = _image((2, *size, 3))
    whole.build(x.shape)
    banded.build(x.shape)
    banded.set_weights(whole.get_weights())

    def gradients(layer):
        inputs = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(tf.sin(layer(inputs, training=True)))
        return tape.gradient(loss, [inputs, *[v.value for v in layer.trainable_variables]])

    expected = np.asarray(whole(x, training=False))
    expected_gradients = gradients(whole)
    assert not band_calls  # the default bound is far above these sizes
    # A bound below one output row: every band is a single row (the most bands).
    with runtime_settings(max_im2col_elements=1):
        signature = [tf.TensorSpec((None, None, None, 3))]
        dynamic = tf.function(lambda t: banded(t, training=False), input_signature=signature)
        np.testing.assert_allclose(np.asarray(banded(x, training=False)), expected, atol=1e-6)
        np.testing.assert_allclose(np.asarray(dynamic(x)), expected, atol=1e-6)
        for got, want in zip(gradients(banded), expected_gradients, strict=True):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    # Eager, traced (dynamic shape) and gradient calls took the banded path; one output row needs no bands.
    assert len(band_calls) == (3 if -(-size[0] // strides) > 1 else 1)


def test_conv_bn_row_band_plan(monkeypatch):
    monkeypatch.setattr(runtime, "convolutions_on_onednn_cpu", lambda: True)
    band_calls = _record_band_calls(monkeypatch)
    layer = ConvBN(8, 3, strides=2)
    x = _image((1, 10, 10, 3))
    expected = np.asarray(layer(x))
    with runtime_settings(max_im2col_elements=3 * 9 * 5 * 2):  # 2 output rows of 5 columns
        np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-6)
    (_, out_rows, band, _, _), = band_calls
    assert (out_rows, band) == (5, 2)
    assert "max_im2col_elements" not in layer.get_config()


@pytest.mark.parametrize("onednn_cpu, bound", [(False, 1), (True, None)])
def test_conv_bn_is_one_call_where_row_bands_do_not_apply(onednn_cpu, bound, monkeypatch):
    """GPU, other backends or oneDNN off (or bands turned off): one convolution, also in a
    dynamic-shape graph, which then holds no conditional."""
    monkeypatch.setattr(runtime, "convolutions_on_onednn_cpu", lambda: onednn_cpu)
    band_calls = _record_band_calls(monkeypatch)
    layer = ConvBN(4, 3, strides=2)
    x = _image((1, 9, 7, 3))
    expected = np.asarray(layer(x))
    with runtime_settings(max_im2col_elements=bound):
        dynamic = tf.function(lambda t: layer(t), input_signature=[tf.TensorSpec((None, None, None, 3))])
        graph = dynamic.get_concrete_function().graph
        np.testing.assert_allclose(np.asarray(dynamic(x)), expected, atol=1e-6)
    assert not band_calls
    assert not {op.type for op in graph.get_operations()} & {"If", "StatelessIf"}


def test_drop_path_unknown_batch_and_expectation():
    drop = DropPath(keep_prob=0.75, seed=3)
    fn = tf.function(lambda x: drop(x, training=True), input_signature=[tf.TensorSpec([None, 2, 2, 1])])
    y = np.asarray(fn(np.ones((4000, 2, 2, 1), "float32")))
    per_sample = y.reshape(4000, -1)
    assert np.all((per_sample == 0).all(1) | np.isclose(per_sample, 1 / 0.75).all(1))  # whole samples dropped
    assert abs(per_sample.mean() - 1.0) < 0.05
    np.testing.assert_array_equal(np.asarray(drop(np.ones((3, 2), "float32"))), np.ones((3, 2)))


# Logical CPU devices must be configured before TensorFlow initialises, hence a subprocess.
_DROP_PATH_REPLICAS_SCRIPT = """
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from axial_tf.layers import DropPath

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    drop = DropPath(keep_prob=0.5, seed=7)
step = tf.function(lambda: strategy.run(lambda: drop(tf.ones((64, 3)), training=True)))
masks = [[r.numpy()[:, 0].tolist() for r in strategy.experimental_local_results(step())] for _ in range(2)]
states = [v.numpy().tolist() for v in strategy.experimental_local_results(drop.seed_generator.state.value)]
print("RESULT", json.dumps({"masks": masks, "states": states}))
"""


@pytest.mark.full
def test_drop_path_masks_differ_across_replicas():
    """Under MirroredStrategy each replica drops its own samples (masks were once identical)."""
    import json

    run = subprocess.run([sys.executable, "-c", _DROP_PATH_REPLICAS_SCRIPT], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT", 1)[1])
    masks = np.asarray(result["masks"])  # [step, replica, sample]
    assert set(np.unique(masks)) <= {0.0, 2.0}  # whole samples, kept ones scaled by 1 / keep_prob
    assert not np.array_equal(masks[0, 0], masks[0, 1])  # replicas draw independently
    assert not np.array_equal(masks[0], masks[1])  # and anew at every step
    assert result["states"][0] == result["states"][1]  # from one shared random state
    assert 0.3 < masks.mean() / 2 < 0.7


@pytest.mark.parametrize(
    "filters,attention",
    [([8, 4, 16], {"num_heads": 2}), ([8, 4, 16], {"num_heads": 2, "span": 3}), ([4, 4, 16], None), ([16, 16], None)],
)
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.sweep
def test_block_shapes_and_identity_start(filters, attention, strides):
    block = AxialBlock(filters, strides=strides, attention=attention)
    x = _image((2, 7, 9, 16))
    y = np.asarray(block(x))
    assert y.shape == (2, -(-7 // strides), -(-9 // strides), 16)
    # Zero-initialised last gamma: a fresh block is ReLU(input), subsampled.
    np.testing.assert_allclose(y, np.maximum(x, 0)[:, ::strides, ::strides], atol=1e-6)


def _user_model():
    inputs = keras.Input((None, None, 3))
    x = ConvBN(16, 3, strides=2, activation="relu", name="stem")(inputs)
    x = AxialBlock([16, 8, 16], attention={"num_heads": 2, "span": 5}, drop_path_keep_prob=0.9, name="block")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    outputs = keras.layers.Dense(3)(x)
    return keras.Model(inputs, outputs)


@pytest.mark.full
def test_user_model_trains_saves_and_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    model = _user_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 12, 12, 3)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int32") + (x[:, 0, 0, 0] > 1)
    history = model.fit(x, y, batch_size=8, epochs=6, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = tmp_path / "user_model.keras"
    model.save(path)
    probe = _image((2, 10, 14, 3), seed=5)  # a size the model has not seen
    np.save(tmp_path / "probe.npy", probe)
    np.save(tmp_path / "expected.npy", np.asarray(model(probe)))
    # A fresh process: only `import axial_tf` registers the classes; safe_mode stays on.
    script = (
        "import numpy as np, keras, axial_tf, sys\n"
        f"m = keras.models.load_model(r'{path}', safe_mode=True)\n"
        f"y = np.asarray(m(np.load(r'{tmp_path / 'probe.npy'}')))\n"
        f"np.testing.assert_allclose(y, np.load(r'{tmp_path / 'expected.npy'}'), atol=1e-5)\n"
        "print('reloaded ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reloaded ok" in result.stdout


@pytest.mark.parametrize("attention", [{"num_heads": 2}, {"num_heads": 2, "span": 3}])
@pytest.mark.full
def test_xla_equals_eager(attention):
    block = AxialBlock([8, 4, 8], strides=2, attention=attention)
    x = _image((2, 9, 7, 8))
    block(x)
    for variable in block.weights:  # non-trivial weights, so the comparison means something
        if "gamma" in variable.path:
            variable.assign(np.full(variable.shape, 0.7, "float32"))
    for training in (False, True):
        eager = np.asarray(block(x, training=training))
        compiled = tf.function(lambda t: block(t, training=training), jit_compile=True)
        np.testing.assert_allclose(np.asarray(compiled(x)), eager, atol=1e-4)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.full
def test_block_runs_under_mixed_precision_and_xla(policy):
    keras.mixed_precision.set_global_policy(policy)
    block = AxialBlock([8, 4, 8], strides=2, attention={"num_heads": 2, "span": 3})
    x = _image((2, 9, 7, 8))
    y = tf.function(lambda t: block(t, training=True), jit_compile=True)(x)
    assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
    assert np.isfinite(np.asarray(y, np.float32)).all()
    assert all(v.dtype == "float32" for v in block.weights)


@pytest.mark.parametrize("layer", [
    AxialAttention2D(filters=4, num_heads=2, span=(3, None), strides=2, max_span=16, name="a2d"),
    AxialBlock([8, 4, 8], strides=2, attention={"num_heads": 2}, drop_path_keep_prob=0.8, name="blk"),
    ConvBN(4, 3, strides=2, dilation_rate=1, activation="relu", depthwise=True, name="dw"),
])
@pytest.mark.sweep
def test_config_round_trip(layer):
    x = _image((1, 5, 6, 8))
    layer(x)
    clone = layer.__class__.from_config(layer.get_config())
    clone(x)
    assert clone.get_config() == layer.get_config()
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(layer(x)), atol=1e-6)
    assert keras.saving.get_registered_name(layer.__class__).startswith("axial_tf>")


@pytest.mark.parametrize(
    "kwargs,expected_shape",
    [
        ({}, (2, 5, 5, 1024)),
        ({"filters": 32}, (2, 5, 5, 64)),
        ({"value_expansion": 1}, (2, 5, 5, 512)),
        ({"strides": 2}, (2, 3, 3, 1024)),
    ],
)
@pytest.mark.sweep
def test_attention_2d_defaults_follow_deeplab2_signature(kwargs, expected_shape):
    # DeepLab2's AxialAttention2D(): filters 512, 8 heads, key x1, value x2, stride 1.
    layer = AxialAttention2D(**kwargs)
    x = np.zeros((2, 5, 5, 32), "float32")  # [B, H, W, C]
    assert layer(x).shape == expected_shape
    clone = AxialAttention2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone(x).shape == expected_shape

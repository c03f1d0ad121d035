"""Runtime settings: defaults, the context, reading at call time, and configs saved when they were layer arguments."""

import json
import threading
import warnings
import zipfile

import numpy as np
import pytest

import keras
from axial_tf.layers import (
    AxialAttention,
    AxialAttention2D,
    AxialBlock,
    ConvBN,
    RuntimeSettings,
    axial_attention_fast,
    get_runtime_settings,
    runtime,
    runtime_settings,
)


def test_defaults_and_validation():
    assert get_runtime_settings() == RuntimeSettings(max_chunk_logits=2**26, max_im2col_elements=2**26)
    with pytest.raises(ValueError, match="max_chunk_logits must be positive or None"):
        RuntimeSettings(max_chunk_logits=0)
    assert RuntimeSettings(max_chunk_logits=None).max_chunk_logits is None
    with pytest.raises(ValueError, match="max_im2col_elements must be positive or None"):
        with runtime_settings(max_im2col_elements=0):
            pass
    with pytest.raises(TypeError):
        with runtime_settings(max_chunk_logit=1):
            pass


def test_context_nests_restores_and_reaches_other_threads():
    default = get_runtime_settings()
    seen_by_thread = []
    with pytest.raises(RuntimeError):
        with runtime_settings(max_chunk_logits=100) as outer:
            assert get_runtime_settings() is outer
            with runtime_settings(max_im2col_elements=None):
                assert get_runtime_settings() == RuntimeSettings(max_chunk_logits=100, max_im2col_elements=None)
                # Replica threads of a tf.distribute strategy must see what the caller set.
                thread = threading.Thread(target=lambda: seen_by_thread.append(get_runtime_settings()))
                thread.start()
                thread.join()
            assert get_runtime_settings() == outer
            raise RuntimeError("leaves the block")
    assert get_runtime_settings() == default
    assert seen_by_thread == [RuntimeSettings(max_chunk_logits=100, max_im2col_elements=None)]


@pytest.fixture
def chunk_bounds(monkeypatch):
    """The `max_chunk_logits` of every chunk loop the attention layers trace or run, in order."""
    bounds = []
    map_chunks = axial_attention_fast.map_sequence_chunks
    monkeypatch.setattr(
        axial_attention_fast, "map_sequence_chunks", lambda *args: bounds.append(args[-1]) or map_chunks(*args)
    )
    return bounds


def test_attention_reads_the_chunk_bound_at_call_time(chunk_bounds):
    chunked = chunk_bounds
    layer = AxialAttention(8, 12, 2)
    x = np.random.default_rng(0).normal(size=(4, 7, 6)).astype("float32")
    expected = np.asarray(layer(x))
    assert chunked == []
    with runtime_settings(max_chunk_logits=2 * 7 * 7 * 2):  # two sequences a chunk
        np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-6)
    assert chunked == [2 * 7 * 7 * 2]
    assert "max_chunk_logits" not in layer.get_config()


def test_no_chunk_bound_never_loops_even_on_unknown_sizes(chunk_bounds):
    """The bound needs static sizes: traced with unknown ones the layer loops over chunks, unless the
    bound is None (as when a graph is traced for export, where a loop could not be converted)."""
    import tensorflow as tf

    chunked = chunk_bounds
    layer = AxialAttention(8, 12, 2)
    x = np.random.default_rng(0).normal(size=(4, 7, 6)).astype("float32")
    expected = np.asarray(layer(x))
    any_size = [tf.TensorSpec([None, None, 6], tf.float32)]
    np.testing.assert_allclose(tf.function(layer, input_signature=any_size)(x).numpy(), expected, atol=1e-6)
    assert chunked == [2**26]
    with runtime_settings(max_chunk_logits=None):
        np.testing.assert_allclose(tf.function(layer, input_signature=any_size)(x).numpy(), expected, atol=1e-6)
    assert chunked == [2**26]


@pytest.mark.parametrize(
    "cls, config, retired",
    [
        (AxialAttention, dict(total_key_depth=8, total_value_depth=12, num_heads=2), "max_chunk_logits"),
        (AxialAttention2D, dict(filters=4, num_heads=2), "max_chunk_logits"),
        (ConvBN, dict(filters=4, kernel_size=3), "max_im2col_elements"),
    ],
)
def test_configs_with_retired_arguments_load_with_one_note(cls, config, retired, monkeypatch):
    monkeypatch.setattr(runtime, "_noted_arguments", set())
    old_config = {**cls(**config).get_config(), retired: 2**20}
    with pytest.warns(UserWarning, match=f"Ignoring `{retired}`.*runtime setting") as notes:
        layer = cls.from_config(old_config)
    assert len(notes) == 1
    assert retired not in layer.get_config()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: the second config loads silently
        cls.from_config(old_config)


def _with_retired_arguments(config):
    """A `.keras` config.json as an older axial_tf wrote it: runtime settings among the layer arguments."""
    if isinstance(config, dict):
        name = config.get("registered_name")
        layer_config = config.get("config")
        if name in ("axial_tf>AxialAttention", "axial_tf>AxialAttention2D"):
            layer_config["max_chunk_logits"] = 2**20
        elif name == "axial_tf>AxialBlock":
            layer_config["attention"]["max_chunk_logits"] = 2**20
        elif name == "axial_tf>ConvBN":
            layer_config["max_im2col_elements"] = 2**20
        for value in config.values():
            _with_retired_arguments(value)
    elif isinstance(config, list):
        for value in config:
            _with_retired_arguments(value)
    return config


def test_keras_file_saved_with_runtime_arguments_loads(tmp_path, monkeypatch):
    inputs = keras.Input((6, 5, 3))
    x = ConvBN(8, 3, name="stem")(inputs)
    x = AxialBlock([8, 4, 8], attention={"num_heads": 2}, name="block")(x)
    x = AxialAttention2D(filters=4, num_heads=2, name="attention_2d")(x)
    outputs = AxialAttention(8, 8, 2, name="height_attention")(x)
    model = keras.Model(inputs, outputs)
    probe = np.random.default_rng(0).normal(size=(2, 6, 5, 3)).astype("float32")
    expected = np.asarray(model(probe))
    current, old = tmp_path / "current.keras", tmp_path / "old.keras"
    model.save(current)
    with zipfile.ZipFile(current) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = _with_retired_arguments(json.loads(data))
                assert json.dumps(config).count("max_chunk_logits") == 3
                data = json.dumps(config).encode()
            target.writestr(item, data)

    monkeypatch.setattr(runtime, "_noted_arguments", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = keras.models.load_model(old, safe_mode=True)
    notes = [str(w.message) for w in caught if "runtime setting" in str(w.message)]
    assert len(notes) == 2  # one line per retired argument, however many layers held it
    np.testing.assert_allclose(np.asarray(loaded(probe)), expected, atol=1e-5)
    assert "max_chunk_logits" not in json.dumps(loaded.get_config())

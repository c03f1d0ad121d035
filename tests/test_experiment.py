"""The experiment layer: the task registry, the checkpoint layout and the optimizer-free Evaluator."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from training_helpers import TINY_PANOPTIC

from axial_tf.experiment.checkpoints import (
    CHECKPOINT_SUBDIR,
    checkpoint_step,
    initialize_from,
    model_checkpoint_items,
    resolve_checkpoint,
)
from axial_tf.experiment.config import load_config
from axial_tf.experiment.tasks import TASKS, build_model, task_class, task_for_config, task_of_model
from axial_tf.models import AxialDeepLab, AxialResNetClassifier, AxialSemanticDeepLab
from axial_tf.training.evaluator import Evaluator


def test_registry_names_every_task_and_its_model():
    assert set(TASKS) == {"panoptic", "semantic", "classification"}
    for name, model_class in (("panoptic", AxialDeepLab), ("semantic", AxialSemanticDeepLab),
                              ("classification", AxialResNetClassifier)):
        assert task_class(name).name == name and task_class(name).model_class is model_class
    with pytest.raises(ValueError, match="Unknown task 'panoptik'; known tasks: panoptic, classification, semantic"):
        task_class("panoptik")
    with pytest.raises(ValueError, match="Dense is not the model of any task"):
        task_of_model(keras.layers.Dense(2))


def test_every_task_accepts_its_default_metrics():
    for task in TASKS.values():
        assert task.default_metrics and set(task.default_metrics) <= set(task.metric_names)


def test_checkpoint_step_reads_the_layouts_numbering():
    assert checkpoint_step("/runs/x/checkpoints/ckpt-1500") == 1500
    assert checkpoint_step("model.keras") == 0
    assert checkpoint_step("/runs/x/checkpoints/ckpt-12.index") == 0  # a file, not a prefix


def _save_model_checkpoint(model, model_dir, step):
    """Writes `model`'s variables as the trainer lays them out: MODEL_DIR/checkpoints/ckpt-{step}."""
    checkpoint = tf.train.Checkpoint(**model_checkpoint_items(model))
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(model_dir, CHECKPOINT_SUBDIR), max_to_keep=1)
    return manager.save(checkpoint_number=step)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A model directory holding a checkpoint of the tiny panoptic model at step 7."""
    model_dir = tmp_path_factory.mktemp("run")
    config = load_config(TINY_PANOPTIC)
    keras.utils.set_random_seed(11)
    model = build_model(config, sync_batch_norm=False)
    prefix = _save_model_checkpoint(model, model_dir, 7)
    return config, model_dir, model, prefix


def test_resolve_and_initialize_from_a_model_directory(tiny_run):
    config, model_dir, trained, prefix = tiny_run
    assert resolve_checkpoint(model_dir) == prefix
    keras.utils.set_random_seed(12)
    fresh = build_model(config, sync_batch_norm=False)
    report = initialize_from(fresh, model_dir)
    # A second model in one process names its dropout seed generators anew: only those are missed.
    assert report["restored"] == len(fresh.weights)
    assert all("seed_generator" in path for path in report["missing"])
    for a, b in zip(fresh.weights, trained.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        initialize_from(fresh, model_dir / "nowhere")


@pytest.mark.full
def test_evaluator_needs_no_optimizer_and_reports_the_checkpoints_step(tiny_run, tmp_path):
    config, model_dir, _, prefix = tiny_run
    # Another model built first in this process: Keras names the evaluator's random-generator
    # states anew, which the restore tolerates (they are no weights).
    build_model(config, sync_batch_norm=False)
    evaluator = Evaluator(config, model_dir, tf.distribute.get_strategy(), log=None)
    assert not hasattr(evaluator, "optimizer")
    assert evaluator.restore(model_dir) == prefix and evaluator.step == 7
    metrics = evaluator.evaluate(output_dir=tmp_path / "eval")
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["step"] == 7 and written["pq"] == pytest.approx(metrics["pq"])
    assert set(metrics) >= {"pq", "sq", "rq", "miou"}


def test_a_task_object_builds_without_preparing_its_dataset(tmp_path):
    """Export and prediction make serving modules on machines without the data."""
    config = load_config(TINY_PANOPTIC, [f"data.data_dir={tmp_path / 'no_data_here'}"])
    task = task_for_config(config)
    assert task.info.num_classes == 7 and task.postprocess_options.label_divisor == 1000
    assert not (tmp_path / "no_data_here").exists()

"""The trainer: strategies, exact resume, NaN handling, evaluation and the command line."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from training_helpers import (
    TINY_PANOPTIC,
    assert_same_weights,
    checkpoint_weights,
    run_tool,
    run_training,
    train_command,
)


@pytest.mark.full
def test_default_and_mirrored_two_replicas_train_the_same(tmp_path):
    # SGD: Adam's first steps are ~lr * sign(gradient), which turns round-off in
    # near-zero gradients (summed in another order across replicas) into lr-sized changes.
    # No drop path (its masks are drawn per replica, so they depend on the layout) and
    # no top-k pixel mining (round-off can swap which pixels are "hardest").
    # Clipping is active (the gradient norm is far above 0.05): it must see the gradient
    # summed over replicas, as on one device, with a backbone group of its own.
    sgd = ("optimizer.name=sgd", "optimizer.learning_rate=0.01", "model.backbone_overrides.drop_path_keep_prob=1.0",
           "losses.semantic_top_k_percent=1.0", "optimizer.clip_gradient_norm=0.05",
           "optimizer.backbone_lr_multiplier=0.5")
    run_training(TINY_PANOPTIC, tmp_path / "one", *sgd, extra=["--cpu_devices", "2"])
    run_training(TINY_PANOPTIC, tmp_path / "two", *sgd, extra=["--cpu_devices", "2", "--strategy", "mirrored"])
    one, two = checkpoint_weights(tmp_path / "one"), checkpoint_weights(tmp_path / "two")
    assert_same_weights(one, two, atol=1e-4, rtol=1e-4)  # float32 round-off of two SGD steps
    # The steps changed the weights (the comparison is not between two initialisations).
    after_first_step = checkpoint_weights(tmp_path / "one", step=1)
    assert any(not np.allclose(after_first_step[k], one[k]) for k in one)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.full
def test_multi_worker_mirrored_two_local_workers(tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        command = train_command(TINY_PANOPTIC, tmp_path / "run", extra=["--strategy", "multi_worker_mirrored"])
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-4000:]
    chief = checkpoint_weights(tmp_path / "run")
    other = checkpoint_weights(tmp_path / "run" / ".worker_worker_1")
    assert_same_weights(chief, other)
    assert (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.full
def test_resume_after_sigkill_is_exact(tmp_path):
    overrides = ("training.steps=8", "training.checkpoint_interval=2")
    run_training(TINY_PANOPTIC, tmp_path / "straight", *overrides)
    expected = checkpoint_weights(tmp_path / "straight")

    process = subprocess.Popen(train_command(TINY_PANOPTIC, tmp_path / "killed", *overrides),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    # Kill once the manager has recorded a checkpoint (its state file is written last).
    while time.time() < deadline and tf.train.latest_checkpoint(str(checkpoints)) is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert tf.train.latest_checkpoint(str(checkpoints)), "the run never reached its first checkpoint"
    assert not list(checkpoints.glob("ckpt-8.index")), "the run finished before it could be killed"
    resumed = run_training(TINY_PANOPTIC, tmp_path / "killed", *overrides)
    assert "Resumed from" in resumed.stdout
    assert_same_weights(checkpoint_weights(tmp_path / "killed"), expected)


@pytest.mark.parametrize("in_order", [False, True])
@pytest.mark.full
def test_gradient_sums_are_not_rewritten_into_arrival_order_accumulation(tmp_path, in_order):
    # Grappler's memory optimizer turns a 3-input AddN over large tensors into a temporary
    # variable accumulated in whatever order the inputs finish (the source of run-to-run
    # drift under load). The executed graph is dumped to see which form ran.
    script = f"""
import tensorflow as tf
from axial_tf.training.trainer import keep_gradient_sums_in_order
if {in_order}:
    keep_gradient_sums_in_order()

@tf.function
def sum_of_three(x):  # [4096, 4096]: 64 MB per term, past 80% of the CPU device's 256 MB
    return tf.add_n([tf.sin(x), tf.cos(x), tf.exp(x)])

sum_of_three(tf.zeros([4096, 4096]))
"""
    env = dict(os.environ, TF_DUMP_GRAPH_PREFIX=str(tmp_path), TF_DUMP_GRAPH_NAME_FILTER="*")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    executed = list(tmp_path.glob("__inference_sum_of_three_*after_partition_passes.pbtxt"))
    assert len(executed) == 1, sorted(path.name for path in tmp_path.iterdir())
    graph = executed[0].read_text()
    assert ('op: "TemporaryVariable"' in graph) != in_order
    assert ('op: "AddN"' in graph) == in_order


@pytest.mark.full
def test_nan_loss_stops_with_clear_message_and_keeps_last_checkpoint(tmp_path):
    result = run_training(TINY_PANOPTIC, tmp_path / "nan", "training.steps=30", "optimizer.name=sgd",
                          "optimizer.learning_rate=1e30", "optimizer.momentum=0.0", check=False)
    assert result.returncode != 0
    assert "Training diverged at step" in result.stderr and "NaN or Inf" in result.stderr
    assert "Traceback" not in result.stderr
    step = int(result.stderr.split("Training diverged at step ")[1].split(":")[0])
    prefix = tf.train.latest_checkpoint(str(tmp_path / "nan" / "checkpoints"))
    assert prefix is not None and int(prefix.rsplit("-", 1)[1]) == step - 1
    weights = checkpoint_weights(tmp_path / "nan")
    assert all(np.isfinite(v).all() for v in weights.values())


@pytest.mark.full
def test_config_errors_are_reported_without_traceback(tmp_path):
    result = run_training(TINY_PANOPTIC, tmp_path / "bad", "training.stepz=3", check=False)
    assert result.returncode != 0
    assert "training.stepz" in result.stderr and "did you mean 'steps'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def train_and_eval_run(tmp_path_factory):
    """A tiny `--mode train_and_eval` run (evaluates at its last step); returns (model_dir, result)."""
    model_dir = tmp_path_factory.mktemp("train_and_eval") / "run"
    return model_dir, run_training(TINY_PANOPTIC, model_dir, "evaluation.interval=2", extra=["--mode", "train_and_eval"])


@pytest.mark.full
def test_train_and_eval_writes_metrics_and_summaries(train_and_eval_run):
    model_dir, result = train_and_eval_run
    metrics = json.loads((model_dir / "eval" / "metrics.json").read_text())
    for key in ("pq", "sq", "rq", "miou"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["step"] == 2 and metrics["batches"] == 1
    assert list((model_dir / "train").glob("events.out.tfevents.*"))
    assert "Evaluation at step 2" in result.stdout


@pytest.mark.full
def test_evaluate_tool_reproduces_the_trainer_metrics(train_and_eval_run, tmp_path):
    """tools/evaluate.py on a model dir and on a .keras file gives the trainer's own evaluation."""
    from axial_tf.experiment.checkpoints import load_model
    from axial_tf.experiment.config import load_config

    model_dir, _ = train_and_eval_run
    trained = json.loads((model_dir / "eval" / "metrics.json").read_text())
    load_model(load_config(TINY_PANOPTIC), model_dir=model_dir).save(tmp_path / "model.keras")
    # The checkpoint restores the step with the optimizer; a .keras file carries no step.
    for source, output, step in ((["--model_dir", str(model_dir)], "from_dir", 2),
                                 (["--checkpoint", str(tmp_path / "model.keras")], "from_keras", 0)):
        result = run_tool("evaluate", "--config", TINY_PANOPTIC, *source, "--output_dir", str(tmp_path / output), "--save_predictions")
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = json.loads((tmp_path / output / "metrics.json").read_text())
        for key in ("pq", "sq", "rq", "pq_things", "pq_stuff", "miou"):
            assert metrics[key] == trained[key], (output, key)
        assert metrics["step"] == step
        assert len(list((tmp_path / output / "predictions").glob("*.png"))) == 4  # one batch of 4 images

    missing = run_tool("evaluate", "--config", TINY_PANOPTIC, "--checkpoint", str(model_dir / "checkpoints" / "ckpt-99"))
    assert missing.returncode != 0 and "ckpt-99" in missing.stderr and "Traceback" not in missing.stderr


def _tiny_classification_config(tmp_path):
    import PIL.Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 4)):
        for index, name in enumerate(("red", "blue")):
            folder = tmp_path / "images" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 60, size=(40, 44, 3)).astype(np.uint8)
                pixels[..., 0 if index == 0 else 2] += 180
                PIL.Image.fromarray(pixels).save(folder / f"{i}.png")
    config = tmp_path / "tiny_classification.yaml"
    config.write_text(f"""
model:
  task: classification
  backbone: axial_resnet_s
  backbone_overrides:
    width_multiplier: 0.0625
    stem_width_multiplier: 0.125
    backbone_layer_multiplier: 0.34
    attention: {{num_heads: 2}}
  output_stride: 32
  num_classes: 2
data:
  dataset: image_folder_classification
  builder_options: {{config: {{name: tinycolours, root: "{tmp_path / 'images'}"}}}}
  crop_size: [32, 32]
  shuffle_buffer_size: 8
optimizer: {{name: sgd, learning_rate: 0.01}}
training: {{steps: 2, batch_size: 4, checkpoint_interval: 1, summary_interval: 1, sync_batch_norm: true}}
evaluation: {{batch_size: 4, metrics: [top1, top5]}}
""")
    return config


@pytest.mark.full
def test_classification_default_and_mirrored_and_eval(tmp_path):
    config = _tiny_classification_config(tmp_path)
    run_training(config, tmp_path / "one", extra=["--cpu_devices", "2"])
    run_training(config, tmp_path / "two", extra=["--cpu_devices", "2", "--strategy", "mirrored", "--mode",
                                                  "train_and_eval"])
    assert_same_weights(checkpoint_weights(tmp_path / "one"), checkpoint_weights(tmp_path / "two"),
                        atol=1e-4, rtol=1e-4)
    metrics = json.loads((tmp_path / "two" / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= 1.0 and metrics["top5"] == 1.0  # 2 classes: top-5 always hits
    assert metrics["batches"] == 2  # all 8 validation images


def test_tiny_axial_deeplab_loss_falls(tmp_path):
    from axial_tf.experiment.config import load_config
    from axial_tf.training.trainer import Trainer

    config = load_config(TINY_PANOPTIC, overrides=[
        "training.steps=30", "training.checkpoint_interval=30", "optimizer.learning_rate=0.003",
        "model.backbone_overrides.drop_path_keep_prob=1.0",
    ])
    trainer = Trainer(config, str(tmp_path), tf.distribute.get_strategy(), log=None)
    batch = next(iter(trainer.task.train_dataset_fn(8)(None)))

    def loss():
        return float(trainer.task.losses(trainer.model, batch, training=True)["total_loss"])

    before = loss()
    trainer.train()
    assert loss() < 0.7 * before
    # training.deterministic kept this thread's gradient sums in order.
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
    from tensorflow.python.eager import context

    function_config = config_pb2.ConfigProto.FromString(context.context().function_call_options.config_proto_serialized)
    assert function_config.graph_options.rewrite_options.memory_optimization == rewriter_config_pb2.RewriterConfig.NO_MEM_OPT

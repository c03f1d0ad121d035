"""The checkpoint layout: where checkpoints live, how they are found, restored, saved and initialised from.

Layout: a training model directory holds its checkpoints in `MODEL_DIR/checkpoints/` (written by
`tf.train.CheckpointManager`, `ckpt-N`), every model variable under its Keras path
(`model_checkpoint_items`), next to the optimizer state. Evaluation, export and prediction read
weights with `restore_weights` (every variable required); fine-tuning reads them with
`initialize_from` (what matches). A `.keras` file is always loaded with `safe_mode=True`.

Errors name the checkpoint:

TensorFlow reports a damaged checkpoint from deep inside its reader, with a different error for
each kind of damage (measured on TF 2.21): a truncated `.data-*` file gives an `IndexError` ("Read
less bytes than requested"), flipped bytes a `DataLossError` (checksum), a damaged `.index` an
`OpError` ("not an sstable"), a missing file a `NotFoundError`. Every restore in axial_tf goes
through `try_restore`, which reads the files back first and turns all of them into one
`UnreadableCheckpointError` naming `ckpt-N`, and a model/checkpoint mismatch into a `ValueError`
naming the first missing variables.
A failed save (full disk, read-only folder) becomes a `ModelDirError`; the manager records a
checkpoint only after its files are complete, so the earlier checkpoints stay the resumable state.
"""

import contextlib
import os
import re
import zipfile

import keras
import tensorflow as tf
from google.protobuf import text_format

from axial_tf.checkpoints.deeplab2_converter import load_deeplab2_checkpoint
from axial_tf.experiment.tasks import task_for_config, task_of_model

from axial_tf.utils.files import ModelDirError, failure_reason, write_text_atomically

CHECKPOINT_SUBDIR = "checkpoints"  # MODEL_DIR/checkpoints/ckpt-N
RANDOM_STATE_SUFFIX = "seed_generator_state"  # Keras' random-generator state variables
UNREADABLE_SUBDIR = "unreadable"
STATE_FILENAME = "checkpoint"  # CheckpointManager's list of checkpoints in a directory
# What TensorFlow's checkpoint reader raises for truncated, corrupt or missing files.
READ_ERRORS = (tf.errors.OpError, IndexError)


class UnreadableCheckpointError(ValueError):
    """A checkpoint's files are truncated, corrupt or missing.

    Attributes:
        prefix: The checkpoint prefix, e.g. ".../checkpoints/ckpt-4".
        reason: TensorFlow's one-line description of the damage.
    """

    def __init__(self, prefix, reason, advice=""):
        self.prefix, self.reason = prefix, reason
        super().__init__(f"Checkpoint {prefix} is unreadable (truncated or corrupt: {reason})"
                         + (f"; {advice}" if advice else "") + ".")


def try_restore(checkpoint, prefix, partial=False, described="", files_checked=False):
    """Restores `checkpoint` from `prefix` and checks that every object of it found its values.

    The files are read back completely first, so a damaged checkpoint fails before anything is
    restored (a restore that fails half-way leaves TensorFlow's restore state behind, which printed
    warnings, or at interpreter exit tracebacks, after the caller's error message).

    Args:
        checkpoint: A `tf.train.Checkpoint`.
        prefix: The checkpoint prefix to read.
        partial: Allow values in the file that `checkpoint` does not use (e.g. the optimizer
            of a training checkpoint read for its weights).
        described: Words about the model for the mismatch error, e.g. " (backbone 'x')".
        files_checked: The caller has just read every tensor back (`checkpoint_damage`), so
            they are not read again.

    Returns:
        None on success, else the error to raise: an `UnreadableCheckpointError`, or a
        `ValueError` when the checkpoint lacks variables of the model or has other shapes.
        It is returned, not raised, so that callers can try another checkpoint and raise
        their own error outside TensorFlow's.
    """
    damage = None if files_checked else checkpoint_damage(prefix)
    if damage is not None:
        return UnreadableCheckpointError(prefix, damage)
    # A value whose variable does not exist yet is restored later, and that pending restore keeps
    # TF's restore state alive until exit, where it warns after the caller's error. The save
    # counter is the one variable a Checkpoint creates lazily: create it now.
    _ = checkpoint.save_counter
    status = None
    try:
        status = checkpoint.restore(prefix)
        (status.expect_partial() if partial else status).assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:  # missing variables / shape mismatches
        if status is not None:
            status.expect_partial()  # the error says it all; TF would repeat it at exit
        return ValueError(f"Checkpoint {prefix} does not hold every variable of the model the config "
                          f"describes{described}: {short_restore_error(error)}")
    return None


def checkpoint_damage(prefix):
    """TF's one-line description of what is wrong with a checkpoint's files, or None if every tensor reads back.

    Args:
        prefix: The checkpoint prefix.

    Returns:
        e.g. "Read less bytes than requested" for a truncated `.data-*` file, or None.
    """
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)  # checks the tensor's checksum
    except READ_ERRORS as error:
        return failure_reason(error)
    return None


def restore_checkpoint(checkpoint, prefix, partial=False, described="", files_checked=False):
    """`try_restore` that raises its error (see there for the arguments)."""
    error = try_restore(checkpoint, prefix, partial=partial, described=described, files_checked=files_checked)
    if error is not None:
        raise error


def short_restore_error(error):
    """TF's restore error without the variable values it prints: the count and a few variable paths."""
    text = str(error)
    paths = re.findall(r"<Variable path=([^,]+),", text)
    if not paths:
        return text.splitlines()[0] if text else type(error).__name__
    return text.split(" Showing")[0] + " First missing: " + ", ".join(paths[:5]) + "."


def save_checkpoint(manager, step):
    """Saves `manager`'s checkpoint as `ckpt-{step}`; a failed write leaves the directory as it was.

    Args:
        manager: The run's `tf.train.CheckpointManager`.
        step: The checkpoint number.

    Raises:
        ModelDirError: The write failed (e.g. disk full); the message names the checkpoint and
            the last complete one, which a rerun resumes from.
    """
    try:
        manager.save(checkpoint_number=step)
        return
    except (tf.errors.OpError, OSError) as error:
        reason = failure_reason(error)
    # TF writes into ckpt-N_temp/ and renames it only when complete; drop the partial folder.
    for partial in tf.io.gfile.glob(os.path.join(manager.directory, f"ckpt-{step}_temp*")):
        tf.io.gfile.rmtree(partial)
    kept = manager.latest_checkpoint
    raise ModelDirError(
        f"Cannot write checkpoint {os.path.join(manager.directory, f'ckpt-{step}')}: {reason}. The model "
        f"directory is unchanged: {'its last checkpoint ' + os.path.basename(kept) if kept else 'it has no checkpoint'}"
        " is kept, and rerunning resumes from there."
    )


def set_aside_newer_than(directory, intact):
    """Moves the checkpoints newer than `intact` into `directory/unreadable/` and makes `intact` the latest.

    The files are kept (not deleted) for inspection; the manager's state file then lists only
    `intact` and the checkpoints before it, so a new `CheckpointManager` resumes from `intact`.

    Args:
        directory: The checkpoint directory.
        intact: The prefix of the checkpoint to resume from, as the state file lists it.

    Returns:
        The basenames of the checkpoints set aside.
    """
    state = tf.train.get_checkpoint_state(directory)  # paths made absolute
    paths = list(state.all_model_checkpoint_paths)
    position = paths.index(intact) + 1
    target = os.path.join(directory, UNREADABLE_SUBDIR)
    tf.io.gfile.makedirs(target)
    for prefix in paths[position:]:
        for path in tf.io.gfile.glob(prefix + ".*"):
            tf.io.gfile.rename(path, os.path.join(target, os.path.basename(path)), overwrite=True)
    # The state file as CheckpointManager writes it (paths relative to the directory), without
    # the checkpoints set aside; TF's function for this is deprecated.
    state.model_checkpoint_path = os.path.basename(intact)
    del state.all_model_checkpoint_paths[:]
    state.all_model_checkpoint_paths.extend(os.path.basename(path) for path in paths[:position])
    del state.all_model_checkpoint_timestamps[position:]
    write_text_atomically(os.path.join(directory, STATE_FILENAME), text_format.MessageToString(state))
    return [os.path.basename(prefix) for prefix in paths[position:]]


def resolve_checkpoint(path):
    """The checkpoint prefix named by a model directory, a checkpoint directory or a prefix.

    Args:
        path: `MODEL_DIR` (latest of `MODEL_DIR/checkpoints`), a directory of
            checkpoints (its latest), or a prefix such as `.../ckpt-3000`.

    Returns:
        The checkpoint prefix.

    Raises:
        FileNotFoundError: If no checkpoint is found there, or `path` does not exist at all.
    """
    path = os.fspath(path)
    if not tf.io.gfile.exists(path) and not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"{path} does not exist: it is neither a model directory nor a checkpoint prefix "
                                f"(there is no {path}.index either).")
    if tf.io.gfile.isdir(path):
        prefix = tf.train.latest_checkpoint(os.path.join(path, CHECKPOINT_SUBDIR)) or tf.train.latest_checkpoint(path)
        if prefix is None:
            raise FileNotFoundError(
                f"No checkpoint in {path} or {os.path.join(path, CHECKPOINT_SUBDIR)} (looked for a 'checkpoint' "
                "index file written by tf.train.CheckpointManager)."
            )
        return prefix
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"Checkpoint {path!r} not found: {path}.index does not exist.")
    return path


def checkpoint_step(path):
    """The training step of a checkpoint of this layout (`ckpt-N` is written at step N); 0 for other files."""
    number = re.fullmatch(r"ckpt-(\d+)", os.path.basename(os.fspath(path)))
    return int(number.group(1)) if number else 0


@contextlib.contextmanager
def _global_dtype_policy(name):
    """Builds layers under the Keras dtype policy `name`, then restores the previous one."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def load_keras_model(path):
    """Loads an axial_tf `.keras` model with `safe_mode=True` (no lambdas, no pickles).

    Args:
        path: A `.keras` file written by `model.save` or `tools/convert_checkpoint.py`.

    Returns:
        The Keras model, uncompiled.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: The file is no `.keras` archive (e.g. truncated), or it refers to code that
            safe mode does not load (a Python lambda, an unregistered function or class); one line
            naming the file and the culprit.
    """
    path = os.fspath(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Keras model {path!r} not found.")
    with tf.io.gfile.GFile(path, "rb") as stream:
        if not zipfile.is_zipfile(stream):
            raise ValueError(f"{path} is not a .keras archive (a zip file written by model.save); it may be truncated.")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except (ValueError, TypeError, OSError, KeyError, zipfile.BadZipFile) as error:
        reason = _keras_load_reason(error)
    raise ValueError(f"Cannot load {path} safely: {reason}.")


def _keras_load_reason(error):
    """The innermost cause of a Keras deserialisation error, on one line.

    Keras nests the error of each enclosing layer and model, and prints their configs, into one
    message; the last "Exception encountered:" part is the actual culprit.
    """
    text = str(error).split("Exception encountered:")[-1].strip()
    if "Lambda" in text and "safe_mode" in text:
        return ("it holds a Lambda layer with a Python lambda, which safe mode refuses to deserialise "
                "(it could run arbitrary code)")
    function = re.search(r"Could not locate (function|class) '([^']+)'", text)
    if function:
        return (f"it refers to the {function.group(1)} {function.group(2)!r}, which is not one of axial_tf's "
                "or Keras's registered objects; safe mode loads no other code")
    return text.splitlines()[0].split(". ")[0] if text else type(error).__name__


def load_model(config=None, model_dir=None, checkpoint=None, keras_model=None):
    """The model of an experiment, from a training checkpoint or a `.keras` file.

    A checkpoint restores only the model's weights (the trainer's checkpoint
    also holds the optimizer state) into the model the config
    describes, built under the config's `training.mixed_precision` policy as
    evaluation builds it. Every model variable must be found in the checkpoint.

    Args:
        config: The `ExperimentConfig` (required with a checkpoint; with a
            `.keras` model it is used to check the task and class count).
        model_dir: A training model directory (latest checkpoint).
        checkpoint: A checkpoint prefix or directory (a `.keras` path counts
            as `keras_model`).
        keras_model: A `.keras` file.

    Returns:
        An `AxialDeepLab` or `AxialResNetClassifier`.

    Raises:
        ValueError: Not exactly one source, a checkpoint without config, or a
            model that does not match the config.
        FileNotFoundError: The source does not exist.
    """
    sources = {"model_dir": model_dir, "checkpoint": checkpoint, "keras_model": keras_model}
    given = [name for name, value in sources.items() if value]
    if len(given) != 1:
        raise ValueError(f"Give exactly one of model_dir, checkpoint and keras_model; got {given or 'none'}.")
    if checkpoint and os.fspath(checkpoint).endswith(".keras"):  # as tools/evaluate.py accepts it
        checkpoint, keras_model = None, checkpoint
    if keras_model:
        model = load_keras_model(keras_model)
        if config is not None:
            _check_model_matches_config(model, config, keras_model)
        return model
    if config is None:
        raise ValueError(f"Restoring {given[0]} {sources[given[0]]!r} needs the experiment config that built it.")
    with _global_dtype_policy(config.training.mixed_precision):
        model = task_for_config(config).build_model(sync_batch_norm=False)
    restore_weights(model, model_dir or checkpoint, config=config)
    return model


def restore_weights(model, source, config=None, extra_items=None):
    """Restores every weight of a built `model` from a training checkpoint or a `.keras` file.

    Args:
        model: The model to fill (e.g. the trainer's, built under its strategy).
        source: A `.keras` file, a model directory, a checkpoint directory or a
            checkpoint prefix (see `resolve_checkpoint`).
        config: The `ExperimentConfig` that built `model`, named in errors.
        extra_items: Further `tf.train.Checkpoint` items to restore from a
            training checkpoint (e.g. the optimizer, which holds the step);
            a `.keras` file has none, so they keep their values.

    Returns:
        The checkpoint prefix or `.keras` path that was read.

    Raises:
        ValueError: The source does not hold every weight of `model` with its shape, or a
            `.keras` file cannot be loaded safely.
        UnreadableCheckpointError: The checkpoint is truncated or corrupt (a `ValueError`;
            the message names ckpt-N).
        FileNotFoundError: The source does not exist.
    """
    source = os.fspath(source)
    described = (
        f" (backbone {config.model.backbone!r}, {config.model.num_classes} classes)" if config is not None else ""
    )
    if source.endswith(".keras"):
        weights = load_keras_model(source).weights
        if len(weights) != len(model.weights):
            raise ValueError(
                f"{source} has {len(weights)} weights; the model the config describes{described} has "
                f"{len(model.weights)}."
            )
        for target, value in zip(model.weights, weights):
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(
                    f"{source}: {value.path} has shape {tuple(value.shape)}; the model the config "
                    f"describes{described} has {tuple(target.shape)} there."
                )
            target.assign(value)
        return source
    prefix = resolve_checkpoint(source)
    # The trainer's layout: every variable under its Keras path. Shapes and names are compared
    # first: a restore that fails inside TensorFlow leaves its pending values behind, which it
    # reports as warnings at exit, after the caller's error line.
    shapes = _checkpoint_shapes(prefix)
    variables = model_checkpoint_items(model)["model_variables"]
    # Random-generator states (dropout, drop path) are no weights: Keras names them by a process-wide
    # counter, so a model built after another one in the same process looks for other names.
    variables = {path: variable for path, variable in variables.items()
                 if _variable_key(path) in shapes or not path.endswith(RANDOM_STATE_SUFFIX)}
    items = {"model_variables": variables}
    mismatch = _layout_mismatch(variables, shapes)
    if mismatch:
        raise ValueError(f"Checkpoint {prefix} does not hold every variable of the model the config "
                         f"describes{described}: {mismatch}.")
    restore_checkpoint(tf.train.Checkpoint(**items, **(extra_items or {})), prefix, partial=True, described=described,
                       files_checked=True)  # by _checkpoint_shapes
    return prefix


def _variable_key(path):
    """The checkpoint key of the model variable at Keras path `path` (`model_checkpoint_items` layout)."""
    return f"model_variables/{_escape(path)}/.ATTRIBUTES/VARIABLE_VALUE"


def _layout_mismatch(variables, shapes, shown=5):
    """What keeps the checkpoint `shapes` (`{key: shape}`) from filling `variables` (`{path: variable}`), or ""."""
    missing, reshaped = [], []
    for path, variable in variables.items():
        key = _variable_key(path)
        if key not in shapes:
            missing.append(path)
        elif tuple(shapes[key]) != tuple(variable.shape):
            reshaped.append(f"{path} {tuple(shapes[key])} in the checkpoint, {tuple(variable.shape)} in the model")
    problems = []
    if missing:
        problems.append(f"{len(missing)} variable(s) missing, first: {', '.join(missing[:shown])}")
    if reshaped:
        problems.append(f"{len(reshaped)} with another shape, first: {'; '.join(reshaped[:shown])}")
    return "; ".join(problems)


def _check_model_matches_config(model, config, source):
    task = task_of_model(model)
    if task != config.model.task:
        raise ValueError(f"{source} is a {task} model but the config's model.task is {config.model.task!r}.")
    if model.num_classes != config.model.num_classes:
        raise ValueError(
            f"{source} has {model.num_classes} classes but the config's model.num_classes is "
            f"{config.model.num_classes}."
        )


def model_checkpoint_items(model):
    """Checkpoint items holding every model variable under its unique Keras path.

    TF's object tracking does not see Keras 3 layers kept in lists (stages,
    blocks) nor the random-generator states, so the variables are saved as one
    flat mapping `path -> variable`, which covers all of them.
    """
    variables = {variable.path: variable for variable in model.variables}
    if len(variables) != len(model.variables):
        raise ValueError(f"{model.name} has variables with the same path; they cannot be checkpointed by name.")
    return {"model_variables": variables}


def initialize_from(model, path):
    """Partial initialisation for fine-tuning from a checkpoint or `.keras` model.

    Accepts an axial_tf `.keras` file (loaded in safe mode), an axial_tf training
    checkpoint (a prefix, a checkpoint directory or a model directory, see
    `resolve_checkpoint`), or a DeepLab2 checkpoint. Variables found with a matching shape
    are restored; the rest keep their initial values.

    Returns:
        dict with `restored` (count) and `missing` (names of model variables not restored).

    Raises:
        FileNotFoundError: No checkpoint at `path`.
        UnreadableCheckpointError: The checkpoint is truncated or corrupt.
        ValueError: The `.keras` file cannot be loaded safely.
    """
    path = os.fspath(path)
    if path.endswith(".keras"):
        source = load_keras_model(path)
        values = {v.path: v for v in source.weights}
        restored, missing = 0, []
        for variable in model.weights:
            match = values.get(variable.path)
            if match is not None and tuple(match.shape) == tuple(variable.shape):
                variable.assign(match)
                restored += 1
            else:
                missing.append(variable.path)
        return {"restored": restored, "missing": missing}
    prefix = resolve_checkpoint(path)
    shapes = _checkpoint_shapes(prefix)
    if any(key.startswith("encoder/_") for key in shapes):  # DeepLab2's layout
        report = load_deeplab2_checkpoint(model, prefix, strict=False)
        return {"restored": report["restored"], "missing": report["missing"]}
    saved = {key.split("/.ATTRIBUTES")[0] for key in shapes if key.startswith("model_variables/")}
    targets = model_checkpoint_items(model)["model_variables"]
    present = {}
    for path, variable in targets.items():
        key = "model_variables/" + _escape(path)
        if key in saved and tuple(shapes[key + "/.ATTRIBUTES/VARIABLE_VALUE"]) == tuple(variable.shape):
            present[path] = variable
    restore_checkpoint(tf.train.Checkpoint(model_variables=present), prefix, partial=True,
                       files_checked=True)  # by _checkpoint_shapes
    return {"restored": len(present), "missing": sorted(set(targets) - set(present))}


def _checkpoint_shapes(prefix):
    """`{key: shape}` of a checkpoint; raises UnreadableCheckpointError if its files are damaged."""
    damage = checkpoint_damage(prefix)
    if damage is not None:
        raise UnreadableCheckpointError(prefix, damage)
    return tf.train.load_checkpoint(prefix).get_variable_to_shape_map()


def _escape(name):
    """How TF writes a dict key into a checkpoint key ('/' -> '.S', '.' -> '..')."""
    return name.replace(".", "..").replace("/", ".S")

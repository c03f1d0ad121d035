"""tf.data input pipelines for panoptic segmentation and classification.

Panoptic training: each epoch is a seeded shuffle of the records (as stored),
then per example (`panoptic_train_example`):
    decode -> random scale -> pad to the crop (image: pad value, label: void)
    -> random crop -> random horizontal flip -> photometric augmentation
    (-> light AutoAugment) -> target generation
then batch -> prefetch (`build_panoptic_train_dataset`).

Determinism: the example stream is a sequence of epochs, each a seeded shuffle
of the (sharded) records whose seed is a pure function of (seed, input pipeline
id, epoch); example n of the stream is augmented with seeds derived from (seed,
input pipeline id, n) by stateless ops, so a run is reproducible regardless of
threading, and a restored iterator continues exactly. The per-replica batch
size does not change the stream, so one worker gives the same examples with
any number of replicas.

Resume: a run resumed at stream position n starts at epoch n // epoch_size and
skips only n % epoch_size records, before they are decoded (the `*_dataset_fn`
helpers read the records as stored and decode after the skip), so its cost is
at most one epoch of record reads at any step.

Distribution: the `*_dataset_fn` helpers return a function of a
`tf.distribute.InputContext` for `strategy.distribute_datasets_from_function`;
each input pipeline reads a disjoint shard and batches per replica.
"""

import functools

import tensorflow as tf

from axial_tf.data import augment
from axial_tf.data import builders
from axial_tf.data import records
from axial_tf.data.inference import classification_eval_image
from axial_tf.targets import PanopticTargetGenerator

AUTOTUNE = tf.data.AUTOTUNE
# Mixed into the shuffle seed so that workers shuffle differently.
_SHUFFLE_SEED_STRIDE = 1_000_003
# The graph-level seed of the per-epoch shuffles (any nonzero constant).
_SHUFFLE_GRAPH_SEED = 1
# The "endless" stream ends after this many epochs, which no run reaches.
_LAST_EPOCH = 2**62
# A shuffle made inside `flat_map` holds a seed-generator resource, which makes saving an
# iterator fail by default; that generator is a dummy without state (the seeds are the
# shuffle's inputs and its position is in the iterator's own state), so it can be ignored.
_CHECKPOINTABLE = tf.data.Options()
_CHECKPOINTABLE.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE


def _epoch_shuffle_seed(seed, input_pipeline_id, epoch):
    """The shuffle seed of one epoch, a pure function of its arguments.

    Args:
        seed: Python int, the run's seed.
        input_pipeline_id: Python int or scalar tensor, the reading worker.
        epoch: int64 scalar tensor.

    Returns:
        int64 scalar tensor.
    """
    worker_seed = tf.constant(seed, tf.int64) * _SHUFFLE_SEED_STRIDE + tf.cast(
        input_pipeline_id, tf.int64
    )
    key = tf.stack([worker_seed, tf.cast(epoch, tf.int64)])
    return tf.random.stateless_uniform([], key, minval=None, maxval=None, dtype=tf.int64)


def _epoch_size(records):
    """The number of records of one epoch; the epoch order and the resume position need it."""
    count = tf.get_static_value(records.cardinality())
    if count is None or count < 0:
        raise ValueError(
            "The training records have no known count (e.g. after `filter`), which the resumable "
            "epoch order needs: apply `tf.data.experimental.assert_cardinality(count)` to them."
        )
    if count == 0:
        raise ValueError("The training records are empty.")
    return int(count)


def _numbered_stream(
    records, decode_record, seed, input_pipeline_id, shuffle_buffer_size, cache, start_example
):
    """The endless, seeded-shuffled `(decoded record, position)` stream from `start_example` on.

    Epoch e is `records` shuffled with `_epoch_shuffle_seed(seed, input_pipeline_id, e)`,
    so the stream from any position is computed from that position alone: a resumed
    run starts at its epoch and skips the rest inside it, still undecoded.

    Args:
        records: Dataset of records (one epoch, finite, known count).
        decode_record: Function of a record returning it decoded, or None when
            `records` are decoded already.
        seed: Seed of shuffling.
        input_pipeline_id: The reading worker.
        shuffle_buffer_size: Shuffle buffer (records).
        cache: Decode once and keep the decoded records in memory.
        start_example: The position of the first element.

    Returns:
        A `tf.data.Dataset` of (decoded record, int64 position).
    """
    if start_example < 0:
        raise ValueError(f"start_example must be >= 0, got {start_example}.")
    if cache:
        if decode_record is not None:
            # Decoding is what the cache saves, so it holds decoded records; the price is
            # that a resumed run decodes its whole first epoch (small datasets only).
            records = records.map(decode_record, num_parallel_calls=AUTOTUNE, deterministic=True)
            decode_record = None
        records = records.cache()
    epoch_size = _epoch_size(records)

    def epoch_order(epoch):
        if not tf.executing_eagerly():  # tracing (always, except in tf.data's debug mode)
            # `shuffle` pairs its seed with the graph-level seed: the process's global seed when
            # set, on which the order should not depend, and with which a tensor seed fails when
            # it is 0 (`seeds == (0, 0)` in TF's `get_seed`). This function's graph gets its own.
            tf.random.set_seed(_SHUFFLE_GRAPH_SEED)
        return records.shuffle(
            shuffle_buffer_size,
            seed=_epoch_shuffle_seed(seed, input_pipeline_id, epoch),
            reshuffle_each_iteration=False,
        )

    first_epoch, skipped_in_epoch = divmod(start_example, epoch_size)
    epochs = tf.data.Dataset.range(first_epoch, _LAST_EPOCH)
    stream = epochs.flat_map(epoch_order).skip(skipped_in_epoch)
    if decode_record is not None:
        stream = stream.map(decode_record, num_parallel_calls=AUTOTUNE, deterministic=True)
    numbered = tf.data.Dataset.zip((stream, tf.data.Dataset.counter(start_example)))
    return numbered.with_options(_CHECKPOINTABLE)


def read_encoded_split(builder, split, input_context=None):
    """The records of `builders.read_split`, as stored, and the function that decodes one.

    Training pipelines decode after shuffling and skipping, so that the
    examples a resumed run skips are read but never decoded.

    Args:
        builder: A prepared builder.
        split: Split name (TFDS slicing works too).
        input_context: Optional `tf.distribute.InputContext`.

    Returns:
        (`tf.data.Dataset` of encoded records in file order, the same shard as
        `builders.read_split`; function of an encoded record returning the record
        as `builders.read_split` gives it).
    """
    encoded = builders.read_split(builder, split, input_context, decoded=False)
    return encoded, builder.info.features.decode_example


def default_target_generator(info, **kwargs):
    """A `PanopticTargetGenerator` for a dataset's label space.

    Args:
        info: The dataset's `PanopticDatasetInfo`.
        **kwargs: Further generator options (sigma, small_instance_area, ...).

    Returns:
        A `PanopticTargetGenerator`.
    """
    return PanopticTargetGenerator(
        label_divisor=info.label_divisor,
        thing_class_ids=info.thing_class_ids,
        ignore_label=info.ignore_label,
        **kwargs,
    )


def panoptic_train_example(image, panoptic_label, seeds, crop_size, info, augmentation, pad_value):
    """Augments one panoptic example to a training crop.

    Args:
        image: uint8 or float [H, W, 3] in [0, 255].
        panoptic_label: int32 [H, W].
        seeds: int64 [augment.NUM_EXAMPLE_SEEDS, 2] (`augment.example_seeds`).
        crop_size: (height, width) of the crop.
        info: The dataset's `PanopticDatasetInfo`.
        augmentation: `augment.AugmentationOptions`.
        pad_value: Image padding value.

    Returns:
        (image float32 [h, w, 3] in [0, 255], panoptic_label int32 [h, w]).
    """
    image = tf.cast(image, tf.float32)
    label = tf.cast(panoptic_label, tf.int32)
    image, label = augment.random_scale(
        image,
        label,
        seeds[0],
        augmentation.min_scale,
        augmentation.max_scale,
        augmentation.scale_step,
    )
    image, label = augment.pad_to_size(image, label, crop_size, pad_value, info.void_label)
    image, label = augment.random_crop(image, label, seeds[1], crop_size)
    image, label = augment.random_horizontal_flip(
        image, label, seeds[2], augmentation.flip_probability
    )
    image = augment.photometric_augment(image, seeds[3], augmentation)
    if augmentation.autoaugment_probability > 0:
        image = augment.light_autoaugment(image, seeds[4], augmentation.autoaugment_probability)
    image = tf.ensure_shape(image, [crop_size[0], crop_size[1], 3])
    label = tf.ensure_shape(label, crop_size)
    return image, label


def build_panoptic_train_dataset(
    examples,
    info,
    crop_size,
    batch_size,
    seed=0,
    augmentation=augment.AugmentationOptions(),
    target_generator=None,
    shuffle_buffer_size=512,
    cache=False,
    input_pipeline_id=0,
    pad_value=127.5,
    start_example=0,
    decode_record=None,
):
    """The infinite, batched panoptic training stream of one input pipeline.

    Args:
        examples: Dataset of records (`records.py` layout), already sharded;
            decoded, or as stored when `decode_record` is given.
        info: The dataset's `PanopticDatasetInfo`.
        crop_size: (height, width) of the training crop.
        batch_size: Examples per batch (per replica under tf.distribute).
        seed: Seed of shuffling and augmentation.
        augmentation: `augment.AugmentationOptions`.
        target_generator: Callable int32 [h, w] -> dict of targets; by default
            `default_target_generator(info)`.
        shuffle_buffer_size: Shuffle buffer (examples).
        cache: Keep the decoded records in memory after the first epoch (for
            small datasets such as panoptic_shapes).
        input_pipeline_id: The reading worker (part of the shuffle and
            augmentation seeds).
        pad_value: Image padding value (the model's mean pixel).
        start_example: Examples of the stream to skip (a resumed run passes what
            it already consumed); the stream goes on exactly as an uninterrupted
            one from that position, and its cost is at most one epoch of skipped
            records, not decoded when `decode_record` is given.
        decode_record: Function decoding one record of `examples`, applied after
            the shuffle and the skip (see `read_encoded_split`); None when
            `examples` are decoded.

    Returns:
        A `tf.data.Dataset` of dicts: `image` float32 [B, h, w, 3] in
        [0, 255], `panoptic_label` int32 [B, h, w], and the targets
        (`semantic_label` int32 [B, h, w], `center_heatmap` float32 [B, h, w],
        `offset_map` float32 [B, h, w, 2], `semantic_weights`,
        `center_weights`, `offset_weights` float32 [B, h, w], `thing_mask`,
        `crowd_mask` bool [B, h, w]).
    """
    crop_size = tuple(int(side) for side in crop_size)
    target_generator = target_generator or default_target_generator(info)
    stream = _numbered_stream(
        examples, decode_record, seed, input_pipeline_id, shuffle_buffer_size, cache, start_example
    )

    def prepare(record, example_index):
        seeds = augment.example_seeds(seed, input_pipeline_id, example_index)
        image, label = panoptic_train_example(
            record[records.IMAGE_KEY],
            record[records.PANOPTIC_LABEL_KEY],
            seeds,
            crop_size,
            info,
            augmentation,
            pad_value,
        )
        targets = target_generator(label)
        targets = {
            name: tf.ensure_shape(value, crop_size + tuple(value.shape[2:]))
            for name, value in targets.items()
        }
        return {"image": image, "panoptic_label": label, **targets}

    stream = stream.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    return stream.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def panoptic_eval_example(record, preprocessor, info):
    """Preprocesses one record for evaluation, exactly as for prediction.

    Args:
        record: A record dict (`records.py` layout).
        preprocessor: The `InferencePreprocessor` shared with predict/export.
        info: The dataset's `PanopticDatasetInfo`.

    Returns:
        A dict: `image` float32 [H, W, 3], `panoptic_label` int32 [H, W] (same
        resize, void padding), `original_size` and `valid_size` int32 [2],
        `file_name` string.
    """
    image, meta = preprocessor.preprocess_image(record[records.IMAGE_KEY])
    label = preprocessor.preprocess_label(record[records.PANOPTIC_LABEL_KEY], meta, info.void_label)
    return {
        "image": image,
        "panoptic_label": label,
        **meta,
        "file_name": record[records.FILE_NAME_KEY],
    }


def build_panoptic_eval_dataset(examples, info, preprocessor, batch_size, drop_remainder=False):
    """One pass over the evaluation records, batched.

    Labels are resized and padded like the images (void padding), so metrics
    are computed at the model's input resolution; crop to `valid_size` (or
    rely on void being ignored) and use `preprocessor.restore` to go back to
    the original size. For datasets whose images already have the input size
    (panoptic_shapes, Cityscapes at 1025x2049 with "pad") nothing is resized.

    Args:
        examples: Dataset of records, already sharded.
        info: The dataset's `PanopticDatasetInfo`.
        preprocessor: An `InferencePreprocessor`.
        batch_size: Examples per batch.
        drop_remainder: Drop a last incomplete batch.

    Returns:
        A `tf.data.Dataset` of `panoptic_eval_example` dicts with a batch dim.
    """
    prepare = functools.partial(panoptic_eval_example, preprocessor=preprocessor, info=info)
    dataset = examples.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)


def panoptic_train_dataset_fn(builder, split, info, global_batch_size, **kwargs):
    """A `dataset_fn(input_context)` for `strategy.distribute_datasets_from_function`.

    Args:
        builder: A prepared panoptic builder.
        split: Split to read.
        info: The dataset's `PanopticDatasetInfo`.
        global_batch_size: Batch size summed over all replicas.
        **kwargs: Further arguments of `build_panoptic_train_dataset`.

    Returns:
        A function of an optional `tf.distribute.InputContext` returning the
        pipeline's dataset with per-replica batches.
    """

    def dataset_fn(input_context=None, **overrides):  # overrides, e.g. start_example
        context = input_context or tf.distribute.InputContext()
        encoded, decode_record = read_encoded_split(builder, split, context)
        return build_panoptic_train_dataset(
            encoded,
            info,
            batch_size=context.get_per_replica_batch_size(global_batch_size),
            input_pipeline_id=context.input_pipeline_id,
            decode_record=decode_record,
            **{**kwargs, **overrides},
        )

    return dataset_fn


def panoptic_eval_dataset_fn(
    builder, split, info, global_batch_size, preprocessor, drop_remainder=False
):
    """A `dataset_fn(input_context)` for distributed evaluation.

    Args and returns as for `panoptic_train_dataset_fn`, with the
    `InferencePreprocessor` and `drop_remainder` of `build_panoptic_eval_dataset`.
    """

    def dataset_fn(input_context=None):
        context = input_context or tf.distribute.InputContext()
        return build_panoptic_eval_dataset(
            builders.read_split(builder, split, context),
            info,
            preprocessor,
            batch_size=context.get_per_replica_batch_size(global_batch_size),
            drop_remainder=drop_remainder,
        )

    return dataset_fn


# ------------------------------------------------------------ classification


def classification_train_example(
    image, seeds, image_size, area_range=(0.08, 1.0), flip_probability=0.5
):
    """Random resized crop and flip of one classification image.

    Args:
        image: uint8 or float [H, W, 3] in [0, 255].
        seeds: int64 [augment.NUM_EXAMPLE_SEEDS, 2].
        image_size: Output side length.
        area_range: Range of the crop area as a fraction of the image.
        flip_probability: Chance of a horizontal flip.

    Returns:
        float32 [image_size, image_size, 3] in [0, 255].
    """
    whole_image = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])  # [1, 1, 4]
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=whole_image,
        seed=seeds[0],
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(tf.cast(image, tf.float32), begin, size)
    crop = tf.image.resize(crop, [image_size, image_size], method="bilinear")
    flip = tf.random.stateless_uniform([], seeds[1]) < flip_probability
    crop = tf.cond(flip, lambda: tf.reverse(crop, [1]), lambda: crop)
    return tf.ensure_shape(crop, [image_size, image_size, 3])


def build_classification_train_dataset(
    examples,
    image_size,
    batch_size,
    seed=0,
    shuffle_buffer_size=1024,
    cache=False,
    input_pipeline_id=0,
    area_range=(0.08, 1.0),
    flip_probability=0.5,
    start_example=0,
    decode_record=None,
):
    """The infinite, batched classification training stream of one pipeline.

    Args:
        examples: Dataset of classification records, already sharded; decoded,
            or as stored when `decode_record` is given.
        image_size: Output side length.
        batch_size: Examples per batch (per replica under tf.distribute).
        seed: Seed of shuffling and augmentation.
        shuffle_buffer_size: Shuffle buffer (examples).
        cache: Keep the decoded records in memory.
        input_pipeline_id: The reading worker.
        area_range: Random resized crop area range.
        flip_probability: Chance of a horizontal flip.
        start_example: Examples of the stream to skip (see the panoptic pipeline).
        decode_record: Function decoding one record of `examples` after the
            shuffle and the skip (see the panoptic pipeline).

    Returns:
        A `tf.data.Dataset` of dicts: `image` float32 [B, s, s, 3] in [0, 255],
        `label` int32 [B].
    """
    stream = _numbered_stream(
        examples, decode_record, seed, input_pipeline_id, shuffle_buffer_size, cache, start_example
    )

    def prepare(record, example_index):
        seeds = augment.example_seeds(seed, input_pipeline_id, example_index)
        image = classification_train_example(
            record[records.IMAGE_KEY], seeds, image_size, area_range, flip_probability
        )
        return {"image": image, "label": tf.cast(record[records.CLASS_LABEL_KEY], tf.int32)}

    stream = stream.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    return stream.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def build_classification_eval_dataset(
    examples, image_size, batch_size, crop_fraction=0.875, drop_remainder=False
):
    """One pass over classification records with the eval center crop.

    Returns:
        A `tf.data.Dataset` of dicts: `image` float32 [B, s, s, 3], `label`
        int32 [B], `file_name` string [B].
    """

    def prepare(record):
        return {
            "image": classification_eval_image(
                record[records.IMAGE_KEY], image_size, crop_fraction
            ),
            "label": tf.cast(record[records.CLASS_LABEL_KEY], tf.int32),
            "file_name": record[records.FILE_NAME_KEY],
        }

    dataset = examples.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)


def classification_train_dataset_fn(builder, split, global_batch_size, **kwargs):
    """A `dataset_fn(input_context)` for classification training."""

    def dataset_fn(input_context=None, **overrides):  # overrides, e.g. start_example
        context = input_context or tf.distribute.InputContext()
        encoded, decode_record = read_encoded_split(builder, split, context)
        return build_classification_train_dataset(
            encoded,
            batch_size=context.get_per_replica_batch_size(global_batch_size),
            input_pipeline_id=context.input_pipeline_id,
            decode_record=decode_record,
            **{**kwargs, **overrides},
        )

    return dataset_fn


def classification_eval_dataset_fn(builder, split, global_batch_size, **kwargs):
    """A `dataset_fn(input_context)` for classification evaluation."""

    def dataset_fn(input_context=None):
        context = input_context or tf.distribute.InputContext()
        return build_classification_eval_dataset(
            builders.read_split(builder, split, context),
            batch_size=context.get_per_replica_batch_size(global_batch_size),
            **kwargs,
        )

    return dataset_fn

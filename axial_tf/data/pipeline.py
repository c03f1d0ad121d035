"""tf.data input pipelines for panoptic segmentation and classification.

Panoptic training, per example (`panoptic_train_example`):
    decode -> random scale -> pad to the crop (image: pad value, label: void)
    -> random crop -> random horizontal flip -> photometric augmentation
    (-> light AutoAugment) -> target generation
then batch -> prefetch (`build_panoptic_train_dataset`).

Determinism: the example stream is a seeded shuffle of the (sharded) records;
example n of the stream is augmented with seeds derived from (seed, input
pipeline id, n) by stateless ops, so a run is reproducible regardless of
threading, and a restored iterator continues exactly. The per-replica batch
size does not change the stream, so one worker gives the same examples with
any number of replicas.

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


def _numbered_stream(examples, seed, input_pipeline_id, shuffle_buffer_size, cache, start_example):
    """The endless, seeded-shuffled `(example, position)` stream that augmentation seeds key on."""
    if cache:
        examples = examples.cache()
    examples = examples.shuffle(
        shuffle_buffer_size,
        seed=seed * _SHUFFLE_SEED_STRIDE + input_pipeline_id,
        reshuffle_each_iteration=True,
    ).repeat()
    return tf.data.Dataset.zip((examples, tf.data.Dataset.counter())).skip(start_example)


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
):
    """The infinite, batched panoptic training stream of one input pipeline.

    Args:
        examples: Dataset of records (`records.py` layout), already sharded.
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
        input_pipeline_id: The reading worker (part of the augmentation seed).
        pad_value: Image padding value (the model's mean pixel).
        start_example: Examples of the stream to skip (a resumed run passes what
            it already consumed); skipped examples are not augmented, and the
            rest get exactly the seeds they would have had.

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
    examples = examples.map(
        lambda record: (record[records.IMAGE_KEY], record[records.PANOPTIC_LABEL_KEY]),
        num_parallel_calls=AUTOTUNE,
    )
    stream = _numbered_stream(examples, seed, input_pipeline_id, shuffle_buffer_size, cache, start_example)

    def prepare(example, example_index):
        image, panoptic_label = example
        seeds = augment.example_seeds(seed, input_pipeline_id, example_index)
        image, label = panoptic_train_example(
            image, panoptic_label, seeds, crop_size, info, augmentation, pad_value
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
        return build_panoptic_train_dataset(
            builders.read_split(builder, split, context),
            info,
            batch_size=context.get_per_replica_batch_size(global_batch_size),
            input_pipeline_id=context.input_pipeline_id,
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
):
    """The infinite, batched classification training stream of one pipeline.

    Args:
        examples: Dataset of classification records, already sharded.
        image_size: Output side length.
        batch_size: Examples per batch (per replica under tf.distribute).
        seed: Seed of shuffling and augmentation.
        shuffle_buffer_size: Shuffle buffer (examples).
        cache: Keep the decoded records in memory.
        input_pipeline_id: The reading worker.
        area_range: Random resized crop area range.
        flip_probability: Chance of a horizontal flip.
        start_example: Examples of the stream to skip (see the panoptic pipeline).

    Returns:
        A `tf.data.Dataset` of dicts: `image` float32 [B, s, s, 3] in [0, 255],
        `label` int32 [B].
    """
    examples = examples.map(
        lambda record: (
            record[records.IMAGE_KEY],
            tf.cast(record[records.CLASS_LABEL_KEY], tf.int32),
        ),
        num_parallel_calls=AUTOTUNE,
    )
    stream = _numbered_stream(examples, seed, input_pipeline_id, shuffle_buffer_size, cache, start_example)

    def prepare(example, example_index):
        image, label = example
        seeds = augment.example_seeds(seed, input_pipeline_id, example_index)
        image = classification_train_example(image, seeds, image_size, area_range, flip_probability)
        return {"image": image, "label": label}

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
        return build_classification_train_dataset(
            builders.read_split(builder, split, context),
            batch_size=context.get_per_replica_batch_size(global_batch_size),
            input_pipeline_id=context.input_pipeline_id,
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

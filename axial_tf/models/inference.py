"""Dense inference: the functions shared by evaluation, prediction and export.

Keeping a single path is what makes `tools/evaluate.py`, `tools/predict.py` and
the exported SavedModel agree bit for bit on the same images.
"""

from keras import ops

from axial_tf.layers import resize_bilinear_align_corners


def _predict_at_scale(model, images, scale, flip, training=False):
    """Dense model outputs for `images` resized by `scale`, mapped back to `images`' grid.

    With `flip` the mirrored images run in the same model call (one graph per scale,
    and a larger batch for the matmuls), and the two halves are averaged. Returns a dict
    with `semantic_probs` [B, H, W, C] and, when the model predicts them (panoptic models),
    `center_heatmap` [B, H, W] and `offset_map` [B, H, W, 2].
    """
    size = ops.shape(images)[1:3]
    scaled = images
    if scale != 1.0:
        scaled_size = [ops.cast(ops.round(ops.cast(s, "float32") * scale), "int32") for s in (size[0], size[1])]
        scaled = resize_bilinear_align_corners(ops.cast(images, "float32"), scaled_size)
    if flip:
        scaled = ops.concatenate([scaled, ops.flip(scaled, axis=2)], axis=0)  # [2B, h, w, 3]
    outputs = model(scaled, training=training)
    maps = {"semantic_probs": ops.softmax(ops.cast(outputs["semantic_logits"], "float32"), axis=-1)}  # [.., h, w, C]
    if "center_heatmap" in outputs:
        maps["center_heatmap"] = ops.expand_dims(outputs["center_heatmap"], -1)  # [.., h, w, 1]
        maps["offset_map"] = outputs["offset_map"]  # [.., h, w, 2]
    if flip:
        batch = ops.shape(images)[0]

        def average_with_mirrored(t, mirror_sign=1.0):  # [2B, ...] -> [B, ...]
            return (t[:batch] + ops.flip(t[batch:], axis=2) * mirror_sign) / 2.0

        # A mirrored dx points the other way.
        signs = {"offset_map": ops.convert_to_tensor([1.0, -1.0])}
        maps = {name: average_with_mirrored(value, signs.get(name, 1.0)) for name, value in maps.items()}
    if scale != 1.0:
        scaled_size = ops.shape(maps["semantic_probs"])[1:3]
        ratio = ops.stack([
            ops.cast(size[i] - 1, "float32") / ops.cast(ops.maximum(scaled_size[i] - 1, 1), "float32")
            for i in (0, 1)
        ])
        maps = {name: resize_bilinear_align_corners(value, size) for name, value in maps.items()}
        if "offset_map" in maps:  # offsets are lengths in pixels of the resized image
            maps["offset_map"] = maps["offset_map"] * ratio
    if "center_heatmap" in maps:
        maps["center_heatmap"] = maps["center_heatmap"][..., 0]
    return maps


def predict_dense(model, images, scales=(1.0,), flip=False):
    """Semantic probabilities, center heatmap and offsets, averaged over scales and flips.

    Every scale runs on the image resized by that factor (the model handles any
    size), and its outputs are resized back before averaging; with `flip` each
    scale also runs on the mirrored image. `scales=(1.0,)`, `flip=False` is a
    single forward pass.

    Args:
        model: an `AxialDeepLab` or `AxialSemanticDeepLab` (or any model with
            their output dict).
        images: float `[B, H, W, 3]` images in [0, 255].
        scales: input scale factors.
        flip: also average the horizontally flipped predictions.

    Returns:
        dict with `semantic_probs` [B, H, W, C] and, for a panoptic model,
        `center_heatmap` [B, H, W] and `offset_map` [B, H, W, 2] (float32).
    """
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive factors, got {scales!r}.")
    runs = [_predict_at_scale(model, images, float(s), flip) for s in scales]
    return {name: sum(run[name] for run in runs) / len(runs) for name in runs[0]}


def predict_panoptic(model, images, postprocess_options, scales=(1.0,), flip=False):
    """Dense predictions plus the panoptic post-processing (see `panoptic_postprocess`).

    Returns:
        The dict of `predict_dense` plus `panoptic_pred`, `semantic_pred`,
        `instance_pred`, `instance_center_pred` and `instance_scores`.
    """
    # The post-processing is TensorFlow's (tf.math ops with no keras.ops twin); `predict_dense`
    # stays importable without it.
    from axial_tf.postprocessing import panoptic_postprocess

    dense = predict_dense(model, images, scales, flip)
    panoptic = panoptic_postprocess(
        dense["semantic_probs"], dense["center_heatmap"], dense["offset_map"], postprocess_options
    )
    return {**dense, **panoptic}


def predict_semantic(model, images, scales=(1.0,), flip=False):
    """Semantic probabilities averaged over scales and flips, and their arg-max.

    Returns:
        dict with `semantic_probs` float32 [B, H, W, C] and `semantic_pred` int32 [B, H, W].
    """
    probs = predict_dense(model, images, scales, flip)["semantic_probs"]
    return {"semantic_probs": probs, "semantic_pred": ops.cast(ops.argmax(probs, axis=-1), "int32")}

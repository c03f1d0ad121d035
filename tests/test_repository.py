"""The README stays true: its test command is what CI runs, and its layer example runs."""

import re

import numpy as np

from conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    command = re.search(r"^(\./run tests)\b", quick_start, re.MULTILINE).group(1)
    ci_lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines


def test_readme_layer_example_builds_trains_and_saves(tmp_path):
    block = README.split("## Using the layers in your own Keras model", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    model = namespace["model"]
    x = np.random.default_rng(0).normal(size=(4, 37, 29, 3)).astype("float32")
    model.fit(x, np.arange(4) % 10, epochs=1, verbose=0)
    model.save(tmp_path / "readme.keras")
    import keras

    reloaded = keras.models.load_model(tmp_path / "readme.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(x)), np.asarray(model(x)), atol=1e-5)


def test_every_shipped_config_loads_and_names_known_models():
    from axial_tf.models import list_backbones
    from axial_tf.training.config import load_config

    configs = sorted((REPO_ROOT / "configs").rglob("*.yaml"))
    assert len(configs) >= 9
    for path in configs:
        config = load_config(path)
        assert config.model.backbone in list_backbones(), path


def test_cityscapes_configs_follow_deeplab2():
    from axial_tf.models import backbone_config
    from axial_tf.training.config import load_config

    config = load_config(REPO_ROOT / "configs" / "cityscapes" / "axial_swidernet_1_1_3_os16.yaml")
    assert config.model.num_classes == 19 and config.data.crop_size == [1025, 2049]
    assert config.model.backbone_overrides["backbone_layer_multiplier"] == 3
    assert config.evaluation.postprocessing.merge_style == "tf_merge"
    settings = backbone_config(config.model.backbone, **config.model.backbone_overrides)
    assert settings["drop_path_schedule"] == "linear" and settings["drop_path_keep_prob"] == 0.8


def test_coco_configs_follow_deeplab2():
    from axial_tf.training.config import load_config

    folder = REPO_ROOT / "configs" / "coco"
    for name, backbone in (("axial_deeplab_s_os16", "axial_deeplab_s"), ("axial_deeplab_l_os16", "axial_deeplab_l"),
                           ("resnet50_os16", "resnet50")):
        config = load_config(folder / f"{name}.yaml")
        assert config.model.backbone == backbone
        assert config.model.num_classes == 133 and config.data.dataset == "coco2017_panoptic"
        assert config.data.crop_size == [641, 641] and config.training.batch_size == 64
        assert config.training.steps == 200000 and config.optimizer.learning_rate == 5e-4
        post = config.evaluation.postprocessing
        assert (post.nms_kernel, post.stuff_area_limit, post.keep_k_centers) == (41, 4096, 400)
    resnet = load_config(folder / "resnet50_os16.yaml").model
    assert not resnet.semantic_decoder.aspp_use_only_1x1_proj and resnet.instance_decoder.decoder_channels == 128

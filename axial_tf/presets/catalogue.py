"""The catalogue of published checkpoints that axial_tf can load by name.

Every entry was read from its source document (named in `Preset.source`); nothing here is
measured by axial_tf. URLs and numbers are copied from:

  * google-research/deeplab2 `g3doc/projects/axial_deeplab.md` (commit 64bc1c1a, 2023-04-17),
    "Model Zoo / Cityscapes Panoptic Segmentation": five Axial-DeepLab models trained on
    Cityscapes train-fine, single-scale inference, ImageNet-1K pretrained. Columns marked [*]
    were "evaluated by the official script", columns marked [**] "by our pipeline".
  * google-research/deeplab2 `g3doc/projects/imagenet_pretrained_checkpoints.md` (same commit):
    ImageNet pretrained backbones. That page publishes no accuracy, so those entries have no
    metrics.
  * csrhddlam/axial-deeplab `README.md` (commit 79088edb, 2021-06-22), "Model Zoo": the PyTorch
    reference's Axial-ResNet-26-S with its parameter count and ImageNet top-1 accuracy.

No source publishes checksums, so every `sha256` is None: the cache records the hash of the
first download and checks later uses against it (trust on first use).

Example:
    preset = lookup("axial_swidernet_1_1_1_os16_cityscapes")
    preset.url, preset.config, preset.metrics[0]
"""

import dataclasses
import difflib

# Archive layouts.
DEEPLAB2_TAR_GZ = "tar.gz"  # a gzipped tar holding one folder with ckpt-N.index and ckpt-N.data-*
PYTORCH_PTH = "pth"  # one PyTorch state-dict file, read by axial_tf.checkpoints.pytorch_converter

# Tasks: what the checkpoint holds.
PANOPTIC = "panoptic"  # a whole Panoptic-DeepLab / Axial-DeepLab model
CLASSIFICATION = "classification"  # an ImageNet classifier (backbone and head)
BACKBONE = "backbone"  # an ImageNet pretrained encoder, for fine-tuning

_DEEPLAB2_CHECKPOINTS = "https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint/"
_AXIAL_DEEPLAB_DOC = "google-research/deeplab2 g3doc/projects/axial_deeplab.md"
_IMAGENET_DOC = "google-research/deeplab2 g3doc/projects/imagenet_pretrained_checkpoints.md"
_PYTORCH_README = "csrhddlam/axial-deeplab README.md"
_CITYSCAPES_TABLE = f"{_AXIAL_DEEPLAB_DOC}, Model Zoo, Cityscapes Panoptic Segmentation"
_APACHE = "Apache-2.0 (license of the source repository; the release names no other license)"

# BibTeX entries as the source documents give them.
AXIAL_DEEPLAB_BIBTEX = """@inproceedings{axial_deeplab_2020,
  author={Huiyu Wang and Yukun Zhu and Bradley Green and Hartwig Adam and Alan Yuille and Liang-Chieh Chen},
  title={{Axial-DeepLab}: Stand-Alone Axial-Attention for Panoptic Segmentation},
  booktitle={ECCV},
  year={2020}
}"""
PANOPTIC_DEEPLAB_BIBTEX = """@inproceedings{panoptic_deeplab_2020,
  author={Bowen Cheng and Maxwell D Collins and Yukun Zhu and Ting Liu and Thomas S Huang and Hartwig Adam and Liang-Chieh Chen},
  title={{Panoptic-DeepLab}: A Simple, Strong, and Fast Baseline for Bottom-Up Panoptic Segmentation},
  booktitle={CVPR},
  year={2020}
}"""
SWIDERNET_BIBTEX = """@article{swidernet_2020,
  title={Scaling Wide Residual Networks for Panoptic Segmentation},
  author={Chen, Liang-Chieh and Wang, Huiyu and Qiao, Siyuan},
  journal={arXiv:2011.11675},
  year={2020}
}"""
MAX_DEEPLAB_BIBTEX = """@inproceedings{max_deeplab_2021,
  author={Huiyu Wang and Yukun Zhu and Hartwig Adam and Alan Yuille and Liang-Chieh Chen},
  title={{MaX-DeepLab}: End-to-End Panoptic Segmentation with Mask Transformers},
  booktitle={CVPR},
  year={2021}
}"""
RESNET_BIBTEX = """@inproceedings{resnet_2016,
  author={Kaiming He and Xiangyu Zhang and Shaoqing Ren and Jian Sun},
  title={Deep Residual Learning for Image Recognition},
  booktitle={CVPR},
  year={2016}
}"""
PYTORCH_AXIAL_DEEPLAB_BIBTEX = """@inproceedings{wang2020axial,
  title={Axial-DeepLab: Stand-Alone Axial-Attention for Panoptic Segmentation},
  author={Wang, Huiyu and Zhu, Yukun and Green, Bradley and Adam, Hartwig and Yuille, Alan and Chen, Liang-Chieh},
  booktitle={European Conference on Computer Vision (ECCV)},
  year={2020}
}"""


@dataclasses.dataclass(frozen=True)
class Metric:
    """One number the authors published for a checkpoint.

    Attributes:
        name: What was measured, e.g. "PQ [*]" (the source's column header).
        value: The number as the source prints it (e.g. "40.00"); `float(value)` for arithmetic.
        table: The document and table it comes from.
    """

    name: str
    value: str
    table: str


@dataclasses.dataclass(frozen=True)
class Preset:
    """One published checkpoint.

    Attributes:
        name: The preset name (`lookup` key), e.g. "axial_swidernet_1_1_1_os16_cityscapes".
        title: The authors' name for the model, e.g. "Axial-SWideRNet-(1, 1, 1)".
        task: PANOPTIC, CLASSIFICATION or BACKBONE.
        url: Where the authors publish the archive.
        archive: The archive layout, DEEPLAB2_TAR_GZ or PYTORCH_PTH.
        trained_on: The training data the source names.
        source: The document the URL and the numbers were read from.
        backbone: The `axial_tf.models.backbone_registry` name of the encoder (DeepLab2 entries).
        config: The shipped experiment config (relative to configs/) that builds this model
            (PANOPTIC) or that fine-tunes from this encoder (BACKBONE); None when none ships.
        pytorch_arch: The `pytorch_converter.REFERENCE_MODELS` architecture (PyTorch entries).
        metrics: The published numbers, each with its table.
        license: The license the source states.
        citations: BibTeX of the papers behind the checkpoint (as the source gives them, else
            written from the source's reference list).
        sha256: The archive's published SHA-256, or None when the source gives none.
    """

    name: str
    title: str
    task: str
    url: str
    archive: str
    trained_on: str
    source: str
    backbone: str | None = None
    config: str | None = None
    pytorch_arch: str | None = None
    metrics: tuple = ()
    license: str = _APACHE
    citations: tuple = ()
    sha256: str | None = None

    @property
    def archive_filename(self):
        """The file name the archive is stored under, the last part of its URL."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def _cityscapes(backbone, title, url_stem, pq, miou, pq_ours, miou_ours, ap_ours, citations):
    """An entry of axial_deeplab.md's Cityscapes table (output stride 16, input 1025 x 2049)."""
    columns = (("PQ [*]", pq), ("mIoU [*]", miou), ("PQ [**]", pq_ours), ("mIoU [**]", miou_ours),
               ("AP^Mask [**]", ap_ours))
    return Preset(
        name=f"{backbone}_os16_cityscapes",
        title=title,
        task=PANOPTIC,
        url=f"{_DEEPLAB2_CHECKPOINTS}{url_stem}_os16_axial_deeplab_cityscapes_trainfine.tar.gz",
        archive=DEEPLAB2_TAR_GZ,
        trained_on="Cityscapes train-fine (ImageNet-1K pretrained backbone)",
        source=_AXIAL_DEEPLAB_DOC,
        backbone=backbone,
        config=f"cityscapes/{backbone}_os16.yaml",
        metrics=tuple(Metric(name, value, _CITYSCAPES_TABLE) for name, value in columns),
        citations=(AXIAL_DEEPLAB_BIBTEX, PANOPTIC_DEEPLAB_BIBTEX) + citations,
    )


def _imagenet(name, title, backbone, url_stem, config, citations):
    """An ImageNet-1K backbone of imagenet_pretrained_checkpoints.md (no metrics published)."""
    return Preset(
        name=name,
        title=title,
        task=BACKBONE,
        url=f"{_DEEPLAB2_CHECKPOINTS}{url_stem}.tar.gz",
        archive=DEEPLAB2_TAR_GZ,
        trained_on="ImageNet-1K",
        source=_IMAGENET_DOC,
        backbone=backbone,
        config=config,
        citations=citations,
    )


_STRONG = "imagenet1k_strong_training_strategy"
_SWIDERNET_CITATIONS = (SWIDERNET_BIBTEX, AXIAL_DEEPLAB_BIBTEX)

PRESETS = (
    _cityscapes("axial_swidernet_1_1_1", "Axial-SWideRNet-(1, 1, 1)", "axial_swidernet_1_1_1",
                "66.1", "82.8", "66.63", "83.43", "37.18", (SWIDERNET_BIBTEX,)),
    _cityscapes("axial_swidernet_1_1_3", "Axial-SWideRNet-(1, 1, 3)", "axial_swidernet_1_1_3",
                "67.1", "83.5", "67.63", "83.97", "40.00", (SWIDERNET_BIBTEX,)),
    _cityscapes("axial_swidernet_1_1_4.5", "Axial-SWideRNet-(1, 1, 4.5)", "axial_swidernet_1_1_4.5",
                "68.0", "83.0", "68.53", "83.49", "39.51", (SWIDERNET_BIBTEX,)),
    _cityscapes("max_deeplab_s_backbone", "MaX-DeepLab-S-Backbone", "max_deeplab_s_backbone",
                "64.5", "82.2", "64.97", "82.63", "35.55", (MAX_DEEPLAB_BIBTEX,)),
    _cityscapes("max_deeplab_l_backbone", "MaX-DeepLab-L-Backbone", "max_deeplab_l_backbone",
                "66.3", "83.1", "66.77", "83.67", "38.09", (MAX_DEEPLAB_BIBTEX,)),
    _imagenet("axial_swidernet_1_1_1_imagenet1k", "Axial-SWideRNet-(1, 1, 1)", "axial_swidernet_1_1_1",
              f"axial_swidernet_1_1_1_{_STRONG}", "cityscapes/axial_swidernet_1_1_1_os16.yaml",
              _SWIDERNET_CITATIONS),
    _imagenet("axial_swidernet_1_1_3_imagenet1k", "Axial-SWideRNet-(1, 1, 3)", "axial_swidernet_1_1_3",
              f"axial_swidernet_1_1_3_{_STRONG}", "cityscapes/axial_swidernet_1_1_3_os16.yaml",
              _SWIDERNET_CITATIONS),
    _imagenet("axial_swidernet_1_1_4.5_imagenet1k", "Axial-SWideRNet-(1, 1, 4.5)", "axial_swidernet_1_1_4.5",
              f"axial_swidernet_1_1_4.5_{_STRONG}", "cityscapes/axial_swidernet_1_1_4.5_os16.yaml",
              _SWIDERNET_CITATIONS),
    _imagenet("max_deeplab_s_backbone_imagenet1k", "MaX-DeepLab-S-Backbone (aka MaX-S w/ ReLU)",
              "max_deeplab_s_backbone", f"max_deeplab_s_backbone_{_STRONG}",
              "cityscapes/max_deeplab_s_backbone_os16.yaml", (MAX_DEEPLAB_BIBTEX,)),
    _imagenet("max_deeplab_l_backbone_imagenet1k", "MaX-DeepLab-L-Backbone (aka MaX-L w/ ReLU)",
              "max_deeplab_l_backbone", f"max_deeplab_l_backbone_{_STRONG}",
              "cityscapes/max_deeplab_l_backbone_os16.yaml", (MAX_DEEPLAB_BIBTEX,)),
    _imagenet("resnet50_imagenet1k", "ResNet-50 (simple training strategy)", "resnet50",
              "resnet50_imagenet1k", "coco/resnet50_os16.yaml", (RESNET_BIBTEX,)),
    _imagenet("resnet50_imagenet1k_strong", "ResNet-50 (strong training strategy)", "resnet50",
              f"resnet50_{_STRONG}", "coco/resnet50_os16.yaml", (RESNET_BIBTEX,)),
    _imagenet("resnet50_beta_imagenet1k_strong", "ResNet-50-Beta (strong training strategy)", "resnet50_beta",
              f"resnet50_beta_{_STRONG}", None, (RESNET_BIBTEX,)),
    # DeepLab2 builds "wide_resnet41" as its SWideRNet instance with the default multipliers (1, 1, 1).
    _imagenet("wide_resnet41_imagenet1k_strong", "Wide-ResNet-41 (strong training strategy)", "swidernet",
              f"wide_resnet41_{_STRONG}", None, (SWIDERNET_BIBTEX,)),
    Preset(
        name="axial_resnet_26_s_imagenet",
        title="Axial-ResNet-26-S (PyTorch reference)",
        task=CLASSIFICATION,
        url="http://www.cs.jhu.edu/~hwang157/axial26s.pth",
        archive=PYTORCH_PTH,
        trained_on="ImageNet",
        source=_PYTORCH_README,
        pytorch_arch="axial26s",
        metrics=(Metric("Params (M)", "5.9", f"{_PYTORCH_README}, Model Zoo"),
                 Metric("Top-1 Acc (%)", "75.8", f"{_PYTORCH_README}, Model Zoo")),
        license="Apache-2.0 (license of csrhddlam/axial-deeplab; the README names no other license)",
        citations=(PYTORCH_AXIAL_DEEPLAB_BIBTEX,),
    ),
)

# Published checkpoints that axial_tf's builder cannot express, with the reason.
UNSUPPORTED = {
    "SWideRNet-SAC-(1, 1, 1), (1, 1, 3), (1, 1, 4.5) (ImageNet-1K)": (
        "their last stage uses Switchable Atrous Convolution (DeepLab2's swidernet_sac configs set "
        "use_sac_beyond_stride: 32); AxialResNet has no SAC and the DeepLab2 converter rejects "
        "use_sac_beyond_stride > 0"),
    "Axial-ResNet-50 (aka MaX-S w/ GeLU) (ImageNet-22K + 1K)": (
        "its blocks use GeLU activations; AxialResNet's blocks are ReLU only"),
    "MobileNetV3-Small, MobileNetV3-Large (ImageNet-1K)": "not an Axial-ResNet: no MobileNet encoder in axial_tf",
    "ConvNeXt-T, -S, -B, -L (ImageNet-22K + 1K)": "not an Axial-ResNet: no ConvNeXt encoder in axial_tf",
}

_BY_NAME = {preset.name: preset for preset in PRESETS}


def list_presets():
    """Names of every catalogue entry, in catalogue order."""
    return [preset.name for preset in PRESETS]


def lookup(name):
    """The catalogue entry called `name`.

    Args:
        name: A preset name, e.g. "axial_swidernet_1_1_1_os16_cityscapes".

    Returns:
        The `Preset`.

    Raises:
        ValueError: Unknown name; the one-line message lists the closest names.

    Example:
        lookup("max_deeplab_s_backbone_os16_cityscapes").url
    """
    if name in _BY_NAME:
        return _BY_NAME[name]
    close = difflib.get_close_matches(name, _BY_NAME, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"Unknown preset {name!r}.{hint} `python -m axial_tf.presets list` shows all "
                     f"{len(PRESETS)}.")

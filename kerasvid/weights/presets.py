"""The known published checkpoints: where each comes from, under which license, and the input it needs.

A checkpoint is only as good as the preprocessing it is fed: each record says the normalisation preset of
`kerasvid.data.preprocess.normalize` it was trained with (and the publisher's whole preparation in words), and
`normalization_for_weights` turns a builder's `weights=` argument into that preset, so that training, export and
feature extraction feed what the weights expect (`TaskConfig(normalization="auto")`).

    >>> from kerasvid.weights import presets
    >>> presets.normalization_for_weights("imagenet")   # keras.applications ResNet weights
    'caffe'
    >>> [w.name for w in presets.list_weights()][:2]
"""
import dataclasses
import difflib
import hashlib
import os
from typing import Tuple


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    """Metadata of one published checkpoint.

    Attributes:
        name: preset name (e.g. "r3d_18_kinetics400").
        models: the kerasvid models (registry names) it fits, or the models it will fit once its converter exists.
        source: who publishes it and in which code base.
        url: where the file is published ("" where it is not a single public file).
        file_hash: the hash the publisher gives, as "<algorithm>:<hex>" (torchvision publishes the first 8 hex
            digits of the sha256 in the file name; keras.applications an md5), "" where none is published.
        license: the license the publisher states for the code the weights come with (weights inherit the
            dataset's terms where the dataset has them).
        dataset: what the weights were trained on.
        normalization: the `kerasvid.data.preprocess.normalize` preset the weights expect.
        preprocessing: the publisher's input preparation in words (resize, crop, scale, statistics).
        reported: the accuracy the publisher reports, with its protocol; "" where no verified figure is at hand.
        loader: how kerasvid reads it today ("" where no converter exists yet).
    """

    name: str
    models: Tuple[str, ...]
    source: str
    url: str
    file_hash: str
    license: str
    dataset: str
    normalization: str
    preprocessing: str
    reported: str = ""
    loader: str = ""


_TORCHVISION_VIDEO = ("resize 128x171, centre crop 112x112, RGB on [0, 1], mean (0.43216, 0.394666, 0.37645), "
                      "std (0.22803, 0.22145, 0.216989) (torchvision's VideoClassification transforms)")
_TORCHVISION_PROTOCOL = ("Kinetics-400 validation, video-level top-1 (torchvision docs: clips of 16 frames at 15 fps, "
                         "5 clips per video)")
_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
_CPNET = ("Liu et al., CPNet authors (github.com/xingyul/cpnet); TF1 tf.train.Saver checkpoints in the Google Drive "
          "folders linked from its README")
_I3D = "DeepMind kinetics-i3d (github.com/deepmind/kinetics-i3d), TF1 checkpoints under data/checkpoints/"
_CPNET_LOADER = ('cpnet_resnet34(variant="released_code", weights=<checkpoint prefix>) '
                 "(kerasvid.models.cpnet.load_tf1_checkpoint; TF SAME padding, BN eps 1e-3)")
_CPNET_REPORTED = ("the paper's CPNet ResNet-34: val top-1 ~{} (as noted in the project's reference notes; 24 frames, "
                   "8 clips x 6 crops; not re-measured for this checkpoint)")
_TORCHVISION_IMAGENET = ("RGB on [0, 1], resize {} (bilinear), centre crop 224x224, mean (0.485, 0.456, 0.406), "
                         "std (0.229, 0.224, 0.225) (torchvision's ImageClassification transforms)")
_TORCHVISION_LOADER = ("weights=<file>.pth (kerasvid.weights.torchvision_resnet: implies stride_on_3x3, torch "
                       "padding, no conv bias, BN eps 1e-5)")

_WEIGHTS = [
    WeightsInfo(
        f"resnet{depth}_imagenet", models,
        "keras.applications ResNet (He et al. 2016, the Caffe models converted)",
        f"{_KERAS_APPS}resnet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5", f"md5:{md5}", "MIT (keras)",
        "ImageNet-1k", "caffe",
        "RGB -> BGR, minus (103.939, 116.779, 123.68), 0..255 scale, no division (keras resnet.preprocess_input)",
        "", 'weights="imagenet" (keras.applications download, transferred / inflated)')
    for depth, md5, models in (
        (50, "4d473c1dd8becc155b73f8504c6f6626", ("c2d_resnet50",)),
        (101, "88cf7a10940856eca736dc7b7e228a21", ("c2d_resnet101", "cpnet_resnet101")),
        (152, "ee4c566cf9a93f14d82f913c2dc6dd0c", ("actor_observer_resnet152",)))
] + [
    WeightsInfo(
        f"{arch}_kinetics400", (model,), "torchvision.models.video (Tran et al. 2018)",
        f"https://download.pytorch.org/models/{arch}-{prefix}.pth", f"sha256-prefix:{prefix}", "BSD-3-Clause (torchvision)",
        "Kinetics-400", "torchvision_video", _TORCHVISION_VIDEO, f"top-1 {top1} ({_TORCHVISION_PROTOCOL})",
        f'{model}(weights="{arch}_kinetics400" or the .pth file) '
        "(names: kerasvid.models.resnet_video.torchvision_video_names)")
    for arch, prefix, model, top1 in (
        ("r3d_18", "b3b3357e", "r3d_resnet18", 63.2),
        ("mc3_18", "a90a0ba3", "mc3_resnet18", 63.96),
        ("r2plus1d_18", "91a641e6", "r2plus1d_resnet18", 67.46))
] + [
    WeightsInfo(
        f"resnet{depth}_imagenet1k_{version}", models,
        f"torchvision.models ResNet{depth}_Weights.IMAGENET1K_{version.upper()} (He et al. 2016, torchvision's "
        f"'v1.5' layout: stride on the 3x3 conv)",
        f"https://download.pytorch.org/models/resnet{depth}-{prefix}.pth", f"sha256-prefix:{prefix}",
        "BSD-3-Clause (torchvision code; ImageNet terms of access for the data)", "ImageNet-1k", "imagenet",
        _TORCHVISION_IMAGENET.format(256 if version == "v1" else 232),
        f"top-1 {top1} (torchvision docs: ImageNet-1k val, single centre crop)", _TORCHVISION_LOADER)
    for depth, version, prefix, top1, models in (
        (50, "v1", "0676ba61", 76.13, ("c2d_resnet50",)),
        (50, "v2", "11ad3fa6", 80.858, ("c2d_resnet50",)),
        (101, "v1", "63fe2227", 77.374, ("c2d_resnet101",)),
        (101, "v2", "cd907fc2", 81.886, ("c2d_resnet101",)),
        (152, "v1", "394f9c45", 78.312, ("actor_observer_resnet152",)),
        (152, "v2", "f82ba261", 82.284, ("actor_observer_resnet152",)))
] + [
    WeightsInfo(
        "resnet152_charades", ("actor_observer_resnet152",),
        "gsig/charades-algorithms (Sigurdsson et al.), exp/rgbnet_resnet.py: torchvision ResNet-152 fine-tuned on "
        "Charades frames (the start of Actor-Observer's third_to_first_person.py)",
        "https://www.dropbox.com/s/iy9fmk0r1a3edoz/resnet_rgb.pth.tar?dl=1", "",
        "not stated by the publisher (no license file in gsig/charades-algorithms); Charades terms for the data",
        "Charades v1, 157 classes (RGB frames at 24 fps)", "imagenet",
        "RGB on [0, 1], resize 256, centre crop 224, ImageNet mean (0.485, 0.456, 0.406) / std (0.229, 0.224, "
        "0.225); video score from 25 frames evenly spaced",
        "22.8% mAP (charades-algorithms get_alreadytrained.sh, Charades v1 validation, charades_v1_classify.m)",
        "actor_observer_resnet152(num_classes=157, weights=<file>.pth.tar) (kerasvid.weights.torchvision_resnet: "
        "state_dict with module. prefixes)"),
] + [
    WeightsInfo(
        "bn_inception_imagenet", ("bn_inception",), "pretrainedmodels (Cadene), BN-Inception ported from Caffe "
        "(the ImageNet start of TSN and of TVNet's two-stream nets)",
        "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth", "",
        "BSD-3-Clause (pretrainedmodels)", "ImageNet-1k", "bn_inception",
        "BGR on 0..255 minus (104, 117, 128), no scaling; flow towers: minus 128", "",
        'weights="<file>.pth" (kerasvid.weights.convert, names as in the file; TSN\'s (1, C) BatchNorm tensors load)'),
    WeightsInfo(
        "cpnet_resnet34_jester", ("cpnet_resnet34",), _CPNET, "", "", "CC BY-NC-SA 4.0 (their code)",
        "20BN-Jester v1, 27 classes, 24 frames step 1 at 112x112", "imagenet",
        "RGB (x / 255 - ImageNet mean) / ImageNet std; eval short side 112, 8 clips x 6 crops (fcn 6)",
        _CPNET_REPORTED.format(96.7), _CPNET_LOADER),
    WeightsInfo(
        "cpnet_resnet34_ssv2", ("cpnet_resnet34",), _CPNET, "", "", "CC BY-NC-SA 4.0 (their code)",
        "Something-Something v2, 174 classes, 24 frames step 2 at 224x224", "imagenet",
        "RGB (x / 255 - ImageNet mean) / ImageNet std; eval short side 224, 8 clips x 6 crops (fcn 6)",
        _CPNET_REPORTED.format("57.7 (top-5 ~84.0)"), _CPNET_LOADER),
] + [
    WeightsInfo(
        f"i3d_kinetics_{layout}", ("i3d", "i3d_action_context"), _I3D, "", "", "Apache-2.0",
        "Kinetics-400" + (" (ImageNet-inflated start)" if layout.endswith("imagenet") else "")
        + (" / Kinetics-600" if layout.endswith("kin600") else ""),
        "none" if layout.startswith("flow") else "minus_one_one",
        "TV-L1 flow clipped to [-20, 20] and divided by 20" if layout.startswith("flow")
        else "RGB on [-1, 1] (x / 127.5 - 1)", "",
        'i3d(weights=<prefix>) or kinetics_checkpoint=<prefix> (kerasvid.backbones.i3d.load_kinetics_i3d_checkpoint)')
    for layout in ("rgb_imagenet", "rgb_scratch", "flow_imagenet", "flow_scratch", "rgb_scratch_kin600")
]
_BY_NAME = {w.name: w for w in _WEIGHTS}
def _file_name(url):
    """The file name of a published URL (a query such as Dropbox's `?dl=1` is not part of it)."""
    return url.split("?", 1)[0].rsplit("/", 1)[-1]


_BY_FILE_NAME = {_file_name(w.url): w for w in _WEIGHTS if w.url}
assert len(_BY_NAME) == len(_WEIGHTS)


def list_weights():
    """Every known checkpoint's `WeightsInfo`, sorted by name."""
    return sorted(_WEIGHTS, key=lambda w: w.name)


def weights_info(name):
    """The `WeightsInfo` of a preset name; an unknown name raises a ValueError with the closest names."""
    if name not in _BY_NAME:
        close = difflib.get_close_matches(str(name), list(_BY_NAME), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown weights preset {name!r}.{hint} Known: {', '.join(sorted(_BY_NAME))}.")
    return _BY_NAME[name]


def normalization_for_weights(weights, default="imagenet") -> str:
    """The `kerasvid.data.preprocess.normalize` preset a builder's `weights=` argument implies.

    "imagenet" (keras.applications ResNet weights) -> "caffe"; a preset name, or a path whose file name is a
    record's published file name (e.g. `.../bn_inception-52deb4733.pth`) -> its record's `normalization`; None or
    another path (kerasvid's own `.weights.h5`, whose preparation the file does not record: pass `--normalization`
    for those) -> `default`.
    """
    if weights == "imagenet":
        return "caffe"
    if weights is None:
        return default
    info = _BY_NAME.get(str(weights)) or _BY_FILE_NAME.get(os.path.basename(str(weights)))
    return default if info is None else info.normalization


def is_preset(weights):
    """Whether `weights` names a known checkpoint (rather than a path, None or "imagenet")."""
    return isinstance(weights, str) and weights in _BY_NAME


def _keras_home():
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def _check_file_hash(path, file_hash):
    """Checks `path` against a record's `file_hash` ("md5:<hex>", "sha256-prefix:<hex>"; "" checks nothing).

    Raises:
        ValueError: naming the file, the published hash and the file's.
    """
    if not file_hash:
        return path
    algorithm, _, want = file_hash.partition(":")
    digest = hashlib.md5() if algorithm == "md5" else hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    got = digest.hexdigest()
    if not got.startswith(want):
        raise ValueError(f"{path!r} does not have the published hash ({file_hash}; the file's "
                         f"{algorithm.split('-')[0]} is {got[:max(len(want), 8)]}...): a partial or different file")
    return path


def weights_file(name, download=True):
    """The local path of a published checkpoint, by preset name: the cached copy in `$KERAS_HOME/models/` (default
    `~/.keras/models/`), downloaded there once where there is internet (`keras.utils.get_file`); its published hash
    is checked.

    Raises:
        ValueError: an unknown name, a checkpoint that is not one public file, no copy and no download (one line
            saying where to put the file), or a hash mismatch.
    """
    info = weights_info(name)
    if not info.url:
        raise ValueError(f"The weights {name!r} are not one public file ({info.source}); load them with "
                         f"{info.loader or 'their converter'}.")
    filename = _file_name(info.url)
    path = os.path.join(_keras_home(), "models", filename)
    if not os.path.exists(path):
        where = f"download {info.url} and put it at {path}"
        if not download:
            raise ValueError(f"The weights {name!r} are not cached: {where}.")
        try:
            import keras

            path = keras.utils.get_file(filename, info.url, cache_subdir="models")
        except Exception as err:  # no internet, proxy, HTTP error: one line saying what to do
            raise ValueError(f"Could not download the weights {name!r} ({type(err).__name__}: {err}); {where}.") \
                from err
    return _check_file_hash(path, info.file_hash)

"""The records of the known published checkpoints (`kerasvid.zoo.list_weights()`)."""
import pytest

from kerasvid import zoo
from kerasvid.data import preprocess
from kerasvid.weights import presets

# Models that exist only once their converters do (issue 25, section 2).
PLANNED = {"r3d_resnet18", "mc3_resnet18", "r2plus1d_resnet18"}


def test_every_record_is_complete_and_names_real_models():
    records = zoo.list_weights()
    assert [w.name for w in records] == sorted(w.name for w in records)
    assert len({w.name for w in records}) == len(records) >= 13
    for w in records:
        assert w.source and w.license and w.dataset and w.preprocessing, w.name
        assert w.normalization in preprocess.NORMALIZATIONS, w.name
        assert set(w.models) <= set(zoo.list_models()) | PLANNED, w.name
        assert not w.url or w.url.startswith(("https://", "http://")), w.name


def test_published_figures():
    top1 = {name: presets.weights_info(f"{name}_kinetics400").reported.split(" ")[1]
            for name in ("r3d_18", "mc3_18", "r2plus1d_18")}
    assert top1 == {"r3d_18": "63.2", "mc3_18": "63.96", "r2plus1d_18": "67.46"}
    assert presets.weights_info("r3d_18_kinetics400").url.endswith("r3d_18-b3b3357e.pth")
    assert presets.weights_info("resnet50_imagenet").normalization == "caffe"


def test_unknown_preset_names_the_closest():
    with pytest.raises(ValueError, match="Did you mean: r3d_18_kinetics400"):
        presets.weights_info("r3d18_kinetics400")

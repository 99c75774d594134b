"""The records of the known published checkpoints (`kerasvid.zoo.list_weights()`)."""
import pytest

from kerasvid import zoo
from kerasvid.data import preprocess
from kerasvid.weights import presets


def test_every_record_is_complete_and_names_real_models():
    records = zoo.list_weights()
    assert [w.name for w in records] == sorted(w.name for w in records)
    assert len({w.name for w in records}) == len(records) >= 13
    for w in records:
        assert w.source and w.license and w.dataset and w.preprocessing, w.name
        assert w.normalization in preprocess.NORMALIZATIONS, w.name
        assert set(w.models) <= set(zoo.list_models()), w.name
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


def test_weights_file_is_the_cached_copy_with_its_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    models = tmp_path / "models"
    models.mkdir()
    (models / "bn_inception-52deb4733.pth").write_bytes(b"no hash published")
    assert presets.weights_file("bn_inception_imagenet") == str(models / "bn_inception-52deb4733.pth")
    (models / "r3d_18-b3b3357e.pth").write_bytes(b"not the published file")
    with pytest.raises(ValueError, match="does not have the published hash \\(sha256-prefix:b3b3357e"):
        presets.weights_file("r3d_18_kinetics400")
    with pytest.raises(ValueError, match="not one public file"):
        presets.weights_file("cpnet_resnet34_jester")


def test_no_copy_and_no_internet_says_where_to_put_the_file(tmp_path, monkeypatch):
    import keras

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    where = f"put it at {tmp_path / 'models' / 'bn_inception-52deb4733.pth'}"
    with pytest.raises(ValueError, match=f"Could not download the weights 'bn_inception_imagenet' .*{where}"):
        zoo.bn_inception(num_classes=1000, input_shape=(1, 64, 64, 3), weights="bn_inception_imagenet")
    with pytest.raises(ValueError, match=f"not cached: download http://data.lip6.fr/.* and {where}"):
        presets.weights_file("bn_inception_imagenet", download=False)
    # A cached file goes to the converter (here: not a checkpoint, so the reader says so).
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / "bn_inception-52deb4733.pth").write_bytes(b"\x80\x02K\x01.")
    with pytest.raises(ValueError, match="neither a zip nor a legacy PyTorch file"):
        zoo.bn_inception(num_classes=1000, input_shape=(1, 64, 64, 3), weights="bn_inception_imagenet")


def test_readme_weights_table_is_the_records_table():
    import os

    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "weights.md")).read()
    block = readme.split("<!-- weights-table -->\n")[1].split("<!-- /weights-table -->")[0]
    assert block.strip() == zoo.weights_table().strip(), "regenerate: python -m kerasvid.zoo --weights --markdown"
    assert "`r3d_18_kinetics400` | `r3d_resnet18` | Kinetics-400 | `torchvision_video` | top-1 63.2" in block

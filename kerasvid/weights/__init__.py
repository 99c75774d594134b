"""kerasvid.weights: published checkpoints, read without their frameworks, and what each one needs.

- `presets`: the record of every known checkpoint (`WeightsInfo`: source, URL, sha256, license, dataset,
  preprocessing, reported accuracy) and the normalisation a `weights=` argument implies.
- `torch_files`: PyTorch `.pth` files (zip and legacy formats, restricted unpickler: tensors and plain containers
  only) and `.safetensors`, read into numpy without PyTorch.
- `convert`: a state_dict into a Keras model whose layers carry the PyTorch module names (checked before assigning).
- `torchvision_resnet`: torchvision's ImageNet ResNet-50/101/152 files (and checkpoints in their layout, e.g. the
  Charades ResNet-152): the trunk options they imply and their rename table.
- `tf_checkpoint`: TF1 `tf.train.Saver` checkpoints assigned by a builder's table of variable names (the CPNet
  authors' checkpoints).

The names below are imported on first use (stdlib and numpy only: no TensorFlow; `weights_file` imports keras
only to download, `read_checkpoint` TensorFlow when it runs).
"""
from kerasvid._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "presets": ("WeightsInfo", "is_preset", "list_weights", "normalization_for_weights", "weights_file",
                "weights_info"),
    "convert": ("assign_state_dict", "load_torch_weights"),
    "torch_files": ("UnsafeCheckpointError", "load_state_dict", "read_pth", "read_safetensors", "write_safetensors"),
    "torchvision_resnet": ("is_torchvision_resnet", "layout_for_weights", "load_torchvision_resnet"),
    "tf_checkpoint": ("assign_checkpoint", "read_checkpoint"),
})

"""Conjugate pair pipeline and the action_context task on tiny records."""
import numpy as np
import pytest
import tensorflow as tf

from kerasvid.data import conjugate_pairs
from kerasvid.data import conjugates as cj
from kerasvid.data import schema, writer
from kerasvid.losses.action_context import FactorizationLoss
from kerasvid.tasks import TaskConfig, get_task


@pytest.fixture(scope="module")
def paired_records(tmp_path_factory):
    """6 videos of 8 textured 48x48 frames; videos 0-3 carry an actor box in their records, 4-5 none."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    examples = []
    for v in range(6):
        frames = (rng.uniform(0, 255, size=(8, 48, 48, 3)) * 0.3 + 90).astype(np.uint8)
        frames[:, :, :, v % 3] += 60  # a per-video colour, so conjugates stay distinguishable
        boxes = np.tile([[0.25, 0.25, 0.75, 0.75]], (8, 1)) if v < 4 else None
        if boxes is not None:
            frames[:, 14:34, 14:34] = 250  # the "actor": a bright square inside the box
        examples.append(schema.make_sequence_example([writer.encode_jpeg(f) for f in frames], [v % 3],
                                                     video_id=f"v{v}", boxes=boxes))
    paths = writer.write_records(examples, str(root / "train"), "train", 2)
    manifest = cj.make_conjugate_records(paths, str(root / "conj"), progress=False)
    assert sum(p["with_boxes"] for p in manifest["pairs"]) == 4
    return str(root / "train" / "train-*.tfrecord"), str(root / "conj")


def test_pair_dataset_aligns_clips_and_conjugates(paired_records):
    pattern, conj_dir = paired_records
    ds = conjugate_pairs.pair_dataset(pattern, conj_dir, num_frames=4, stride=2, image_size=(32, 32),
                                      batch_size=6, num_classes=3, normalization="zero_one", seed=3,
                                      deterministic=True, shuffle_buffer=0)
    inputs, labels = next(iter(ds))
    image, conj, weight = (np.asarray(inputs[k]) for k in ("image", "conjugate", "pair_weight"))
    assert image.shape == conj.shape == (6, 4, 32, 32, 3) and labels.shape == (6,)
    assert sorted(weight.tolist()) == [0, 0, 1, 1, 1, 1]
    for i in range(6):
        diff = np.abs(image[i] - conj[i])
        if weight[i] == 0:
            assert diff.max() == 0  # same record content, same crop / flip / frames
        else:
            assert diff.max() > 0.3  # the actor square is gone ...
            assert np.mean(diff < 0.05) > 0.4  # ... the context (same crop window) is not
    with pytest.raises(ValueError, match="Missing conjugate shards"):
        conjugate_pairs.pair_dataset(pattern, conj_dir + "_nowhere", num_frames=4)
    # A VideoDataConfig setting that a pair pipeline cannot honour is refused by name, not ignored.
    for field, value in (("on_error", "skip"), ("training", False), ("repeat", 1)):
        with pytest.raises(ValueError, match=f"cannot honour {field}={value!r}"):
            conjugate_pairs.pair_dataset(pattern, conj_dir, num_frames=4, **{field: value})


def test_factorization_task_loss_matches_the_loss_function(paired_records):
    pattern, conj_dir = paired_records
    config = TaskConfig(model="i3d_action_context", model_kwargs={"streams": ("rgb",)}, num_classes=3,
                        train_pattern=pattern, eval_pattern=pattern, num_frames=8, image_size=(32, 32),
                        batch_size=4, normalization="minus_one_one", shuffle_buffer=0, deterministic=True,
                        task_kwargs={"conjugate_dir": conj_dir, "removal_weight": 2.0, "margin": 0.5})
    task = get_task("action_context", config)
    task.validate(["train", "eval"])
    model = task.build_model()
    assert set(model.output) == {"logits", "action_scores", "context_scores", "action_map", "context_map"}
    inputs, labels = next(iter(task.build_dataset(training=True)))
    loss, stats = task.compute_loss(model, inputs, labels, global_batch_size=8)
    # Reference: the loss function on the same joint training-mode pass (BN sees both halves, as in the task).
    both = model(tf.concat([inputs["image"], inputs["conjugate"]], 0), training=True)
    ref = FactorizationLoss(removal_weight=2.0, margin=0.5).terms(
        labels, {k: v[:4] for k, v in both.items()}, {k: v[4:] for k, v in both.items()}, inputs["pair_weight"])
    assert float(loss) == pytest.approx(float(ref["loss"]) * 4 / 8, rel=1e-4)
    assert stats["accuracy"][1] == 4.0 and 0 <= float(stats["accuracy"][0]) <= 4
    assert float(stats["action_removal"][0]) == pytest.approx(4 * float(ref["action_removal"]), rel=1e-4)
    outputs = task.eval_outputs(model, {"image": inputs["image"]}, labels)
    np.testing.assert_allclose(np.asarray(outputs["probs"]).sum(-1), np.ones(4), rtol=1e-5)
    images = task.summary_images(model, inputs)
    assert images["action_map"].shape == (1, 32, 32, 3)
    # Reference: out = (1 - a / 2) frame + (a / 2) colour on the min-max scaled middle frame, a = the attention
    # averaged over time and maps, divided by its maximum, resized bilinearly (rounded to 8 bits by the overlay).
    maps = model(inputs["image"][:1], training=False)
    frame = np.asarray(inputs["image"][0, inputs["image"].shape[1] // 2], np.float64)
    frame = (frame - frame.min()) / (frame.max() - frame.min())
    for key, colour in (("action_map", (1.0, 0.0, 0.0)), ("context_map", (0.0, 1.0, 0.0))):
        amap = np.asarray(maps[key][0], np.float64).mean(axis=(0, 3))
        a = tf.image.resize((amap / amap.max())[..., None], (32, 32), method="bilinear").numpy()
        np.testing.assert_allclose(images[key][0], (1 - a / 2) * frame + a / 2 * np.array(colour),
                                   atol=0.51 / 255)
    with pytest.raises(ValueError, match="conjugate_dir"):
        get_task("action_context", TaskConfig(num_classes=3, train_pattern=pattern)).validate(["train"])
    with pytest.raises(ValueError, match="Unknown action_context task_kwargs"):
        get_task("action_context", TaskConfig(num_classes=3, task_kwargs={"margn": 1}))

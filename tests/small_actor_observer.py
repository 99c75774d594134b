"""A small actor-observer setup shared by the triplet-task tests and the align-mode test (not a test module):
Charades-Ego style frame folders and the actor_observer task with a small CNN trunk instead of ResNet-152."""
import os

import keras
import numpy as np
import tensorflow as tf

from kerasvid.data import actor_observer as tr
from kerasvid.models.actor_observer import actor_observer_network
from kerasvid.tasks import TaskConfig
from kerasvid.tasks.actor_observer import ActorObserverTask

HEADER = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"


def write_video(root, vid, count, shade):
    os.makedirs(os.path.join(root, vid))
    for i in range(count):
        frame = np.full((20, 24, 3), (shade + 7 * i) % 256, np.uint8)
        tf.io.write_file(tr.frame_path(root, vid, i), tf.io.encode_jpeg(frame))


class SmallActorObserverTask(ActorObserverTask):
    """The actor_observer task with a small CNN trunk instead of ResNet-152 (the task logic is unchanged)."""

    def build_network(self):
        frames = keras.Input((1, 16, 16, 3))
        x = keras.layers.Reshape((16, 16, 3))(frames)
        x = keras.layers.Conv2D(4, 3, strides=2, activation="relu",
                                kernel_initializer=keras.initializers.GlorotUniform(0))(x)
        x = keras.layers.Dense(8, kernel_initializer=keras.initializers.GlorotUniform(1))(keras.layers.Flatten()(x))
        trunk = keras.Model(frames, x, name="small")
        return actor_observer_network(num_classes=self.config.num_classes or None, input_shape=(1, 16, 16, 3),
                                      trunk=trunk)


def small_config(paths, root, **task_kwargs):
    kwargs = dict(frames_root=root, train_csv=paths["train"], eval_csv=paths["eval"], anchor_stride=4, min_gap=6,
                  fps=24.0)
    kwargs.update(task_kwargs)
    return TaskConfig(model="actor_observer_resnet152", num_frames=1, image_size=(16, 16), batch_size=4,
                      eval_batch_size=4, normalization="zero_one", task_kwargs=kwargs)

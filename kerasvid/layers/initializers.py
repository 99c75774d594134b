"""Per-weight initializers: every weight of a layer gets its own random draw."""
import zlib

import keras
import numpy as np


def weight_initializer(initializer, weight_name):
    """A copy of `initializer` for the weight `weight_name` of a layer, with its own seed.

    A Keras 3 random initializer holds an integer seed (drawn from Python's `random` when it is built without one,
    so `keras.utils.set_random_seed` fixes it) and returns the same draw on every call: one instance shared by two
    weights gives them the same values (proportional ones for two shapes). The copy's seed is a hash of the
    instance's seed and `weight_name`, so the weights of one layer are independent draws, reproducible from the
    layer's one seed. Initializers without an integer seed (zeros, constants, a `keras.random.SeedGenerator`
    seed, which advances on each call; plain callables) are returned unchanged.

    Args:
        initializer: a `keras.initializers.Initializer` (or anything `keras.initializers.get` returns).
        weight_name: the weight's name within its layer (e.g. "action_kernel").

    Returns:
        An initializer instance for that one weight.
    """
    seed = getattr(initializer, "seed", None)
    if not isinstance(initializer, keras.initializers.Initializer) or isinstance(seed, bool) \
            or not isinstance(seed, (int, np.integer)):
        return initializer
    config = initializer.get_config()
    mixed = np.random.SeedSequence([int(seed) % 2 ** 32, zlib.crc32(weight_name.encode("utf-8"))])
    config["seed"] = int(mixed.generate_state(1)[0] >> 1)  # < 2**31: a valid seed for every backend
    return initializer.__class__.from_config(config)

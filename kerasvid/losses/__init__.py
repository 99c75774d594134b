"""kerasvid.losses: the losses of the papers, `kerasvid.losses.ActorObserverLoss`, `kerasvid.losses.EndpointError`, ...

Every public module of this package is imported and the names in its `__all__` are exported here: a new paper's
loss file declares `__all__` and needs no line in this file.

Conventions. The numbers live in functions of tensors (`dist_ratio`, `margin_rank`, `endpoint_error`,
`tvl1_energy`, `factorization_classification_loss`, ...): composable, and what the tests check against hand-computed
values. A loss *object* (a configured loss) follows Keras's own rule, by whether it has state. A stateless loss is a
`keras.losses.Loss` (`EndpointError`, `FactorizationLoss`): `__call__(y_true, y_pred)` gives the reduced value,
`get_config` is the constructor's arguments, it is registered under `kerasvid>`, so `keras.losses.get/serialize`
and `model.compile(loss=...)` and a compiled model's `.keras` file work. `FactorizationLoss` takes the pair of head
outputs `(outputs, conjugate_outputs)` as `y_pred`, and `terms(...)` gives each term for logging. A loss with state
is a `keras.layers.Layer` (`ActorObserverLoss`): its running weighted mean (Eq. 14-15) must be a variable, saved in
`.keras` files and checkpoints with the model, mirrored under `tf.distribute` (`only_first_replica`), updated only
when `training`; a `keras.losses.Loss` has no variables, and a plain class would lose the state on saving. The
layer's inputs are `(per_triplet_loss, weights)`, not `(y_true, y_pred)`. So there are two conventions, and the one a
loss follows is decided by one question: does it keep state between calls? `tests/helpers.check_loss` and
`check_layer` check the two kinds.
"""
from kerasvid import _submodules

_submodules.export_public_names(globals())

"""kerasvid.losses: public names (each paper's module appends its import line here)."""
from kerasvid.losses.actor_observer import (  # noqa: F401
    ActorObserverLoss, actor_observer_objective, dist_ratio, equalize_grad_norm, margin_rank)
from kerasvid.losses.factorization import (FactorizationLoss, action_removal_loss, attention_overlap_loss,  # noqa: F401
                                           context_consistency_loss, conjugate_uninformative_loss,
                                           factorization_classification_loss)
from kerasvid.losses.tvnet import EndpointError, endpoint_error, tvl1_energy  # noqa: F401

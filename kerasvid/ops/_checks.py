"""Argument checks shared by the ops modules."""


def check_rank(x, rank, name):
    if x.shape.rank is not None and x.shape.rank != rank:
        raise ValueError(f"`{name}` must have rank {rank}, got shape {x.shape}")

"""One file per paper; builders register themselves with `kerasvid.models.registry.register_model`."""

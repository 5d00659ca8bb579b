"""efficientnet_pytorch key layout (to be written)."""

SOURCES: dict[str, tuple[str, dict]] = {}


def key_map(config, model):
    raise NotImplementedError

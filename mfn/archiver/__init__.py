"""TorchServe: render a ModelSpec to model-config.yaml and build a .mar archive."""

"""The packaged configs: pyproject.toml ships this folder inside the package as ``detector.configs``.

``detector.training.configs.config_path`` finds a config here by name (``--config synthetic.yaml``).
"""

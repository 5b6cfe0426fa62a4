"""The network: plain torch modules, no Lightning."""
from detector.model.backbone import ResNet18Backbone, WeightsError
from detector.model.centernet import CenterNet

__all__ = ["CenterNet", "ResNet18Backbone", "WeightsError"]

"""Random-init checkpoints for the tests: a tiny three-class network whose heatmap bias is 0, so many peaks score
above the default threshold (the predictor, demo, export and evaluation tests all start from one)."""
import torch

CLASS_NAMES = ["cat", "dog", "bird"]
INPUT_SIZE = 128


def make_checkpoint(path, seed=0):
    """A checkpoint of a random-init model whose heatmap bias is 0, so that many peaks score above 0.3."""
    from detector.training.module import CenterNetModule  # Lightning: imported when a checkpoint is made

    torch.manual_seed(seed)
    module = CenterNetModule(num_classes=3, class_names=CLASS_NAMES, input_size=INPUT_SIZE)
    torch.nn.init.zeros_(module.model.head.heatmap[-1].bias)
    torch.save({"detector": module.description().to_dict(), "state_dict": module.state_dict()}, path)
    return path


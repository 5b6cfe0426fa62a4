"""Networks for the tests: BatchNorm layers given statistics and affine parameters that are not the identity."""
import torch


def randomise_batchnorm(model, generator=None):
    """Non-trivial running statistics and affine parameters, so that folding has something to fold (drawn from
    ``generator``, by default one seeded with 5)."""
    g = generator if generator is not None else torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()

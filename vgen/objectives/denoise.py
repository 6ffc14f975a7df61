"""How an objective's loss cell calls its denoiser: denoise(net, x_t, t, batch), the family mapping
the batch's named fields onto the net's own signature (FamilySpec / Family.denoise)."""


def plain_denoise(net, x_t, t, batch):
    """A denoiser that takes no conditioning: net(x_t, t)."""
    return net(x_t, t)

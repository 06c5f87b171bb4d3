"""The lab's classifiers: a plain VGG-style CNN whose layers have names worth distilling between.

``block1``..``block3`` output (B, C, H, W) maps at full, half and quarter resolution (before pooling), ``embed`` the
(B, C) global-average-pooled features, ``head`` the logits. Teacher and student differ only in width and depth.
"""

from __future__ import annotations

from torch import nn


def _block(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=False)]
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Three conv blocks, global average pooling, a linear head.

    Parameters
    ----------
    n_classes : int
    widths : channels of block1, block2, block3
    convs_per_block : 3x3 conv + BN + ReLU units per block
    in_channels : 3 for RGB

    Input (B, in_channels, H, W) with H, W divisible by 4; output (B, n_classes) logits.
    """

    def __init__(self, n_classes: int = 4, widths: tuple[int, int, int] | list[int] = (32, 64, 128),
                 convs_per_block: int = 1, in_channels: int = 3) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.block1 = _block(in_channels, w1, convs_per_block)
        self.block2 = _block(w1, w2, convs_per_block)
        self.block3 = _block(w2, w3, convs_per_block)
        self.pool = nn.MaxPool2d(2)
        self.embed = nn.Flatten()  # names the (B, w3) pooled features for relation and CKA losses
        self.head = nn.Linear(w3, n_classes)

    def forward(self, x):
        x = self.pool(self.block1(x))  # (B, w1, H/2, W/2)
        x = self.pool(self.block2(x))  # (B, w2, H/4, W/4)
        x = self.block3(x)  # (B, w3, H/4, W/4)
        return self.head(self.embed(x.mean(dim=(2, 3))))  # (B, n_classes)

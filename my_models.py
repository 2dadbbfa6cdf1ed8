from torch import nn

def unit(c_in, c_out, stride):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

def tiny_cnn(num_classes, in_channels):
    return nn.Sequential(
        unit(in_channels, 16, 2),                                           # 16x16
        nn.Sequential(unit(16, 16, 2), unit(16, 16, 1)),                    # stage 1: 8x8
        nn.Sequential(unit(16, 32, 2), unit(32, 32, 1)),                    # stage 2: 4x4
        nn.Sequential(unit(32, 48, 2), unit(48, 48, 1)),                    # stage 3: 2x2
        nn.Sequential(unit(48, 64, 2), unit(64, 64, 1)),                    # stage 4: 1x1, pooled
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),  # classifier: "7"
    )

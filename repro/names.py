"""The architectures and datasets repro has built in: the names a plug-in may not take.

In:  nothing (declarations only).
Out: ``ARCHS``, ``DATASETS``. Kept apart from ``repro.config`` (which re-exports them) so that the
plug-in registry (``repro.plugins``), which ``repro.config`` asks about names it does not know,
needs nothing from ``repro.config`` itself.
"""

ARCHS = ("basicnet", "vgg11", "vgg16", "vgg19")
DATASETS = (
    "digits",
    "shapes_clean",
    "shapes_cluttered",
    "cifar10",
    "cifar100",
    "tinyimagenet",
    "imagenet",
)

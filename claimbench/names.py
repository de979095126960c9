"""The architectures and datasets claimbench has built in: the names a plug-in may not take.

In:  nothing (declarations only).
Out: ``ARCHS``, ``DATASETS``. Kept apart from ``claimbench.config`` (which re-exports them) so that the
plug-in registry (``claimbench.plugins``), which ``claimbench.config`` asks about names it does not know,
needs nothing from ``claimbench.config`` itself.
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

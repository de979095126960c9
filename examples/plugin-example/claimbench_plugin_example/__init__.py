"""An MLP with BatchNorm and scikit-learn's digits as one-channel images, as claimbench plug-ins."""

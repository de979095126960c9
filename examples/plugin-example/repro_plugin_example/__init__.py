"""An MLP with BatchNorm and scikit-learn's digits as one-channel images, as repro plug-ins."""

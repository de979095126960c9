"""What claimbench's training computes, as a version: claimbench's share of every run's cache key.

A trained run can be reused exactly as long as the training it would get today computes the same
numbers. That is a property of behaviour, not of source text, so it is stated here as a version
and pinned by a behaviour suite (``tests/golden/``): every path training can take (each
optimizer with L2 and with weight decay, each architecture family, each data family with its
augmentation, both precisions, a learning-rate phase change, checkpoint and resume, the plug-in
trainer harness) runs a few steps in float64 on one thread and is compared with committed
results. A change of what training computes fails that suite until ``TRAINING_SEMANTICS`` is
raised here (``make golden-update`` says so); a refactor, a moved function or a reworded
message passes it and keeps every user's cache.

What is not semantics: the fast path (stacked groups, fused kernels, CUDA graphs), which
``claimbench gpu-check`` proves equal to the plain path, and the code's text, whose fingerprint is
kept in each run's provenance (``claimbench cache ls`` shows runs trained by other code of the same
semantics).

No torch here: keys are computed without loading it.
"""

# Raise by one whenever training computes different numbers for some config (a changed default
# of the loop, an optimizer's epsilon, the augmentation, initialisation, the schedule). Entries
# trained under an older value are kept and listed, never served (``claimbench cache prune`` removes
# them on request).
TRAINING_SEMANTICS = 1


def training_identity(version: int = TRAINING_SEMANTICS) -> str:
    """The text a run's key holds for claimbench's training: ``semantics-<version>``."""
    return f"semantics-{version}"

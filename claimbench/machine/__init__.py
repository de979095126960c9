"""This machine, described in one place: what it has, what its device can do, what it trains on.

The modules, by job:

- ``detect``: what is here, without torch: the NVIDIA GPUs the driver lists (``nvidia-smi``
  queries), the CPU (``/proc/cpuinfo``), the memory available, and the name a measurement of this
  machine is filed under (``machine_name``);
- ``peaks``: datasheet peaks of common GPUs and the share of peak a training step is modelled to
  reach (``DevicePeak``, ``match_gpu``);
- ``target``: the device an estimate is for, this machine's or one named for planning elsewhere
  (``Target``);
- ``training``: the device this process trains on, as torch sees it (the only module here that
  loads torch, inside its function).

Nothing here imports the rest of claimbench: every stage may ask about the machine.
"""

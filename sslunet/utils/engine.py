"""The engine switches' allowed values, torch-free so the CLI can declare its flags without
loading torch (the switches themselves: :mod:`sslunet.utils.acceleration`)."""

COMPILE_MODES = ("auto", "on", "off")  # torch.compile: auto = on CUDA only, as nnU-Net v2

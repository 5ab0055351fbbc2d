"""sslunet: auto-configuring U-Net segmentation for MR with self-supervised pretraining."""

__version__ = "0.1.0"

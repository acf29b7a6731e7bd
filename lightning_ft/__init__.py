"""lightning_ft: fine-tune large language models with PyTorch Lightning."""

__version__ = "0.1.0"

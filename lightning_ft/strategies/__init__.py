"""Lightning strategies, configured from the loaded model rather than from a list of architectures."""

from lightning_ft.strategies.fsdp import DecoderLayerFSDP, decoder_layer_classes

__all__ = ["DecoderLayerFSDP", "decoder_layer_classes"]

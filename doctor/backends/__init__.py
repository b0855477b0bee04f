"""Backends produce logits for windows of token ids: PyTorch (CPU/CUDA) or ONNX Runtime."""

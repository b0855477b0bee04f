"""ONNX in one place: export, ONNX Runtime quantization variants, and the ORT backend."""

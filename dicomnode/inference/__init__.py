"""Model bundles and inference backends (nnU-Net v2, ONNX Runtime)."""

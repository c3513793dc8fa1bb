"""ONNX export, TensorRT engine build and cache, parity checks."""

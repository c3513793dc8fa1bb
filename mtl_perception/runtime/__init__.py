"""Inference backends (TensorRT / ONNX Runtime / PyTorch) and the ROS-free pipeline."""

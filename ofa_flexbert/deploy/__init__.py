"""Deployment: narrowing a subnet and writing it as a static or ONNX graph (``graphs``), and running
exports on Paddle Inference or onnxruntime (``predictor``, ``dynamic_predictor``).
"""

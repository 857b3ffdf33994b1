"""Neural networks (autoencoder, forward/inverse MLPs, guided net, mean-field CRF), ONNX export and runtime.

Kept import-light on purpose: importing ``models`` pulls in neither torch nor pybullet, so the on-robot
runtime (``models.runtime``) runs with numpy + onnxruntime + opencv alone.
"""

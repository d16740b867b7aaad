"""Importers for models trained and pruned in other frameworks.

Each one reads the framework's own file or object, converts the layouts to
sparsenet's (NCHW activations, (O, I, kh, kw) and (out, in) weights, C, H, W
flatten order) and returns a :class:`sparsenet.Model`. They are reached
through ``Model.from_torch``, ``Model.from_onnx`` and ``Model.from_keras``;
the framework packages are optional extras, imported only when called.
See docs/importing.md.
"""

"""Serving: batch inference over a video archive (``infer``) and self-contained export (``export``).

``hvt.predict`` classifies one video; ``hvt.serve.infer`` runs the same decode and the same evaluator over an
archive and writes Parquet; ``hvt.serve.export`` writes ONNX / ``torch.export`` artefacts with the class list,
input spec and the GFLOPs output.
"""

"""Files on disk: atomic writes (``atomic``), model directories (``models``), the HuggingFace import
(``hf_import``) and the results files every stage writes and reads (``outputs``).
"""

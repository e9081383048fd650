"""The closed lists of names mfn's layers and its command line share: one definition each (standard library only,
so the CLI can offer them as choices without importing the layers that act on them)."""

SERVERS = ("triton", "torchserve")
PROTOCOLS = ("http", "grpc")
DEPLOY_TARGETS = ("local", "kubernetes")
ARCHIVE_FORMATS = ("default", "no-archive", "tgz")
TENSOR_ENCODINGS = ("binary", "json")
EXPORT_FORMATS = ("onnx", "torchscript", "tflite")
QUANTIZATIONS = ("dynamic-range", "int8")

import os
import tempfile

# Tests never touch the network: the hub is off, and every model is random:tiny or a local directory.
# huggingface_hub reads these once, when it is imported: they are set here, before any test imports it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="chorus-test-hf-")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

"""dicomnode: a DICOM-native inference node for lymph-node metastasis.

Receives DICOM over C-STORE, routes T2 pelvic MRI to an nnU-Net v2 model and whole-slide
images to a two-stage ONNX model, and sends DICOM SEG + TID 1500 SR back to PACS.
Demo models are synthetic and NOT FOR CLINICAL USE.
"""

from importlib.metadata import version

from dicomnode.config import Config, load_config
from dicomnode.errors import DicomNodeError

__version__ = version("dicomnode")  # pyproject.toml is the one home of the version

__all__ = ["Config", "DicomNodeError", "__version__", "load_config"]

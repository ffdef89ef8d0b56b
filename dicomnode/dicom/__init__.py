"""DICOM helpers: header reads, volume geometry, deterministic UIDs."""

"""dicomnode."""

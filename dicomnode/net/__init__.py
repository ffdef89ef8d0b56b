"""DICOM networking: the Storage SCP, the Storage SCU and named DIMSE statuses."""

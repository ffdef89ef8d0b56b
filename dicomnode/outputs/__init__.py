"""Output objects: DICOM SEG, TID 1500 SR, previews."""

"""MONAI Deploy App SDK application: DICOM series -> a 2D segmentation bundle on every slice -> DICOM SEG.

Runs in the Deploy environment only (``python -m tools.integration_envs create deploy``): ``app`` imports the SDK and
pydicom, which the main environment lacks; ``segmenter`` needs only MONAI.
"""

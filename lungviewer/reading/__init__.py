"""The reading of a study: findings model, measurements, volumetry and Lung-RADS, exports
(DICOM SR/SEG, PDF) and their import."""

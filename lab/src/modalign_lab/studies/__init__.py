"""Named studies (grids of cycles over seeds), their archive, curves, reports and cross-study
index."""

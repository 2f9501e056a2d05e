"""Model hulls, error rows, statistics, claims, reports and the study (above compute)."""

"""Recommendations for new users and new artworks without retraining (the paper's cold-start promise)."""

"""Plugin models, one per module under ``general_recommender`` (file name = model name lower-cased)."""

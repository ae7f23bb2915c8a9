"""The one reader, CSV dialects, data sources, the split, validation rules, drift statistics."""

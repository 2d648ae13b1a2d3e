"""The HTTP edge: typed endpoint declarations, thin handlers, error translation, OpenAPI."""

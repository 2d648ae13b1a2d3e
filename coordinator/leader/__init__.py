"""Background loops that run on the elected replica only."""
